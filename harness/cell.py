"""Typed data of the domain: what a cell is, what a host is, what should and did happen.

Everything here is plain frozen data with `to_dict` for the results store; no I/O.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from enum import Enum

from .axes import AXIS_NAMES


class Verdict(str, Enum):
    PASS = "PASS"  # observed = expected
    FAIL = "FAIL"  # the system under test misbehaved
    XFAIL = "XFAIL"  # an expected failure happened as predicted
    ERROR = "ERROR"  # infrastructure: the cell could not be judged
    SKIP = "SKIP"  # the host cannot offer this cell
    FLAKY = "FLAKY"  # FAIL or ERROR, then passed on a rerun (--rerun-failures; harness/flaky.py)


class Stage(str, Enum):
    """Where an expected or observed failure happens."""

    QEMU_START = "qemu-start"
    CAS = "cas"
    GUEST = "guest"


@dataclass(frozen=True)
class Cell:
    """One point of the matrix: a host and one value per axis, plus what to run in it."""

    host: str
    axes: tuple[tuple[str, str | int], ...]  # in AXIS_NAMES order
    workloads: tuple[str, ...] = ()
    migration: str = "none"
    matrix: str = ""
    append: str = ""  # extra guest kernel command line from the matrix file
    pinned: tuple[str, ...] = ()  # a migration domain's machine type, then its cap-* options
    # Where a cross-host or cross-build plan's middle hop runs: (host, QEMU build) of the domain.
    peer: tuple[str, ...] = ()

    def axis(self, name: str) -> str | int:
        return dict(self.axes)[name]

    @property
    def axes_dict(self) -> dict[str, str | int]:
        return dict(self.axes)

    @property
    def id(self) -> str:
        """Stable across runs and matrices: derived only from what the cell does."""
        a = self.axes_dict
        slug = "-".join(
            [
                self.host.replace(":", "-"),  # pool:p9 -> pool-p9: a file name everywhere
                str(a["accel"]),
                f"ic_{a['ic_mode']}",
                f"kirq_{a['kernel_irqchip']}",
                str(a["cpu"]).lower(),
                f"compat_{a['cpu_compat']}",
                f"xive_{a['guest_xive']}",
                f"smp{a['smp']}",
                str(a["firmware"]),
                str(a["qemu"]),
            ]
        )
        what = {"host": self.host, "axes": a, "workloads": list(self.workloads), "migration": self.migration}
        if self.append:
            what["append"] = self.append
        if self.pinned:
            what["pinned"] = list(self.pinned)
        if self.peer:
            what["peer"] = list(self.peer)
        payload = json.dumps(what, sort_keys=True)
        return f"{slug}-{hashlib.sha256(payload.encode()).hexdigest()[:6]}"

    def to_dict(self) -> dict:
        return {
            "id": self.id,
            "host": self.host,
            "axes": self.axes_dict,
            "workloads": list(self.workloads),
            "migration_plan": self.migration,
            "matrix": self.matrix,
            "append": self.append,
            "pinned": list(self.pinned),
            "peer": list(self.peer),
        }

    @staticmethod
    def from_dict(d: dict) -> "Cell":
        axes = tuple((n, d["axes"][n]) for n in AXIS_NAMES)
        plan = d.get("migration_plan") or (d["migration"] if isinstance(d.get("migration"), str) else "none")
        return Cell(d["host"], axes, tuple(d.get("workloads", ())), plan,
                    d.get("matrix", ""), d.get("append", ""), tuple(d.get("pinned", ())),
                    tuple(d.get("peer", ())))


@dataclass(frozen=True)
class QemuBuild:
    """One QEMU binary a host can run, as probed."""

    name: str
    binary: str
    version: str = ""
    firmware_dir: str | None = None  # passed as -L when set
    default_ic_mode: str | None = None  # qom-get /machine ic-mode with ic-mode not given
    machine: str | None = None  # the concrete machine type "pseries" resolves to
    machines: tuple[str, ...] = ()  # every pseries-X.Y version the build offers
    max_cpus: int | None = None
    cpu_models: tuple[str, ...] = ()
    caps: tuple[tuple[str, str], ...] = ()  # spapr cap-* as this host can actually provide them
    # The same per CPU model where asked for: QEMU lowers some caps for older CPUs (cap-dawr1 is
    # off below POWER10), so a migration domain's pin must be made for the cells' own CPU.
    caps_by_cpu: tuple[tuple[str, tuple[tuple[str, str], ...]], ...] = ()
    env: tuple[tuple[str, str], ...] = ()  # environment the binary needs (e.g. LD_LIBRARY_PATH)
    error: str | None = None  # why the probe could not use it
    # The binary's SHA-256 as the host reads it: a build is its content, not its version line (a
    # QEMU rebuilt with a patch keeps "7.2.22"), so --resume reuses nothing a rebuild may change.
    sha256: str = ""

    def caps_for(self, cpu: str | None) -> tuple[tuple[str, str], ...]:
        """The cap defaults for CPU model `cpu` where probed, else the build's own defaults."""
        return dict(self.caps_by_cpu).get(cpu, self.caps) if cpu else self.caps


