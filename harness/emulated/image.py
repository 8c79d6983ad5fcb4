"""The boot image of caskit's emulated POWER9 KVM hosts ("L1" machines): a kernel and an initramfs.

An emulated host is a ppc64 Linux guest that runs QEMU and KVM (Kernel-based Virtual Machine)
for guests of its own ("L2"), and that caskit reaches over SSH like any remote host. Its root
filesystem is an initramfs made here from Debian's ppc64el packages:

- Debian's kernel (the candidate of the same `linux-image-powerpc64le` as the guest kit, or of
  another suite's, e.g. bookworm-backports' 6.12 for nested API v2; a parameter of the recipe) with the
  modules for KVM HV (the hypervisor mode of KVM: `kvm`, `kvm-hv`) and the virtio NIC, in
  dependency order read from each module's own `.modinfo` (Debian ships no modules.dep to us);
- QEMU (`qemu-system-ppc64`), OpenSSH's server, python3 (the fallback socket
  bridge), util-linux's `flock` (slot leases) and busybox (`sh` and the coreutils caskit uses);
- `kvmcaps`, a static probe of KVM's capabilities (l1/kvmcaps.c), cross-compiled here;
- l1/rootfs/: `/init`, the sshd configuration, the users.

Packages are resolved by apt itself (their dependency closure) under caskit's private apt state,
downloaded once and unpacked with `dpkg -x`: the host's dpkg is never touched. From the unpacked
closure the image takes only the files it names and the shared libraries those programs need
(read from their ELF headers), so maintainer-script dependencies (perl, debconf, ...) stay out
and the archive stays small (91 MB of files, 26.5 MB compressed; cas-rules section 8 found that
a PowerNV L1 needs a small, zstd-compressed initramfs).

Built once per recipe and cached under ~/.cache/caskit/l1/images/<key>/, like the guest kit:
the key covers what is asked for and every file under l1/, so a warm build hashes a few small
files and needs no network. Per-host secrets never enter the cached image: `host_initrd`
puts a small uncompressed archive with the host key, the controller's public key and the
host's name before it (Linux unpacks concatenated archives in order).
"""

from __future__ import annotations

import fcntl
import fnmatch
import hashlib
import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from .. import cpio
from ..debfetch import PrivateApt, Resolved, debian_codename, sha256_file, unpacked_once
from ..debian_kernel import kernel_package, plan_modules, vmlinux_in
from ..elf import elf_info
from ..errors import KitError
from ..kit import cache_root
from ..resources import ROOT
from . import kernel_build as kernel_builds

IMAGE_FORMAT = 1
ARCH = "ppc64el"
TRIPLET = "powerpc64le-linux-gnu"
L1_DIR = ROOT / "l1"
CROSS_CC = f"{TRIPLET}-gcc"

# What apt resolves the closure of. util-linux and busybox are Essential-class packages nobody
# declares a dependency on, so they are asked for by name.
ROOTS = ("qemu-system-ppc", "openssh-server", "python3-minimal", "util-linux", "busybox-static")

# What the image takes from each package of the closure (package and path patterns, fnmatch;
# `**` spans directories). ELF programs and libraries among them bring the shared libraries they
# need from the rest of the closure.
TAKE: dict[str, tuple[str, ...]] = {
    "qemu-system-ppc": ("usr/bin/qemu-system-ppc64",),
    # Firmware a pseries L2 boots with (SLOF, or VOF, the Virtual Open Firmware); the NICs
    # caskit gives guests carry `romfile=`, so no option ROM is needed.
    "qemu-system-data": ("usr/share/qemu/slof.bin", "usr/share/qemu/vof.bin"),
    "openssh-server": ("usr/sbin/sshd",),
    "util-linux": ("usr/bin/flock",),
    "python3.*-minimal": ("usr/bin/python3.*",),
    "python3-minimal": ("usr/bin/python3",),
    "libpython3.*-minimal": ("usr/lib/python3.*/**",),
    "busybox-static": ("bin/busybox",),
}

# Kernel modules to load at boot, with whatever they depend on (resolved at build time).
MODULES = ("kvm_hv", "virtio_pci", "virtio_net")

