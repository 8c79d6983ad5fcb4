"""The guest kit: Debian's ppc64el kernel, busybox and guest_tests/ packed into an initramfs.

Built once and cached by content under ~/.cache/caskit/kits/<key>/. The key covers the recipe
(modules, programs, every file of guest_tests/) and the exact packages the private package index
resolves today (versions and SHA-256s), so an archive update makes a new kit: a warm cache can no
longer hide it. The index is refreshed at most once a day (debfetch.INDEX_MAX_AGE_S); between
refreshes, and on a machine without network, a warm build reads local files only.
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
from .debfetch import PrivateApt, Resolved, debian_codename, sha256_file, unpacked_once
from .debian_kernel import kernel_package, plan_modules, vmlinux_in
from .errors import KitError
from .resources import GUEST_TESTS

KIT_FORMAT = 3
ARCH = "ppc64el"
BUSYBOX = "busybox-static"
# What the workloads insmod (guest_tests/bin/ck-modules); the order, and any module these need,
# come from the kernel's own .modinfo at build time (debian_kernel.plan_modules).
MODULES = (
    "virtio_pci", "virtio_net", "virtio_blk",
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


def recipe_key(packages: dict[str, Resolved], guest_files: dict[str, bytes] | None = None,
               modules: tuple[str, ...] = MODULES) -> str:
    """The kit's cache key (pure): the recipe and the exact packages it is built from."""
    files = guest_files if guest_files is not None else _guest_files()
    h = hashlib.sha256()
    h.update(json.dumps({"format": KIT_FORMAT, "arch": ARCH, "suite": debian_codename(),
                         "packages": {n: [r.version, r.sha256] for n, r in sorted(packages.items())},
                         "modules": modules, "programs": PROGRAMS}, sort_keys=True).encode())
    for name, data in files.items():
        h.update(name.encode() + b"\0" + hashlib.sha256(data).digest())
    return h.hexdigest()[:16]


def private_apt() -> PrivateApt:
    """The ppc64el package index the kit and the L1 images resolve from (one state, shared)."""
    codename = debian_codename()
    return PrivateApt(cache_root() / "apt" / ARCH, ARCH, [codename, f"{codename}-updates", f"{codename}-security"])


def resolve_packages(apt: PrivateApt, log=print, with_kernel: bool = True, refresh: bool = False) -> dict[str, Resolved]:
    """The packages the kit is built from, as the index resolves them now (refreshed when older
    than a day, or `refresh`)."""
    apt.ensure_index(force=refresh, log=log)
    out = {k.name: k for k in ([kernel_package(apt)] if with_kernel else [])}
    out.update(apt.resolve(BUSYBOX, *PROGRAMS))
    return out


def current_key(log=print) -> str:
    """The key of the kit `build()` would return now."""
    return recipe_key(resolve_packages(private_apt(), log))


def user_kit(kernel: str, initrd: str | None) -> Kit:
    for p in filter(None, (kernel, initrd)):
        if not Path(p).is_file():
            raise KitError(f"user kit file not found: {p}")
    # Keyed by content: a resumed run notices another kernel behind the same path.
    key = "user-" + hashlib.sha256("".join(sha256_file(Path(p)) for p in (kernel, initrd) if p).encode()).hexdigest()[:12]
    return Kit(key, Path(kernel), Path(initrd) if initrd else None, {"user_supplied": True})


def load_cached(key: str) -> Kit | None:
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


