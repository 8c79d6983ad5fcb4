#!/usr/bin/env bash
# Sets up a fresh Debian 12 machine for caskit: Debian packages (only those missing), a
# virtualenv in .venv, and the project installed into it. Idempotent: a second run only checks.
# --suite: also what the test suite needs once per machine, which the main job does not: the PR
# KVM host's L1 kernel, built from Debian's source, and the nested-papr hosts' L0 QEMU, built from
# Debian's QEMU source with caskit's patch (minutes each on 2 cores, with progress; cached by
# content, so a second run only checks).
set -euo pipefail
cd "$(dirname "$0")/.."
suite=0
for arg in "$@"; do
  case "$arg" in
    --suite) suite=1 ;;
    *) echo "bootstrap: unknown argument $arg (allowed: --suite)" >&2; exit 2 ;;
  esac
done

# make .. libssl-dev: building the PR KVM host's L1 kernel from Debian's linux-source (`--suite`).
# gcc .. zlib1g-dev: building the nested-papr hosts' L0 QEMU (`--suite`; meson comes from PyPI,
# the `l0` extra below: bookworm's 1.0 is older than QEMU 10 needs).
debs=(qemu-system-ppc qemu-utils cpio xz-utils zstd dpkg-dev iproute2 openssh-server openssh-client gcc-powerpc64le-linux-gnu libc6-dev-ppc64el-cross postgresql chromium make bc flex bison libelf-dev libssl-dev
      gcc ninja-build pkg-config patch libglib2.0-dev libslirp-dev libfdt-dev libpixman-1-dev zlib1g-dev)
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
  .venv/bin/pip install -q -e '.[test,l0]'  # with the test suite's extras (hypothesis) and meson
  echo "$want" > "$stamp"
fi

if ((suite)); then
  echo "bootstrap: the pr emulated host's image (its L1 kernel is built once from Debian's linux-source)"
  .venv/bin/caskit hosts build pr > /dev/null
  echo "bootstrap: the nested-papr emulated hosts' image and L0 QEMU (built once from Debian's QEMU source, patched)"
  .venv/bin/caskit hosts build nested-papr > /dev/null
fi