# zstd: Debian's kernel unpacks it (CONFIG_RD_ZSTD) and it is small. Measured on the image's
# 91 MB of files: level 3 29.4 MB in 0.3 s, 9 26.5 MB in 1.1 s, 15 26.1 MB in 8.6 s, 19 23.2 MB
# in 46 s (gzip -6: 29.3 MB in 6 s). 9: most of the gain for about a second of a cold build.
ZSTD_LEVEL = 9

MERGED = ("bin", "sbin", "lib", "lib64")  # Debian's merged /usr: these are links into usr/
LIB_DIRS = (f"usr/lib/{TRIPLET}", f"lib/{TRIPLET}", "usr/lib", "lib", "usr/lib64", "lib64")

READY_MARKER = "CASKIT-L1-READY"


@dataclass(frozen=True)
class Image:
    key: str
    kernel: Path
    initrd: Path  # the shared part; per-host secrets are prepended by host_initrd()
    manifest: dict


def cache_dir() -> Path:
    return cache_root() / "l1"


# -- the recipe ---------------------------------------------------------------------------------

def _l1_files() -> dict[str, bytes]:
    if not L1_DIR.is_dir():
        raise KitError(f"{L1_DIR} is missing: the L1 image's own files (init, kvmcaps.c) are not installed")
    # l1/kernels/ holds the recipes of kernels caskit builds: their build's own key covers them.
    return {rel: p.read_bytes() for p in sorted(L1_DIR.rglob("*"))
            if p.is_file() and not (rel := str(p.relative_to(L1_DIR))).startswith("kernels/")}


def recipe_key(packages: dict[str, Resolved], files: dict[str, bytes] | None = None,
               kernel_suite: str | None = None, kernel_key: str | None = None) -> str:
    """The image's cache key (pure): the recipe, every file under l1/, and the exact packages of
    the closure (versions and SHA-256s), so an archive update makes a new image."""
    files = files if files is not None else _l1_files()
    h = hashlib.sha256()
    recipe = {"kernel_suite": kernel_suite} if kernel_suite else {}  # the default keeps its old keys
    if kernel_key:  # a kernel caskit built (kernel_build.py): its key covers source, config, compiler
        recipe["kernel_build"] = kernel_key
    h.update(json.dumps({**recipe, "format": IMAGE_FORMAT, "arch": ARCH, "suite": debian_codename(),
                         "packages": {n: [r.version, r.sha256] for n, r in sorted(packages.items())},
                         "roots": ROOTS, "take": TAKE, "modules": MODULES, "zstd": ZSTD_LEVEL},
                        sort_keys=True).encode())
    for name, data in files.items():
        h.update(name.encode() + b"\0" + hashlib.sha256(data).digest())
    return h.hexdigest()[:16]


def load_cached(key: str) -> Image | None:
    d = cache_dir() / "images" / key
    try:
        manifest = json.loads((d / "manifest.json").read_text())
    except (OSError, ValueError):
        return None
    kernel, initrd = d / manifest["kernel"], d / manifest["initrd"]
    if not (kernel.is_file() and initrd.is_file()):
        return None
    return Image(key, kernel, initrd, manifest)


def _apt() -> "ClosureApt":
    # The guest kit's apt state: the same index gives the same kernel as the kit.
    codename = debian_codename()
    return ClosureApt(cache_root() / "apt" / ARCH, ARCH, [codename, f"{codename}-updates", f"{codename}-security"])


def _kernel_apt(suite: str | None) -> "ClosureApt | None":
    """The apt state the kernel comes from when it is another suite's than the closure's: that
    suite alone (the kernel package and its meta package are both in it), preferred."""
    if suite is None:
        return None
    return ClosureApt(cache_root() / "apt" / f"{ARCH}-{suite}", ARCH, [suite], default_release=suite)


def resolve_packages(apt: "ClosureApt", log=print, refresh: bool = False,
                     kernel_suite: str | None = None, with_kernel: bool = True) -> dict[str, Resolved]:
    """The closure's packages and the kernel, as the index (refreshed when a day old) resolves them.
    `with_kernel=False`: the image boots a kernel caskit builds, not a Debian package."""
    apt.ensure_index(force=refresh, log=log)
    pkgs = apt.closure(ROOTS)
    if not with_kernel:
        return pkgs
    kapt = _kernel_apt(kernel_suite)
    if kapt is not None:
        kapt.ensure_index(force=refresh, log=log)
    k = kernel_package(kapt or apt)
    if kernel_suite and kernel_suite.endswith("backports") and "bpo" not in k.version:
        raise KitError(f"{kernel_suite} has no {ARCH} kernel (the candidate is {k.name} {k.version})")
    pkgs[k.name] = k
    return pkgs


