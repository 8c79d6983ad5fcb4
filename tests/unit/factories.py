"""Builders for the domain objects the unit tests feed to the harness's pure modules."""

from __future__ import annotations

from harness.axes import AXIS_NAMES
from harness.cell import Cell, HostFacts, QemuBuild

# One value per axis; a test overrides only what it is about.
BASE_AXES: dict[str, str | int] = {
    "accel": "tcg",
    "ic_mode": "default",
    "kernel_irqchip": "default",
    "cpu": "POWER9",
    "cpu_compat": "default",
    "guest_xive": "default",
    "smp": 2,
    "firmware": "vof",
    "qemu": "system",
}


def make_cell(host: str = "local", *, workloads=(), migration: str = "none", matrix: str = "",
              append: str = "", **axes) -> Cell:
    unknown = set(axes) - set(AXIS_NAMES)
    assert not unknown, f"not axes: {unknown}"
    a = {**BASE_AXES, **axes}
    return Cell(host, tuple((n, a[n]) for n in AXIS_NAMES), tuple(workloads), migration, matrix, append)


def make_build(name: str = "system", *, default_ic_mode: str | None = "dual", max_cpus: int | None = 4096,
               cpu_models=("POWER10", "POWER8", "POWER9"), **kw) -> QemuBuild:
    kw.setdefault("binary", "qemu-system-ppc64")
    kw.setdefault("version", "7.2.22")
    kw.setdefault("machine", "pseries-7.2")
    return QemuBuild(name, default_ic_mode=default_ic_mode, max_cpus=max_cpus, cpu_models=tuple(cpu_models), **kw)


def make_facts(kvm_mode: str = "tcg-only", *, kvm_xics: bool = False, kvm_xive: bool = False,
               builds: tuple[QemuBuild, ...] | None = None, name: str = "local") -> HostFacts:
    arch, cpu = ("x86_64", "Intel Xeon") if kvm_mode == "tcg-only" else ("ppc64le", "POWER9 (raw)")
    return HostFacts(name, arch, cpu, kvm_mode, kvm_xics=kvm_xics, kvm_xive=kvm_xive, slots=2,
                     qemu=builds if builds is not None else (make_build(),))


TCG_HOST = make_facts("tcg-only")
# A PowerNV host with kvm_hv: in-kernel XIVE native device and XICS-on-XIVE.
HV_HOST = make_facts("hv", kvm_xics=True, kvm_xive=True, name="p9-bare")
# kvm_hv inside a pseries L1: KVM_CAP_PPC_IRQ_XIVE = 0, in-kernel XICS works (measured).
NESTED_HOST = make_facts("hv-nested", kvm_xics=True, kvm_xive=False, name="p9-nested")
# A PR KVM host whose KVM offers neither in-kernel device.
PR_BARE_HOST = make_facts("pr", kvm_xics=False, kvm_xive=False, name="p8-pr")