@dataclass(frozen=True)
class HostFacts:
    """What a host is; decided by probing, consumed by the model."""

    name: str
    arch: str
    cpu: str
    kvm_mode: str  # hv (bare-metal PowerNV) | hv-nested (nested API v1) | hv-nested-papr (v2) | pr | tcg-only
    kvm_xics: bool = False  # in-kernel XICS offered by KVM
    kvm_xive: bool = False  # in-kernel XIVE native device (KVM_CAP_PPC_IRQ_XIVE)
    slots: int = 1
    qemu: tuple[QemuBuild, ...] = ()
    error: str | None = None  # the host could not be probed (down, refused us): its cells are ERROR
    # What the KVM capability probe (kvmcaps) found, where the host has it; "assumed" otherwise.
    kvm_probe: str = ""  # "kvmcaps" | "assumed" | "" (no KVM for POWER)
    platform: str = ""  # /proc/cpuinfo platform: PowerNV (bare metal, OPAL) | pSeries (a guest or LPAR)
    xive_backend: str | None = None  # the host kernel's XIVE driver: native | spapr | None
    kvm_hv_nested: bool | None = None  # /sys/module/kvm_hv/parameters/nested
    kvm_caps: tuple[tuple[str, int], ...] = ()  # KVM_CHECK_EXTENSION answers, by capability name
    kvm_note: str | None = None  # why the host offers no KVM, or how its facts were decided
    guest_machine_options: tuple[str, ...] = ()  # -machine options every guest here needs (inventory)
    # PAPR nested API KVM HV uses under a hypervisor (v1 | v2), with the evidence that says so.
    nested_api: str | None = None
    nested_api_evidence: str | None = None
    page_size: int | None = None  # the host kernel's page size, bytes
    # The processor's own PVR (Processor Version Register, /proc/cpuinfo `revision`): the real
    # generation, where `cpu` says "POWER9 (architected)" for a POWER10 in POWER9 compatibility.
    cpu_pvr: str | None = None
    # Options the host's KVM forced on every guest, each with QEMU's words asking for it (probed,
    # never from the host's name); the inventory's machine_options replace them.
    forced_options: tuple[tuple[str, str], ...] = ()
    kvm_guest_refusal: str | None = None  # QEMU would not start a guest under KVM even so: its words
    guest_append: str = ""  # kernel command line every guest here gets (e.g. an emulated host's watchdog)
    # An emulated host's L0 (the QEMU that emulates it): what build it is, and caskit's patches in
    # it by id (patches/qemu/): a defect of stock QEMU a patch fixes is no explanation there.
    l0_qemu: str | None = None
    l0_patches: tuple[str, ...] = ()

    def build(self, name: str) -> QemuBuild | None:
        return next((b for b in self.qemu if b.name == name), None)

    @staticmethod
    def unreachable(name: str, error: str) -> "HostFacts":
        return HostFacts(name, "", "", "tcg-only", error=error)

    def to_dict(self) -> dict:
        return asdict(self)

    @staticmethod
    def from_dict(d: dict) -> "HostFacts":
        d = dict(d)
        d["kvm_caps"] = tuple(tuple(x) for x in d.get("kvm_caps", ()))
        d["guest_machine_options"] = tuple(d.get("guest_machine_options", ()))
        d["forced_options"] = tuple(tuple(x) for x in d.get("forced_options", ()))
        d["l0_patches"] = tuple(d.get("l0_patches", ()))
        d["qemu"] = tuple(
            QemuBuild(**{**b, "cpu_models": tuple(b.get("cpu_models", ())),
                         "caps": tuple(tuple(x) for x in b.get("caps", ())),
                         "caps_by_cpu": tuple((c, tuple(tuple(x) for x in caps)) for c, caps in b.get("caps_by_cpu", ())),
                         "machines": tuple(b.get("machines", ())),
                         "env": tuple(tuple(x) for x in b.get("env", ()))}) for b in d.get("qemu", ())
        )
        return HostFacts(**d)