def current_key(log=print, kernel_suite: str | None = None, kernel_build: str | None = None) -> str:
    """The key of the image `build()` would return now (an L1 booted from another is stale)."""
    apt = _apt()
    packages = resolve_packages(apt, log, kernel_suite=kernel_suite, with_kernel=kernel_build is None)
    kkey = kernel_builds.current_key(apt, kernel_build) if kernel_build else None
    return recipe_key(packages, kernel_suite=kernel_suite, kernel_key=kkey)


def build(refresh: bool = False, log=print, kernel_suite: str | None = None,
          kernel_build: str | None = None) -> Image:
    """The image for today's packages: from the cache, or built (needs the package registry;
    `refresh` refreshes the package index now rather than when it is a day old). `kernel_suite`:
    the Debian suite whose kernel the image boots; None, the guest kit's. `kernel_build`: boot
    the kernel of that recipe under l1/kernels/ instead, built from Debian's source (minutes,
    once per recipe key)."""
    apt = _apt()
    packages = resolve_packages(apt, log, refresh, kernel_suite, with_kernel=kernel_build is None)
    kernel = kernel_builds.build(apt, kernel_build, log) if kernel_build else None
    key = recipe_key(packages, kernel_suite=kernel_suite, kernel_key=kernel.key if kernel else None)
    if img := load_cached(key):
        return img
    (cache_dir() / "images").mkdir(parents=True, exist_ok=True)
    with open(cache_dir() / "images" / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one builder at a time; the others then find it cached
        if img := load_cached(key):
            return img
        return _build_locked(key, apt, packages, log, kernel_suite, kernel)


# -- the package closure ------------------------------------------------------------------------

class ClosureApt(PrivateApt):
    """PrivateApt that also resolves and fetches a whole dependency closure in one go each."""

    def closure(self, roots: tuple[str, ...]) -> dict[str, Resolved]:
        """Everything `roots` need (no recommends), as apt resolves it for a system with nothing
        installed (the private state's status file is empty), with each .deb's SHA-256."""
        out = self.query(["apt-get", "install", "--print-uris", "-qq", "--no-install-recommends",
                         "-o", "APT::Install-Suggests=0", *roots])
        pkgs: dict[str, Resolved] = {}
        for line in out.splitlines():
            parts = line.split()
            if len(parts) >= 2 and parts[0].startswith("'"):  # 'URI' name_version_arch.deb size SHA256:hash
                name, ver, _ = parts[1].rsplit(".deb", 1)[0].split("_")
                digest = next((p.split(":", 1)[1] for p in parts[3:] if p.upper().startswith("SHA256:")), "")
                pkgs[name] = Resolved(name, ver.replace("%3a", ":"), digest)
        if not pkgs:
            raise KitError(f"apt resolved no packages for {', '.join(roots)}: {out[-500:]!r}")
        return pkgs

    def fetch_all(self, pkgs: dict[str, Resolved]) -> dict[str, Path]:
        """Each package's .deb at the resolved version, downloaded once (one apt-get for all)."""
        debs = self.root / "debs"
        debs.mkdir(parents=True, exist_ok=True)

        def found(name: str, ver: str) -> Path | None:
            hits = sorted(debs.glob(f"{name}_{ver.replace(':', '%3a')}_*.deb"))
            return hits[0] if hits else None

        missing = [r.pin() for n, r in pkgs.items() if found(n, r.version) is None]
        if missing:
            self._run(["apt-get", "download", *missing], cwd=debs)
        out = {}
        for n, r in pkgs.items():
            p = found(n, r.version)
            if p is None:
                raise KitError(f"apt-get download {r.pin()} left no .deb in {debs}")
            out[n] = p
        return out


# -- composing the file tree --------------------------------------------------------------------

def merged(rel: str) -> str:
    """Where a package path lives in a merged-/usr tree (bin/x -> usr/bin/x)."""
    top, _, rest = rel.partition("/")
    return f"usr/{rel}" if top in MERGED and rest else rel


def _match(rel: str, pattern: str) -> bool:
    if pattern.endswith("/**"):
        return rel.startswith(pattern[:-3].rstrip("*")) and fnmatch.fnmatch(rel, pattern[:-3] + "/*")
    return fnmatch.fnmatch(rel, pattern) and rel.count("/") == pattern.count("/")


@dataclass
class Tree:
    """The image's files by path, as cpio entries, and where each came from."""

    entries: dict[str, cpio.Entry] = field(default_factory=dict)
    origin: dict[str, str] = field(default_factory=dict)

    def add(self, e: cpio.Entry, origin: str) -> None:
        self.entries[e.path] = e
        self.origin[e.path] = origin

    def with_parents(self) -> list[cpio.Entry]:
        dirs = {str(p) for path in self.entries for p in Path(path).parents if str(p) != "."}
        out = dict(self.entries)
        for d in dirs:
            out.setdefault(d, cpio.directory(d))
        return list(out.values())


class LibIndex:
    """Shared libraries of the unpacked closure by file name, in search-path order."""

    def __init__(self, roots: dict[str, Path]):
        self.by_name: dict[str, tuple[str, Path, str]] = {}
        for pkg, root in roots.items():
            for d in LIB_DIRS:
                base = root / d
                if base.is_dir():
                    for f in sorted(base.iterdir()):
                        if not f.is_dir() or f.is_symlink():
                            self.by_name.setdefault(f.name, (pkg, root, f"{d}/{f.name}"))


def _add_path(tree: Tree, pkg: str, root: Path, rel: str, libs: LibIndex, todo: list[tuple[str, Path, str]]) -> None:
    """One package file into the tree (a symlink with its target), queueing ELF files for their needs."""
    src = root / rel
    dest = merged(rel)
    if dest in tree.entries:
        return
    if src.is_symlink():
        target = os.readlink(src)
        tree.add(cpio.symlink(dest, target), pkg)
        if target.startswith("/"):
            t = target.lstrip("/")
            tpkg, troot, trel = (pkg, root, t) if (root / t).exists() else libs.by_name.get(Path(t).name, (None, None, None))
            if tpkg is None:
                raise KitError(f"{pkg}: {rel} points to {target}, which no package of the closure has")
            _add_path(tree, tpkg, troot, trel, libs, todo)
        else:
            _add_path(tree, pkg, root, os.path.normpath(str(Path(rel).parent / target)), libs, todo)
        return
    if not src.is_file():
        raise KitError(f"{pkg}: no {rel} in the package")
    data = src.read_bytes()
    tree.add(cpio.Entry(dest, stat.S_IFREG | (src.stat().st_mode & 0o777), data), pkg)
    if data[:4] == b"\x7fELF":
        todo.append((pkg, src, dest))


def compose(roots: dict[str, Path], take: dict[str, tuple[str, ...]] = TAKE) -> Tree:
    """The files `take` names from the unpacked packages, plus every shared library they need,
    transitively (DT_NEEDED and the program interpreter). A library no package has is an error
    here, at build time, rather than a program that cannot start inside a TCG guest."""
    libs = LibIndex(roots)
    tree = Tree()
    todo: list[tuple[str, Path, str]] = []
    for pkg_pat, patterns in take.items():
        pkgs = [p for p in roots if fnmatch.fnmatch(p, pkg_pat)]
        if not pkgs:
            raise KitError(f"no package of the closure matches {pkg_pat!r}")
        for pkg in pkgs:
            root = roots[pkg]
            rels = sorted(str(p.relative_to(root)) for p in root.rglob("*") if not p.is_dir() or p.is_symlink())
            for pat in patterns:
                hits = [r for r in rels if _match(r, pat)]
                if not hits:
                    raise KitError(f"{pkg}: nothing matches {pat!r}")
                for r in hits:
                    _add_path(tree, pkg, root, r, libs, todo)
    seen: set[Path] = set()
    while todo:
        pkg, src, dest = todo.pop()
        if src in seen:
            continue
        seen.add(src)
        info = elf_info(tree.entries[dest].data)
        assert info is not None
        wants = list(info.needed) + ([info.interpreter] if info.interpreter else [])
        for lib in wants:
            name = Path(lib).name
            hit = libs.by_name.get(name)
            if hit is None:
                raise KitError(f"{dest} (from {pkg}) needs {lib}, which no package of the closure has")
            _add_path(tree, *hit, libs, todo)
            if lib.startswith("/") and merged(lib.lstrip("/")) not in tree.entries:
                # The interpreter is found by its absolute path (/lib64/ld64.so.2): put it there.
                tree.add(cpio.symlink(merged(lib.lstrip("/")), "/" + merged(hit[2])), hit[0])
    return tree


# -- the build ----------------------------------------------------------------------------------

def _kvmcaps(src: bytes, log) -> bytes:
    """l1/kvmcaps.c cross-compiled statically, cached by source and compiler."""
    cc = shutil.which(CROSS_CC)
    if not cc:
        raise KitError(f"{CROSS_CC} not found: install Debian's gcc-powerpc64le-linux-gnu and "
                       f"libc6-dev-ppc64el-cross (scripts/bootstrap.sh does)")
    version = subprocess.run([cc, "--version"], capture_output=True, text=True).stdout.splitlines()[:1]
    key = hashlib.sha256(src + json.dumps(version).encode()).hexdigest()[:16]
    out = cache_dir() / "kvmcaps" / key
    if not out.is_file():
        out.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix="ck-kvmcaps-") as tmp:
            c = Path(tmp) / "kvmcaps.c"
            c.write_bytes(src)
            p = subprocess.run([cc, "-static", "-s", "-O2", "-Wall", "-Werror", "-o", str(Path(tmp) / "kvmcaps"), str(c)],
                               capture_output=True, text=True)
            if p.returncode != 0:
                raise KitError(f"compiling l1/kvmcaps.c failed: {p.stderr.strip()[-1500:]}")
            shutil.copyfile(Path(tmp) / "kvmcaps", str(out) + ".part")
            os.replace(str(out) + ".part", out)
        log(f"l1: compiled kvmcaps ({out.stat().st_size} bytes)")
    return out.read_bytes()


