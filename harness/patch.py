"""Per-patch validation: the guest kernel (or QEMU binary) under test in place of the kit's (or the
cell's build), with cell ids unchanged so the run compares cell by cell with a baseline run.

`--kernel` alone works: caskit's own initramfs is built around the kernel under test, with the
workloads' modules from `--modules DIR` or from the kernel's Debian package (`--kernel x.deb`).
A matrix whose workloads need a module the kernel neither has as a file nor built in is refused
before anything boots, naming the module. Everything the run used is recorded with its SHA-256.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from . import kit as kitmod
from .specs import HostSpec
from .debfetch import sha256_file, unpack
from .errors import ConfigError

WHERE = "command line"
# The modules each workload loads in the guest (guest_tests/bin/ck-modules loads what the kit has).
WORKLOAD_MODULES: dict[str, tuple[str, ...]] = {
    "virtio-net": ("virtio_pci", "virtio_net"),
    "virtio-blk": ("virtio_pci", "virtio_blk"),
    "affinity": ("virtio_pci", "virtio_net"),
    "cpu-hotplug": ("virtio_pci", "virtio_net"),
    "device-hotplug": ("virtio_pci", "virtio_net", "rpaphp", "rpadlpar_io"),
}


@dataclass(frozen=True)
class Patch:
    kernel: str | None = None
    initrd: str | None = None
    modules: str | None = None
    qemu: str | None = None

    @property
    def any(self) -> bool:
        return any((self.kernel, self.initrd, self.modules, self.qemu))


def _file(option: str, value: str) -> Path:
    p = Path(value).expanduser().resolve()
    if not p.is_file():
        raise ConfigError(WHERE, option, f"no such file: {p}")
    return p


def _unpacked_deb(deb: Path) -> Path:
    dest = kitmod.cache_root() / "unpacked" / f"{deb.stem}-{sha256_file(deb)[:12]}"
    if not (dest / ".complete").exists():
        unpack(deb, dest)
        (dest / ".complete").touch()
    return dest


def _moddir_in(root: Path, release: str) -> Path | None:
    for cand in (root / "lib" / "modules" / release, root / "usr" / "lib" / "modules" / release, root / release, root):
        if cand.is_dir() and ((cand / "kernel").is_dir() or (cand / "modules.builtin").is_file()):
            return cand
    return None


def kernel_under_test(kernel: str, modules: str | None) -> kitmod.KernelUnderTest:
    """The kernel a user names: a vmlinux, or a Debian linux-image .deb (vmlinux and modules from it)."""
    path = _file("--kernel", kernel)
    moddir: Path | None = None
    if path.suffix == ".deb":
        root = _unpacked_deb(path)
        found = sorted((root / "boot").glob("vmlinux-*"))
        if not found:
            raise ConfigError(WHERE, "--kernel", f"{path}: no boot/vmlinux-* in the package (a ppc64el linux-image?)")
        vmlinux = found[0]
        release = vmlinux.name.removeprefix("vmlinux-")
        moddir = _moddir_in(root, release)
    else:
        vmlinux = path
        try:
            release = kitmod.kernel_release(vmlinux)
        except kitmod.KitError as e:
            raise ConfigError(WHERE, "--kernel", str(e)) from e
    if modules:
        mpath = Path(modules).expanduser().resolve()
        if mpath.is_file() and mpath.suffix == ".deb":
            mpath = _unpacked_deb(mpath)
        if not mpath.is_dir():
            raise ConfigError(WHERE, "--modules", f"{mpath} is not a directory (lib/modules/RELEASE, or a .deb)")
        moddir = _moddir_in(mpath, release)
        if moddir is None:
            raise ConfigError(WHERE, "--modules", f"{mpath} has no modules for {release} "
                                                  f"(looked for lib/modules/{release} and {release}/kernel)")
    return kitmod.KernelUnderTest(vmlinux, release, moddir, str(path))


def missing_modules(kit: kitmod.Kit, workloads: set[str]) -> dict[str, list[str]]:
    """module -> the workloads that need it, for modules the kit's kernel does not have."""
    have = {Path(m).name.split(".ko")[0] for m in kit.manifest.get("modules", [])}
    have |= set(kit.manifest.get("modules_builtin", []))
    out: dict[str, list[str]] = {}
    for w in sorted(workloads):
        for m in WORKLOAD_MODULES.get(w, ()):
            if m not in have:
                out.setdefault(m, []).append(w)
    return out


def check_modules(kit: kitmod.Kit, workloads: set[str]) -> None:
    missing = missing_modules(kit, workloads)
    if missing:
        rel = kit.manifest.get("kernel_release", "?")
        raise ConfigError(WHERE, "--kernel", "the matrix's workloads need modules kernel {} has neither as files nor "
                          "built in: {} (give them with --modules DIR or the kernel's .deb)".format(
                              rel, "; ".join(f"{m} (for {', '.join(ws)})" for m, ws in missing.items())))


def with_qemu(hosts: dict[str, HostSpec], build_names: dict[str, set[str]], binary: str) -> dict[str, HostSpec]:
    """The inventory with every build the cells use on each host run from `binary` instead (the
    build keeps its name, so cell ids, and the comparison with a baseline, stay the same)."""
    out = dict(hosts)
    for h, names in build_names.items():
        spec = hosts[h]
        builds = tuple(replace(b, binary=binary, debian_suite=None) if b.name in names else b for b in spec.qemu)
        out[h] = replace(spec, qemu=builds)
    return out


def provenance(patch: Patch, kit: dict, facts: dict) -> dict:
    """What the run put under test, by SHA-256 and version, apart from the verdicts."""
    out: dict = {}
    k = (kit.get("manifest") or {}).get("kernel_under_test")
    if k:
        out["kernel"] = k
    if patch.initrd:
        out["initrd"] = {"source": patch.initrd, "sha256": sha256_file(Path(patch.initrd))}
    if patch.qemu:
        p = Path(patch.qemu)
        versions = sorted({b["version"] for f in facts.values() for b in f.get("qemu", ())
                           if b.get("binary") == patch.qemu and b.get("version")})
        out["qemu"] = {"source": patch.qemu, "sha256": sha256_file(p) if p.is_file() else None, "versions": versions}
    return out