@dataclass(frozen=True)
class Expected:
    """What the model predicts for a cell, and the rule that decided it."""

    mode: str | None  # "xive" | "xics" | None when a failure or skip is expected
    rule: str  # name of the deciding rule
    source: str  # where the rule comes from (file and function, or a measurement)
    error: str | None = None  # regex for the expected failure message
    stage: str | None = None  # Stage value of the expected failure
    byte23: str | None = None  # expected ibm,arch-vec-5-platform-support byte 23, e.g. "0x80"
    irqchip: str | None = None  # "emulated" | "in-kernel" as the host should show it
    warning: str | None = None  # a warning QEMU prints on the way (e.g. its kernel-irqchip fallback)
    skip: str | None = None  # reason the host cannot offer this cell by its facts (SKIP)
    # The cell cannot be judged here at all: a build the inventory names that cannot run
    # (ERROR, never SKIP: it is the host's failure, not a fact about what it offers).
    blocked: str | None = None
    notes: tuple[str, ...] = ()  # other rules that applied on the way

    def to_dict(self) -> dict:
        d = asdict(self)
        d["notes"] = list(self.notes)
        return d


@dataclass
class GuestView:
    chips: list[str] = field(default_factory=list)  # chip names seen in /proc/interrupts
    ipi_chip: str | None = None
    mode_from_chips: str | None = None
    platform_support: str | None = None  # byte 23 as "0x.."
    ic_compatible: list[str] = field(default_factory=list)
    mode_from_dt: str | None = None
    dmesg_xive: list[str] = field(default_factory=list)
    mode_from_dmesg: str | None = None
    spurious: int | None = None

    @property
    def mode(self) -> str | None:
        """The guest's mode when its signals agree, else None."""
        seen = {m for m in (self.mode_from_chips, self.mode_from_dt, self.mode_from_dmesg) if m}
        return seen.pop() if len(seen) == 1 else None


@dataclass
class HostView:
    mode: str | None = None  # from QMP `info pic`
    irqchip: str | None = None  # "in-kernel" | "emulated"
    configured_ic_mode: str | None = None  # qom-get /machine ic-mode


@dataclass
class Observed:
    mode: str | None = None
    platform_support: str | None = None
    error: str | None = None
    stage: str | None = None
    infra: bool = False  # the error is the harness's or the host's, not the system under test's
    guest: GuestView | None = None
    host: HostView | None = None
    exit_code: int | None = None
    log_excerpt: str | None = None
    forensics: str | None = None  # the host's view of a stuck guest, saved before QEMU stopped
    qemu_warnings: list[str] = field(default_factory=list)  # QEMU's own warning lines (stderr)
    error_kind: str | None = None  # the error's class in the tree (HostError, GuestHang, ...), for pools and people
    # The guest kernel's log, read at the end of the cell (and before every guest reset):
    # findings make the cell FAIL, warnings are recorded and shown.
    kernel_findings: list[dict] = field(default_factory=list)
    kernel_warnings: list[str] = field(default_factory=list)
    # What the host's side of a hang proved ({kind, line}, machine.host_findings), and the known
    # issue they and the rest of the evidence matched (known_issues.explain_boot), if any.
    host_findings: list[dict] = field(default_factory=list)
    known_issue: str | None = None

    def to_dict(self) -> dict:
        d = asdict(self)
        if self.guest is not None:
            d["guest"]["mode"] = self.guest.mode
        return d