def _pyc(tree: Tree, log) -> str:
    """Bytecode for the image's python stdlib, compiled here. Every process in an L1 runs under
    TCG, where compiling the modules caskit's bridge imports costs about a second per start until
    a __pycache__ exists; `unchecked-hash` pycs stay valid although cpio gives every source mtime 0.
    Only when this python has the image's version (bytecode differs between versions)."""
    ver = f"{sys.version_info[0]}.{sys.version_info[1]}"
    prefix = f"usr/lib/python{ver}/"
    sources = {p: e.data for p, e in tree.entries.items() if p.startswith(prefix) and p.endswith(".py")}
    if not sources:
        have = sorted({p.split("/")[2] for p in tree.entries if p.startswith("usr/lib/python3.")})
        return f"skipped: this python is {ver}, the image has {', '.join(have) or 'none'}"
    with tempfile.TemporaryDirectory(prefix="ck-pyc-") as tmp:
        for rel, data in sources.items():
            f = Path(tmp) / rel
            f.parent.mkdir(parents=True, exist_ok=True)
            f.write_bytes(data)
        p = subprocess.run([sys.executable, "-m", "compileall", "-q", "-j", "0", "--invalidation-mode",
                            "unchecked-hash", "-s", tmp, "-p", "/", str(Path(tmp) / prefix)],
                           capture_output=True, text=True)
        if p.returncode not in (0, 1):  # 1: some file did not compile (the stdlib's test stubs)
            raise KitError(f"compileall failed: {p.stderr.strip()[-800:]}")
        n = 0
        for f in sorted(Path(tmp).rglob("*.pyc")):
            rel = str(f.relative_to(tmp))
            tree.add(cpio.file(rel, f.read_bytes()), "compileall")
            n += 1
    log(f"l1: compiled {n} python modules")
    return f"{n} modules (python {ver}, unchecked-hash)"


