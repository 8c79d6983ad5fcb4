"""The guest kit: Debian's ppc64el kernel, busybox and guest_tests/ packed into an initramfs.

Built once and cached by content under ~/.cache/caskit/kits/<key>/. The key covers the recipe
(packages asked for, modules, every file of guest_tests/), so a warm build only hashes local
files: no network, well under a second. `refresh=True` asks apt for newer packages.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from . import cpio
from .debfetch import PrivateApt, debian_codename, unpack
from .errors import KitError
from .resources import GUEST_TESTS

KIT_FORMAT = 2
ARCH = "ppc64el"
KERNEL_META = "linux-image-powerpc64le"
BUSYBOX = "busybox-static"
# Loaded on demand with insmod in this order (Debian ships no modules.dep to the kit).
MODULES = (
    "failover", "net_failover", "virtio", "virtio_ring", "virtio_pci_modern_dev",
    "virtio_pci_legacy_dev", "virtio_pci", "virtio_net", "virtio_blk",
    # PCI hotplug on pseries: the guest configures a hot-added slot with drmgr through these.
    "rpaphp", "rpadlpar_io",
)
# Guest programs from Debian's ppc64el packages, with the libraries they load (paths inside each
# package; symlinks are kept and their targets listed too). drmgr configures hotplugged PCI slots;
# kexec is carried for workloads that replace the running kernel.
PROGRAMS = {
    "powerpc-ibm-utils": ("usr/sbin/drmgr", "usr/sbin/lsslot"),
    "librtas2": ("usr/lib/powerpc64le-linux-gnu/librtas.so.2", "usr/lib/powerpc64le-linux-gnu/librtas.so.2.0.0"),
    "libnuma1": ("usr/lib/powerpc64le-linux-gnu/libnuma.so.1", "usr/lib/powerpc64le-linux-gnu/libnuma.so.1.0.0"),
    "libc6": ("lib/powerpc64le-linux-gnu/libc.so.6", "lib/powerpc64le-linux-gnu/ld64.so.2", "lib64/ld64.so.2"),
    "kexec-tools": ("sbin/kexec",),
}
READY_MARKER = "CASKIT-READY"


def cache_root() -> Path:
    return Path(os.environ.get("CASKIT_CACHE") or Path.home() / ".cache" / "caskit")


@dataclass(frozen=True)
class Kit:
    key: str
    kernel: Path
    initrd: Path | None
    manifest: dict

    @property
    def user_supplied(self) -> bool:
        return bool(self.manifest.get("user_supplied"))


def _guest_files() -> dict[str, bytes]:
    return {str(p.relative_to(GUEST_TESTS)): p.read_bytes() for p in sorted(GUEST_TESTS.rglob("*")) if p.is_file()}


def recipe_key(guest_files: dict[str, bytes] | None = None) -> str:
    files = guest_files if guest_files is not None else _guest_files()
    h = hashlib.sha256()
    h.update(json.dumps({"format": KIT_FORMAT, "arch": ARCH, "suite": debian_codename(),
                         "packages": [KERNEL_META, BUSYBOX], "modules": MODULES,
                         "programs": PROGRAMS}, sort_keys=True).encode())
    for name, data in files.items():
        h.update(name.encode() + b"\0" + hashlib.sha256(data).digest())
    return h.hexdigest()[:16]


def _sha256(p: Path) -> str:
    h = hashlib.sha256()
    with p.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _unpacked(deb: Path, under: Path) -> Path:
    """The deb's files, unpacked once per .deb file name (which carries the version)."""
    dest = under / deb.stem
    if not (dest / ".complete").exists():
        shutil.rmtree(dest, ignore_errors=True)
        unpack(deb, dest)
        (dest / ".complete").touch()
    return dest


def user_kit(kernel: str, initrd: str | None) -> Kit:
    for p in filter(None, (kernel, initrd)):
        if not Path(p).is_file():
            raise KitError(f"user kit file not found: {p}")
    # Keyed by content: a resumed run notices another kernel behind the same path.
    key = "user-" + hashlib.sha256("".join(_sha256(Path(p)) for p in (kernel, initrd) if p).encode()).hexdigest()[:12]
    return Kit(key, Path(kernel), Path(initrd) if initrd else None, {"user_supplied": True})