def build(refresh: bool = False, log=print, kernel: KernelUnderTest | None = None,
          modules: tuple[str, ...] = MODULES) -> Kit:
    """The kit for today's packages: from the cache, or built (needs the package registry).
    With `kernel`, caskit's initramfs around that kernel (and its modules) instead of Debian's.
    `refresh` refreshes the package index now rather than when it is a day old."""
    apt = private_apt()
    packages = resolve_packages(apt, log, with_kernel=kernel is None, refresh=refresh)
    key = recipe_key(packages, modules=modules) if kernel is None else _kernel_key(kernel, packages, modules)
    if kit := load_cached(key):
        return kit
    root = cache_root()
    (root / "kits").mkdir(parents=True, exist_ok=True)
    with open(root / "kits" / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one builder at a time; the others then find it cached
        if kit := load_cached(key):
            return kit
        return _build_locked(key, root, apt, packages, log, kernel, modules)


def _kernel_key(k: KernelUnderTest, packages: dict[str, Resolved], modules: tuple[str, ...]) -> str:
    h = hashlib.sha256(recipe_key(packages, modules=modules).encode() + b"\0" + sha256_file(k.vmlinux).encode())
    if k.moddir is not None:
        for m in plan_modules(k.moddir, modules, k.release).load:
            h.update(m.path.name.encode() + sha256_file(m.path).encode())
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


def _build_locked(key: str, root: Path, apt: PrivateApt, packages: dict[str, Resolved], log,
                  kernel: KernelUnderTest | None, modules: tuple[str, ...]) -> Kit:
    t0 = time.monotonic()
    unpacked, record = {}, {}
    for pkg, r in packages.items():
        log(f"kit: fetching {pkg} {r.version}")
        deb = apt.download(pkg, r.version)
        digest = sha256_file(deb)
        if r.sha256 and digest != r.sha256:
            raise KitError(f"{deb}: SHA-256 {digest} is not the index's {r.sha256} (a partial or stale download?)")
        record[pkg] = {"version": r.version, "deb": deb.name, "sha256": digest}
        unpacked[pkg] = unpacked_once(deb, root / "unpacked")
    if kernel is None:
        kpkg = next(p for p in packages if p.startswith("linux-image-"))
        vmlinux, kver, moddir = vmlinux_in(unpacked[kpkg], kpkg)
    else:
        vmlinux, kver, moddir = kernel.vmlinux, kernel.release, kernel.moddir
    # Checked before anything is written: a kit whose modules cannot load is never cached.
    plan = plan_modules(moddir, modules, kver)
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
    for m in plan.load:
        entries.append(cpio.file(f"lib/modules/caskit/{m.file_name}", m.data))
    entries.append(cpio.file("lib/modules/caskit/order", "".join(f"{m.file_name}\n" for m in plan.load).encode()))

    out = root / "kits" / f"{key}.tmp"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    shutil.copyfile(vmlinux, out / "vmlinux")
    (out / "initrd.gz").write_bytes(cpio.pack_gz(entries))

    manifest = {
        "key": key,
        "format": KIT_FORMAT,
        "arch": ARCH,
        "suite": debian_codename(),
        "kernel_release": kver,
        "kernel_package": _kernel_package_record(packages, kernel),
        "packages": record,
        # What ck-modules loads, in this order (dependencies first, from each module's .modinfo).
        "modules": [m.file_name for m in plan.load],
        "modules_not_found": list(plan.builtin + plan.absent),
        # Modules the kernel has built in (its modules.builtin), so a workload's need is known.
        "modules_builtin": sorted(plan.all_builtin),
        "kernel": "vmlinux",
        "initrd": "initrd.gz",
        "files": {f: sha256_file(out / f) for f in ("vmlinux", "initrd.gz")},
        "initrd_files": {e.path: hashlib.sha256(e.data).hexdigest() for e in sorted(entries, key=lambda e: e.path)
                         if e.mode & 0o170000 == 0o100000},
        "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    if kernel is not None:
        manifest["kernel_under_test"] = {"source": kernel.source, "release": kver, "sha256": sha256_file(kernel.vmlinux),
                                         "modules": str(kernel.moddir) if kernel.moddir else None}
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    final = root / "kits" / key
    shutil.rmtree(final, ignore_errors=True)
    out.rename(final)
    log(f"kit: built {key} (kernel {kver}, {manifest['kernel_package']}) in {time.monotonic() - t0:.1f}s")
    return load_cached(key)  # type: ignore[return-value]


def _kernel_package_record(packages: dict[str, Resolved], kernel: KernelUnderTest | None) -> str:
    """The kernel a run used, as a farm reads it: the Debian package and version, or the user's file."""
    if kernel is not None:
        return f"{kernel.source} ({kernel.release})"
    r = next(r for p, r in packages.items() if p.startswith("linux-image-"))
    return f"{r.name} {r.version}"


def describe(manifest: dict) -> str:
    """One line naming a kit's kernel for logs and reports."""
    if manifest.get("user_supplied"):
        return "a user-supplied kernel"
    return manifest.get("kernel_package") or f"kernel {manifest.get('kernel_release', '?')}"