def _zstd(data: bytes) -> bytes:
    p = subprocess.run(["zstd", "-q", f"-{ZSTD_LEVEL}", "-T0", "-c"], input=data, capture_output=True)
    if p.returncode != 0:
        raise KitError(f"zstd failed: {p.stderr.decode(errors='replace').strip()}")
    return p.stdout


def _build_locked(key: str, apt: "ClosureApt", pkgs: dict[str, Resolved], log,
                  kernel_suite: str | None = None, kernel: "kernel_builds.BuiltKernel | None" = None) -> Image:
    t0 = time.monotonic()
    root = cache_root()
    kpkg = next((n for n in pkgs if n.startswith("linux-image-")), None)
    if kernel is not None:
        log(f"l1: {len(pkgs)} packages in the closure of {', '.join(ROOTS)}, and caskit's {kernel.name} kernel "
            f"{kernel.release} ({kernel.key})")
    else:
        assert kpkg is not None
        log(f"l1: {len(pkgs)} packages in the closure of {', '.join(ROOTS)} and {kpkg} {pkgs[kpkg].version}"
            + (f" from {kernel_suite}" if kernel_suite else ""))
    (root / "kits").mkdir(parents=True, exist_ok=True)
    kapt = _kernel_apt(kernel_suite)
    with open(root / "kits" / ".lock", "w") as kit_lock:
        # The kit's own lock: its builder and this one share the private .deb directory.
        fcntl.flock(kit_lock, fcntl.LOCK_EX)
        t_resolve = time.monotonic()
        if kapt is None or kpkg is None:
            debs = apt.fetch_all(pkgs)
        else:
            debs = {**apt.fetch_all({n: r for n, r in pkgs.items() if n != kpkg}),
                    **kapt.fetch_all({kpkg: pkgs[kpkg]})}
    for n, deb in debs.items():
        if pkgs[n].sha256 and sha256_file(deb) != pkgs[n].sha256:
            raise KitError(f"{deb}: SHA-256 is not the index's {pkgs[n].sha256} (a partial or stale download?)")
    t_fetch = time.monotonic()
    with ThreadPoolExecutor(4) as pool:  # dpkg -x is one process per package; they overlap well
        unpacked = dict(zip(debs, pool.map(lambda d: unpacked_once(d, root / "unpacked"), debs.values())))
    t_unpack = time.monotonic()

    if kernel is not None:  # everything built in: nothing to load
        vmlinux, kver, plan = kernel.vmlinux, kernel.release, None
    else:
        assert kpkg is not None
        kroot = unpacked.pop(kpkg)
        vmlinux, kver, moddir = vmlinux_in(kroot, kpkg)
        plan = plan_modules(moddir, MODULES, kver)
        if plan.absent:  # built in is as good: there is nothing to load
            raise KitError(f"{kpkg} has no module {', '.join(plan.absent)}, neither as a file nor built in")
    loads = plan.load if plan is not None else ()

    tree = compose(unpacked)
    files = _l1_files()
    for rel, data in files.items():
        if rel.startswith("rootfs/"):
            tree.add(cpio.file(rel.removeprefix("rootfs/"), data, executable=data.startswith(b"#!")), "l1")
    tree.add(cpio.file("usr/bin/kvmcaps", _kvmcaps(files["kvmcaps.c"], log), executable=True), "l1")
    tree.add(cpio.file("etc/caskit-l1/image", key.encode() + b"\n"), "l1")
    tree.add(cpio.file("etc/hostname", b"caskit-l1\n"), "l1")
    pyc = _pyc(tree, log)

    for m in loads:  # /init reads them at /lib/modules/caskit-l1 (lib is a link to usr/lib)
        tree.add(cpio.file(f"usr/lib/modules/caskit-l1/{m.file_name}", m.data), kpkg)
    tree.add(cpio.file("usr/lib/modules/caskit-l1/order", "".join(f"{m.file_name}\n" for m in loads).encode()),
             "l1")

    for d in MERGED:
        tree.add(cpio.symlink(d, f"usr/{d}"), "l1")
    entries = tree.with_parents()
    for d in ("dev", "proc", "sys", "run", "tmp", "var/tmp", "var/log", "root", "etc/ssh"):
        if d not in {e.path for e in entries}:
            entries.append(cpio.directory(d))
    entries += [cpio.chardev("dev/console", 5, 1), cpio.chardev("dev/null", 1, 3)]
    raw = cpio.pack(entries)
    t_pack = time.monotonic()
    packed = _zstd(raw)
    t_zstd = time.monotonic()

    out = cache_dir() / "images" / f"{key}.tmp"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    shutil.copyfile(vmlinux, out / "vmlinux")
    (out / "initrd.cpio.zst").write_bytes(packed)
    by_pkg: dict[str, int] = {}
    for path, e in tree.entries.items():
        by_pkg[tree.origin[path]] = by_pkg.get(tree.origin[path], 0) + len(e.data)
    manifest = {
        "key": key,
        "format": IMAGE_FORMAT,
        "arch": ARCH,
        "suite": debian_codename(),
        "kernel_suite": kernel_suite or debian_codename(),
        "kernel_release": kver,
        "kernel_package": kpkg if kernel is None else None,
        "kernel_build": kernel.manifest if kernel is not None else None,
        "modules": [m.file_name for m in loads],
        "roots": list(ROOTS),
        "packages": {n: {"version": pkgs[n].version, "deb": debs[n].name, "sha256": sha256_file(debs[n])} for n in sorted(debs)},
        "used_packages": sorted(p for p in by_pkg if p in pkgs),
        "bytes_by_origin": dict(sorted(by_pkg.items(), key=lambda kv: -kv[1])),
        "python_bytecode": pyc,
        "files": len(entries),
        "uncompressed_bytes": len(raw),
        "kernel": "vmlinux",
        "initrd": "initrd.cpio.zst",
        "initrd_bytes": len(packed),
        "timings_s": {"resolve+fetch": round(t_fetch - t_resolve, 2), "unpack": round(t_unpack - t_fetch, 2),
                      "compose+pack": round(t_pack - t_unpack, 2), "zstd": round(t_zstd - t_pack, 2)},
        "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    final = cache_dir() / "images" / key
    shutil.rmtree(final, ignore_errors=True)
    out.rename(final)
    log(f"l1: built image {key} (kernel {kver}, {len(packed) / 1e6:.1f} MB initramfs, "
        f"{len(raw) / 1e6:.0f} MB unpacked) in {time.monotonic() - t0:.1f}s")
    img = load_cached(key)
    assert img is not None
    return img


# -- per host -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class HostIdentity:
    """What makes one emulated host itself: its name and kind, its SSH host key and the key the
    controller logs in with (public halves; the private host key goes into the host only)."""

    name: str
    kind: str
    host_key: bytes  # OpenSSH private key of the host
    host_key_pub: bytes
    authorized_key: bytes  # the controller's public key


def identity_entries(ident: HostIdentity) -> list[cpio.Entry]:
    """The per-host archive's entries (pure). sshd refuses a host key others can read: 0600."""
    return [
        cpio.directory("etc"), cpio.directory("etc/ssh"), cpio.directory("etc/caskit-l1"),
        cpio.Entry("root", stat.S_IFDIR | 0o700), cpio.Entry("root/.ssh", stat.S_IFDIR | 0o700),
        cpio.Entry("etc/ssh/ssh_host_ed25519_key", stat.S_IFREG | 0o600, ident.host_key),
        cpio.file("etc/ssh/ssh_host_ed25519_key.pub", ident.host_key_pub),
        cpio.Entry("root/.ssh/authorized_keys", stat.S_IFREG | 0o600, ident.authorized_key),
        cpio.file("etc/caskit-l1/name", ident.name.encode() + b"\n"),
        cpio.file("etc/caskit-l1/kind", ident.kind.encode() + b"\n"),
    ]


def host_initrd(image: Image, ident: HostIdentity, dest: Path) -> Path:
    """The initramfs one host boots: its own small archive first, then the shared image. Linux
    unpacks concatenated archives in order (an uncompressed one before a compressed one is the
    layout early-microcode archives use), so the image stays cached once for every host."""
    tmp = dest.with_name(dest.name + ".part")
    # It holds the host's private key: readable by its owner only, from the first byte.
    with open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "wb") as out, open(image.initrd, "rb") as src:
        out.write(cpio.pack(identity_entries(ident)))  # newc pads to 4 bytes, as the next archive needs
        shutil.copyfileobj(src, out, 1 << 20)
    os.replace(tmp, dest)
    return dest
