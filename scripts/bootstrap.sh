#!/usr/bin/env bash
# Sets up a fresh Debian 12 machine for caskit: Debian packages (only those missing), a
# virtualenv in .venv, and the project installed into it. Idempotent: a second run only checks.
set -euo pipefail
cd "$(dirname "$0")/.."

debs=(qemu-system-ppc qemu-utils cpio xz-utils zstd dpkg-dev iproute2 openssh-server openssh-client gcc-powerpc64le-linux-gnu libc6-dev-ppc64el-cross postgresql chromium)
missing=()
for p in "${debs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "bootstrap: installing Debian packages: ${missing[*]}"
  sudo_=""; [ "$(id -u)" = 0 ] || sudo_=sudo
  $sudo_ apt-get update -q
  DEBIAN_FRONTEND=noninteractive $sudo_ apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

py=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "bootstrap: creating .venv"
  "$py" -m venv .venv
fi
# Reinstall only when the project's metadata changed since the last install.
stamp=.venv/.caskit-installed
want=$(sha256sum pyproject.toml | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "bootstrap: installing caskit into .venv"
  .venv/bin/pip install -q --upgrade pip
  .venv/bin/pip install -q -e '.[test]'  # with the test suite's extras (hypothesis)
  echo "$want" > "$stamp"
fi
