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
    """(binary, firmware dir, version) of qemu-system-ppc64 from a Debian suite; cached."""
    base = cache_root() / "qemu" / suite
    base.mkdir(parents=True, exist_ok=True)
    current = base / "current.json"
    if current.is_file():
        info = json.loads(current.read_text())
        binary, fw = Path(info["binary"]), Path(info["firmware_dir"])
        if binary.is_file() and fw.is_dir():
            return binary, fw, info["version"]
    with open(base / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if current.is_file():
            info = json.loads(current.read_text())
            if Path(info["binary"]).is_file():
                return Path(info["binary"]), Path(info["firmware_dir"]), info["version"]
        codename = debian_codename()
        apt = PrivateApt(cache_root() / "apt" / f"{host_arch()}-{suite}", host_arch(),
                         [codename, f"{codename}-updates", f"{codename}-security", suite], default_release=suite)
        log(f"qemu: fetching {', '.join(PACKAGES)} from {suite} (private apt state in {apt.root})")
        apt.update()
        version = apt.candidate(PACKAGES[0])[0]
        if suite not in version and "bpo" not in version and suite.endswith("backports"):
            raise KitError(f"{suite} has no {PACKAGES[0]} for {host_arch()} (candidate {version})")
        root = base / version.replace(":", "_")
        shutil.rmtree(root, ignore_errors=True)
        for pkg in PACKAGES:
            unpack(apt.download(pkg), root)
        binary, fw = root / "usr/bin/qemu-system-ppc64", root / "usr/share/qemu"
        if not binary.is_file():
            raise KitError(f"{PACKAGES[0]} {version} has no usr/bin/qemu-system-ppc64")
        current.write_text(json.dumps({"binary": str(binary), "firmware_dir": str(fw), "version": version,
                                       "packages": list(PACKAGES)}, indent=2) + "\n")
        log(f"qemu: {suite} build {version} in {root}")
        return binary, fw, version
