"""Debian's ppc64el kernel as the guest kit and the L1 image take it: which package, its vmlinux,
and the modules to `insmod`, in dependency order and checked when the image is built.

Debian ships no modules.dep to us (and busybox's insmod would not read one), so the order comes
from each module's own `.modinfo` (`depends=`). A hard-coded order broke once already: kernel
6.1.0-57 made `virtio` depend on `virtio_ring`, listed after it, and every NIC and disk workload
failed at `insmod virtio.ko: unknown symbol` (issue 20). Both images use this one mechanism, and a
module whose dependencies neither image nor kernel provides, or that was built for another kernel
release, stops the build: such an image is never cached.
"""

from __future__ import annotations

import lzma
from dataclasses import dataclass
from pathlib import Path

from .debfetch import PrivateApt, Resolved
from .elf import elf_info
from .errors import KitError

KERNEL_META = "linux-image-powerpc64le"


def kernel_package(apt: PrivateApt, meta: str = KERNEL_META) -> Resolved:
    """The linux-image package the meta package currently depends on, resolved."""
    m = apt.resolve(meta)[meta]
    kpkg = next((d.split()[0] for d in m.depends.split(",") if d.strip().startswith("linux-image-")), None)
    if not kpkg:
        raise KitError(f"{meta} {m.version} depends on no linux-image package: {m.depends!r}")
    return apt.resolve(kpkg)[kpkg]


def vmlinux_in(root: Path, pkg: str) -> tuple[Path, str, Path]:
    """(vmlinux, release, module directory) of an unpacked linux-image package."""
    found = sorted((root / "boot").glob("vmlinux-*"))
    if not found:
        raise KitError(f"{pkg}: no boot/vmlinux-* in the package")
    release = found[0].name.removeprefix("vmlinux-")
    return found[0], release, root / "lib" / "modules" / release


@dataclass(frozen=True)
class KernelModule:
    name: str  # as the kernel names it: dashes become underscores
    path: Path
    depends: tuple[str, ...]
    vermagic: str

    @property
    def data(self) -> bytes:
        """The bytes insmod gets: decompressed, as busybox's insmod cannot read .ko.xz."""
        raw = self.path.read_bytes()
        return lzma.decompress(raw) if self.path.name.endswith(".xz") else raw

    @property
    def file_name(self) -> str:
        return self.path.name.removesuffix(".xz")


def _name(file_name: str) -> str:
    return file_name.split(".ko")[0].replace("-", "_")


def module_files(moddir: Path | None) -> dict[str, Path]:
    """Module name -> its file, for every .ko or .ko.xz under `moddir`."""
    if moddir is None or not moddir.is_dir():
        return {}
    out: dict[str, Path] = {}
    for pattern in ("*.ko", "*.ko.xz"):
        for p in sorted(moddir.rglob(pattern)):
            out.setdefault(_name(p.name), p)
    return out


def builtin_modules(moddir: Path | None) -> set[str]:
    """Module names built into the kernel, from its modules.builtin (paths like kernel/x/y.ko)."""
    f = moddir / "modules.builtin" if moddir else None
    if not f or not f.is_file():
        return set()
    return {_name(Path(line.strip()).name) for line in f.read_text().splitlines() if line.strip()}


def read_module(path: Path) -> KernelModule:
    m = KernelModule(_name(path.name), path, (), "")
    info = elf_info(m.data)
    if info is None:
        raise KitError(f"{path}: not an ELF kernel module")
    fields = dict(s.split("=", 1) for s in info.modinfo if "=" in s)
    deps = tuple(_name(d) for d in fields.get("depends", "").split(",") if d)
    return KernelModule(m.name, path, deps, fields.get("vermagic", ""))


def module_order(wanted: tuple[str, ...], depends: dict[str, tuple[str, ...]]) -> list[str]:
    """Modules to insmod, dependencies first (pure): `depends` maps each module that exists as a
    file to the modules its `.modinfo` says it needs. A name absent from the map is built into the
    kernel (or absent) and skipped."""
    order: list[str] = []
    visiting: set[str] = set()

    def visit(m: str) -> None:
        m = m.replace("-", "_")
        if m in order or m not in depends:
            return
        if m in visiting:
            raise KitError(f"kernel modules depend on each other in a cycle through {m}")
        visiting.add(m)
        for d in depends[m]:
            visit(d)
        visiting.discard(m)
        order.append(m)

    for m in wanted:
        visit(m)
    return order


@dataclass(frozen=True)
class ModulePlan:
    """What an image loads of `wanted`: the files to insmod in order (with the dependencies they
    pulled in), the wanted modules the kernel has built in, and those it has in neither form."""

    load: tuple[KernelModule, ...]
    builtin: tuple[str, ...]
    absent: tuple[str, ...]
    all_builtin: frozenset[str]  # the kernel's whole modules.builtin, for later questions

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(m.name for m in self.load)


def plan_modules(moddir: Path | None, wanted: tuple[str, ...], release: str) -> ModulePlan:
    """The modules to load for `wanted` from kernel `release`'s module tree, checked: every
    dependency is a file of the plan or built in, and every file was built for `release`.
    Raises KitError naming each module that could not load, before anything is cached."""
    files = module_files(moddir)
    builtin = builtin_modules(moddir)
    read: dict[str, KernelModule] = {}
    todo = [w.replace("-", "_") for w in wanted]
    while todo:  # read only the modules reachable from what is wanted (a kernel has thousands)
        m = todo.pop()
        if m in read or m not in files:
            continue
        read[m] = read_module(files[m])
        todo += read[m].depends
    order = module_order(tuple(wanted), {n: km.depends for n, km in read.items()})
    problems = []
    for n in order:
        km = read[n]
        for d in km.depends:
            if d not in read and d not in builtin:
                problems.append(f"{km.file_name} depends on {d}, which kernel {release} has neither as a module file "
                                f"nor built in (modules.builtin)")
        if km.vermagic.split(" ", 1)[0] != release:
            problems.append(f"{km.file_name} was built for kernel {km.vermagic.split(' ', 1)[0] or '(no vermagic)'}, "
                            f"not {release}: it cannot load")
    if problems:
        raise KitError("the kernel modules cannot load: " + "; ".join(problems))
    names = [w.replace("-", "_") for w in wanted]
    return ModulePlan(tuple(read[n] for n in order), tuple(n for n in names if n not in read and n in builtin),
                      tuple(n for n in names if n not in read and n not in builtin), frozenset(builtin))