def _builtin(moddir: Path | None) -> set[str]:
    """Module names built into the kernel, from its modules.builtin (paths like kernel/x/y.ko)."""
    f = moddir / "modules.builtin" if moddir else None
    if not f or not f.is_file():
        return set()
    return {Path(line.strip()).name.removesuffix(".ko").replace("-", "_") for line in f.read_text().splitlines() if line.strip()}


def load_cached(key: str | None = None) -> Kit | None:
    key = key or recipe_key()
    d = cache_root() / "kits" / key
    mf = d / "manifest.json"
    if not mf.is_file():
        return None
    manifest = json.loads(mf.read_text())
    kernel, initrd = d / manifest["kernel"], d / manifest["initrd"]
    if not (kernel.is_file() and initrd.is_file()):
        return None
    return Kit(key, kernel, initrd, manifest)


@dataclass(frozen=True)
class KernelUnderTest:
    """A kernel to boot in place of Debian's (per-patch validation): its vmlinux, its release and
    where its modules are (None: none given; what is built in is then all it has)."""

    vmlinux: Path
    release: str
    moddir: Path | None
    source: str  # what the user named (a vmlinux or a .deb), for the record


def build(refresh: bool = False, log=print, kernel: KernelUnderTest | None = None) -> Kit:
    """The kit for the current recipe: from the cache, or built (needs the package registry).
    With `kernel`, caskit's initramfs around that kernel (and its modules) instead of Debian's."""
    key = recipe_key() if kernel is None else _kernel_key(kernel)
    if not refresh and (kit := load_cached(key)):
        return kit
    root = cache_root()
    (root / "kits").mkdir(parents=True, exist_ok=True)
    with open(root / "kits" / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one builder at a time; the others then find it cached
        if not refresh and (kit := load_cached(key)):
            return kit
        return _build_locked(key, root, refresh, log, kernel)


def _kernel_key(k: KernelUnderTest) -> str:
    h = hashlib.sha256(recipe_key().encode() + b"\0" + _sha256(k.vmlinux).encode())
    if k.moddir is not None:
        for m in MODULES:
            for hit in sorted(k.moddir.rglob(f"{m}.ko*")):
                h.update(hit.name.encode() + _sha256(hit).encode())
        builtin = k.moddir / "modules.builtin"
        if builtin.is_file():
            h.update(builtin.read_bytes())
    return "k" + h.hexdigest()[:15]


def kernel_release(vmlinux: Path) -> str:
    """The release a vmlinux says it is ("Linux version 6.12.9+bpo-powerpc64le (...)")."""
    data = vmlinux.read_bytes()
    i = data.find(b"Linux version ")
    if i < 0:
        raise KitError(f"{vmlinux}: no 'Linux version' banner: not a Linux kernel image")
    return data[i + len(b"Linux version "):].split(b" ", 1)[0].decode(errors="replace")


def _build_locked(key: str, root: Path, refresh: bool, log, kernel: KernelUnderTest | None = None) -> Kit:
    t0 = time.monotonic()
    codename = debian_codename()
    apt = PrivateApt(root / "apt" / ARCH, ARCH, [codename, f"{codename}-updates", f"{codename}-security"])
    if refresh or not apt.has_lists():
        log(f"kit: apt-get update ({ARCH}, private state in {apt.root})")
        apt.update()
        for w in apt.warnings:
            log(f"kit: warning: {w}")
    meta_ver, deps = apt.candidate(KERNEL_META)
    kpkg = next((d.split()[0] for d in deps.split(",") if d.strip().startswith("linux-image-")), None)
    if not kpkg:
        raise KitError(f"{KERNEL_META} {meta_ver} depends on no linux-image package: {deps!r}")
    packages, unpacked = {}, {}
    for pkg in ((kpkg,) if kernel is None else ()) + (BUSYBOX, *PROGRAMS):
        log(f"kit: fetching {pkg}")
        deb = apt.download(pkg)
        packages[pkg] = {"version": apt.candidate(pkg)[0], "deb": deb.name, "sha256": _sha256(deb)}
        unpacked[pkg] = _unpacked(deb, root / "unpacked")
    if kernel is None:
        kroot = unpacked[kpkg]
        vmlinux = sorted((kroot / "boot").glob("vmlinux-*"))
        if not vmlinux:
            raise KitError(f"{kpkg}: no boot/vmlinux-* in the package")
        kver = vmlinux[0].name.removeprefix("vmlinux-")
        moddir: Path | None = kroot / "lib" / "modules" / kver
    else:
        vmlinux, kver, moddir = [kernel.vmlinux], kernel.release, kernel.moddir
    busybox = unpacked[BUSYBOX] / "bin" / "busybox"
    if not busybox.is_file():
        raise KitError(f"{BUSYBOX}: no bin/busybox in the package")

    entries = [cpio.directory(d) for d in ("bin", "sbin", "dev", "proc", "sys", "tmp", "etc", "root",
                                           "lib", "lib/caskit", "lib/modules", "lib/modules/caskit",
                                           "var", "var/log", "var/lock", "usr", "usr/sbin", "usr/lib")]
    prog_dirs: set[str] = set()
    for pkg, paths in PROGRAMS.items():
        for rel in paths:
            src = unpacked[pkg] / rel
            if src.is_symlink():
                entries.append(cpio.symlink(rel, os.readlink(src)))
            elif src.is_file():
                entries.append(cpio.file(rel, src.read_bytes(), executable=os.access(src, os.X_OK)))
            else:
                raise KitError(f"{pkg}: no {rel} in the package")
            prog_dirs.update(str(p) for p in Path(rel).parents if str(p) != ".")
    have = {e.path for e in entries}
    entries += [cpio.directory(d) for d in sorted(prog_dirs - have)]
    entries += [cpio.chardev("dev/console", 5, 1), cpio.chardev("dev/null", 1, 3)]
    entries.append(cpio.file("bin/busybox", busybox.read_bytes(), executable=True))
    entries.append(cpio.symlink("bin/sh", "busybox"))
    entries.append(cpio.file("etc/caskit-kit", key.encode() + b"\n"))
    dirs = set()
    for name, data in _guest_files().items():
        path = "init" if name == "init" else f"lib/caskit/{name}"
        entries.append(cpio.file(path, data, executable=data.startswith(b"#!")))
        dirs.update(str(p) for p in Path(path).parents if str(p) not in (".", "lib", "lib/caskit"))
    entries += [cpio.directory(d) for d in sorted(dirs)]
    modules_found, builtin = [], []
    for m in MODULES:
        hits = (sorted(moddir.rglob(f"{m}.ko")) + sorted(moddir.rglob(f"{m}.ko.xz"))) if moddir else []
        if hits:
            entries.append(cpio.file(f"lib/modules/caskit/{hits[0].name}", hits[0].read_bytes()))
            modules_found.append(hits[0].name)
        else:
            builtin.append(m)  # not a module in this kernel: built in, or absent
    entries.append(cpio.file("lib/modules/caskit/order", "".join(f"{m}\n" for m in modules_found).encode()))

    out = root / "kits" / f"{key}.tmp"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    shutil.copyfile(vmlinux[0], out / "vmlinux")
    (out / "initrd.gz").write_bytes(cpio.pack_gz(entries))

    manifest = {
        "key": key,
        "format": KIT_FORMAT,
        "arch": ARCH,
        "suite": codename,
        "kernel_release": kver,
        "packages": packages,
        "modules": modules_found,
        "modules_not_found": builtin,
        # Modules the kernel has built in (its modules.builtin), so a workload's need is known.
        "modules_builtin": sorted(_builtin(moddir)),
        "kernel": "vmlinux",
        "initrd": "initrd.gz",
        "files": {f: _sha256(out / f) for f in ("vmlinux", "initrd.gz")},
        "initrd_files": {e.path: hashlib.sha256(e.data).hexdigest() for e in sorted(entries, key=lambda e: e.path)
                         if e.mode & 0o170000 == 0o100000},
        "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    if kernel is not None:
        manifest["kernel_under_test"] = {"source": kernel.source, "release": kver, "sha256": _sha256(kernel.vmlinux),
                                         "modules": str(kernel.moddir) if kernel.moddir else None}
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    final = root / "kits" / key
    shutil.rmtree(final, ignore_errors=True)
    out.rename(final)
    log(f"kit: built {key} (kernel {kver}) in {time.monotonic() - t0:.1f}s")
    return load_cached(key)  # type: ignore[return-value]
