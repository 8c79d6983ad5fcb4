"""QEMU builds other than the host's own: Debian's newer QEMU from a suite such as
bookworm-backports, fetched with apt under a private state directory and unpacked with dpkg -x
into the cache. The host's dpkg is never touched; the build runs from the cache with -L at its
own firmware directory.
"""

from __future__ import annotations

import fcntl
import json
import shutil
from pathlib import Path

from .debfetch import PrivateApt, debian_codename, host_arch, unpack
from .errors import KitError
from .kit import cache_root

PACKAGES = ("qemu-system-ppc", "qemu-system-common", "qemu-system-data")


def suite_build(suite: str, log=print) -> tuple[Path, Path, str]:
    """(binary, firmware dir, version) of qemu-system-ppc64 from a Debian suite, as the suite's
    index resolves it today (refreshed when a day old: an update in the suite brings the new
    build on the next run). Unpacked once per version and SHA-256s."""
    base = cache_root() / "qemu" / suite
    base.mkdir(parents=True, exist_ok=True)
    codename = debian_codename()
    apt = PrivateApt(cache_root() / "apt" / f"{host_arch()}-{suite}", host_arch(),
                     [codename, f"{codename}-updates", f"{codename}-security", suite], default_release=suite)
    apt.ensure_index(log=log)
    resolved = apt.resolve(*PACKAGES)
    version = resolved[PACKAGES[0]].version
    if suite not in version and "bpo" not in version and suite.endswith("backports"):
        raise KitError(f"{suite} has no {PACKAGES[0]} for {host_arch()} (candidate {version})")
    want = {n: [r.version, r.sha256] for n, r in sorted(resolved.items())}
    root = base / version.replace(":", "_")
    done = root / ".complete.json"
    binary, fw = root / "usr/bin/qemu-system-ppc64", root / "usr/share/qemu"

    def ready() -> bool:
        try:
            return json.loads(done.read_text()).get("packages") == want and binary.is_file()
        except (OSError, ValueError):
            return False

    if ready():
        return binary, fw, version
    with open(base / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if ready():
            return binary, fw, version
        log(f"qemu: fetching {', '.join(PACKAGES)} {version} from {suite} (private apt state in {apt.root})")
        shutil.rmtree(root, ignore_errors=True)
        for pkg, r in resolved.items():
            unpack(apt.download(pkg, r.version), root)
        if not binary.is_file():
            raise KitError(f"{PACKAGES[0]} {version} has no usr/bin/qemu-system-ppc64")
        done.write_text(json.dumps({"version": version, "packages": want}, indent=2) + "\n")
        log(f"qemu: {suite} build {version} in {root}")
        return binary, fw, version
