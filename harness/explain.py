"""`caskit explain -- qemu-system-ppc64 ARGS...`: what the model predicts for any QEMU command line.

Projects that launch POWER guests keep rediscovering by failure which interrupt controller a
configuration gets (Kata Containers dropped kernel_irqchip=on on ppc64le because its VMs would not
start in nested LPARs; CoreOS's assembler forces ic-mode=xics to silence QEMU's fallback
warning). This reads the options of their command line that decide it and prints, per KVM mode
and for a guest with and without `xive=off`, the negotiated mode (XIVE or XICS), whether the
controller runs in the kernel or in QEMU, the warning or error QEMU prints and where, and the
rule that decided it. Parsing and predicting are pure; `--run HOST` adds one real boot.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field, replace

from . import model
from .axes import AXIS_NAMES, COMPAT_LEVEL, CPU_LEVEL, DEFAULT
from .cell import Cell, Expected, HostFacts, QemuBuild
from .errors import ConfigError

WHERE = "command line"
# The options of -machine pseries that the model decides on; the others are listed as not modelled.
MODELLED = {"ic-mode": "ic_mode", "kernel-irqchip": "kernel_irqchip", "max-cpu-compat": "cpu_compat",
            "x-vof": "firmware", "accel": "accel"}
ALLOWED = {"ic_mode": ("dual", "xics", "xive"), "kernel_irqchip": ("on", "off", "split"),
           "cpu_compat": tuple(COMPAT_LEVEL)}
# KVM modes a host can be in, with what its KVM offers (cas-rules.md section 5; measured on the
# emulated hosts where the model's rules cite it).
KVM_MODES: dict[str, dict] = {
    "tcg-only": {"kvm_mode": "tcg-only", "kvm_xics": False, "kvm_xive": False,
                 "what": "no KVM for POWER (an x86 machine, or TCG chosen): QEMU emulates both controllers"},
    "hv": {"kvm_mode": "hv", "kvm_xics": True, "kvm_xive": True,
           "what": "bare-metal POWER9 (PowerNV) with kvm_hv: in-kernel XIVE native device and XICS-on-XIVE"},
    "hv-nested": {"kvm_mode": "hv-nested", "kvm_xics": True, "kvm_xive": False, "cpu": "POWER9",
                  "what": "kvm_hv in a KVM guest on POWER9 (nested HV, PAPR nested API v1): no in-kernel XIVE"},
    "hv-nested-papr": {"kvm_mode": "hv-nested-papr", "kvm_xics": True, "kvm_xive": False, "cpu": "POWER10",
                       "what": "kvm_hv in a PowerVM LPAR on POWER10/11 (PAPR nested API v2, FW1060.10+): no "
                               "in-kernel XIVE; the guest's CPU is the host's (POWER9 guests: max-cpu-compat=power9)"},
    "pr": {"kvm_mode": "pr", "kvm_xics": True, "kvm_xive": False,
           "what": "kvm_pr (PR KVM, hash MMU): in-kernel XICS, no in-kernel XIVE, SLOF only (measured on caskit's "
                   "pr host, docs/pr-kvm.md)"},
}


@dataclass(frozen=True)
class Parsed:
    binary: str
    axes: dict[str, str | int]
    append: str = ""
    not_modelled: tuple[str, ...] = ()  # machine options caskit has no rule for
    machine: str = "pseries"  # the machine type as written (pseries, pseries-7.2, ...)
    notes: tuple[str, ...] = field(default_factory=tuple)
    cpu_given: bool = False  # the line has -cpu (else QEMU takes the host's under KVM, POWER9 for TCG)


def _opts(value: str) -> tuple[str, list[tuple[str, str]]]:
    """QEMU's "type,key=value,..." (a bare first item is the type; `,,` escapes a comma)."""
    parts = [p.replace("\0", ",") for p in value.replace(",,", "\0").split(",")]
    first, rest = (parts[0], parts[1:]) if "=" not in parts[0] else ("", parts)
    return first, [(p.split("=", 1)[0], p.split("=", 1)[1] if "=" in p else "on") for p in rest if p]


def parse_argv(argv: list[str]) -> Parsed:
    """The cell a QEMU command line amounts to. Raises ConfigError naming the option for a line
    that is not a pseries guest or has a value QEMU would refuse to parse."""
    if not argv:
        raise ConfigError(WHERE, None, "give a QEMU command line after `--`, e.g. caskit explain -- "
                                       "qemu-system-ppc64 -M pseries,ic-mode=dual -cpu POWER9")
    a: dict[str, str | int] = {n: DEFAULT for n in ("ic_mode", "kernel_irqchip", "cpu_compat", "guest_xive")}
    a.update(accel="tcg", cpu="POWER9", smp=1, firmware="slof", qemu="system")
    machine, append, not_modelled, notes, cpu_given = "", "", [], [], False
    args = list(argv[1:])
    i = 0
    while i < len(args):
        opt = args[i]
        name = opt.lstrip("-")
        val = args[i + 1] if i + 1 < len(args) else None
        takes = name in ("M", "machine", "cpu", "smp", "accel", "append")
        if "=" in name and name.split("=", 1)[0] in ("machine", "cpu", "smp", "accel", "append"):
            name, val, takes = name.split("=", 1)[0], name.split("=", 1)[1], False
        if takes and val is None:
            raise ConfigError(WHERE, opt, "needs a value")
        if name in ("M", "machine"):
            mtype, pairs = _opts(str(val))
            machine = mtype or machine
            for k, v in pairs:
                k = k.replace("_", "-")  # QEMU takes kernel_irqchip for kernel-irqchip (vl.c machine_set_property)
                if k in ("ic-mode", "kernel-irqchip", "max-cpu-compat"):
                    axis = MODELLED[k]
                    if v not in ALLOWED[axis]:
                        raise ConfigError(WHERE, f"-machine {k}", f"{v!r}: QEMU accepts {', '.join(ALLOWED[axis])}")
                    a[axis] = v
                elif k == "x-vof":
                    a["firmware"] = "vof" if v in ("on", "true", "yes") else "slof"
                elif k == "accel":
                    a["accel"] = "kvm" if v.split(":")[0] == "kvm" else "tcg"
                else:
                    not_modelled.append(f"{k}={v}")
        elif name == "cpu":
            model_name = str(val).split(",")[0]
            cpu_given = model_name.lower() != "host"
            match = next((c for c in CPU_LEVEL if c.lower() == model_name.lower()), None)
            if match is None:
                notes.append(f"-cpu {model_name}: not a model caskit predicts for (POWER8/9/10); POWER9 assumed")
            else:
                a["cpu"] = match
        elif name == "smp":
            first, pairs = _opts(str(val))
            n = first or dict(pairs).get("cpus", "1")
            if not re.fullmatch(r"\d+", n):
                raise ConfigError(WHERE, "-smp", f"{val!r} is not a number of vCPUs")
            a["smp"] = int(n)
        elif name == "accel":
            a["accel"] = "kvm" if _opts(str(val))[0] == "kvm" else "tcg"
        elif name == "enable-kvm":
            a["accel"] = "kvm"
        elif name == "append":
            append = str(val)
            if re.search(r"(^|\s)xive=off(\s|$)", append):
                a["guest_xive"] = "off"
        if takes:
            i += 1
        i += 1
    if not machine.startswith("pseries"):
        raise ConfigError(WHERE, "-machine", f"{machine or '(none)'!r}: caskit explains pseries guests "
                                             "(the machine type whose guests negotiate XICS or XIVE at CAS)")
    if a["kernel_irqchip"] == "split":
        notes.append("kernel-irqchip=split: QEMU refuses it on pseries under KVM (spapr_irq_check)")
    return Parsed(argv[0], a, append, tuple(not_modelled), machine, tuple(notes), cpu_given)


def facts_for(kvm: str, build: QemuBuild) -> HostFacts:
    k = KVM_MODES[kvm]
    return HostFacts(f"({kvm})", "ppc64le" if kvm != "tcg-only" else "x86_64", k.get("cpu", "POWER9"), k["kvm_mode"],
                     k["kvm_xics"], k["kvm_xive"], 1, (build,))


def cell_of(p: Parsed, kvm: str, guest_xive: str) -> Cell:
    ax = dict(p.axes, guest_xive=guest_xive, accel="tcg" if kvm == "tcg-only" else "kvm", qemu="system")
    if not p.cpu_given and kvm.startswith("hv"):
        ax["cpu"] = KVM_MODES[kvm].get("cpu", ax["cpu"])  # no -cpu under KVM: the host's own
    if ax["kernel_irqchip"] == "split":
        ax["kernel_irqchip"] = "on"  # refused anyway; the model has no axis value for it
    return Cell("explain", tuple((n, ax[n]) for n in AXIS_NAMES))


@dataclass(frozen=True)
class Row:
    kvm: str
    guest: str  # "xive=off" or "default"
    expected: Expected


def predict_all(p: Parsed, build: QemuBuild) -> list[Row]:
    build = replace(build, name="system")
    rows = []
    for kvm in KVM_MODES:
        for gx in (DEFAULT, "off"):
            e = model.predict(cell_of(p, kvm, gx), facts_for(kvm, build))
            rows.append(Row(kvm, "xive=off" if gx == "off" else "default", e))
    return rows


def outcome(e: Expected) -> tuple[str, str, str]:
    """(what happens, where, what QEMU says) for a row."""
    if e.blocked or e.skip:
        return (e.blocked or e.skip or "", "-", "")
    if e.error:
        return ("QEMU refuses", e.stage or "", e.error.replace("\\", ""))
    says = e.warning or ""
    return (f"{e.mode.upper() if e.mode else '?'} {e.irqchip or ''}".strip(), "runs", says)


def render(p: Parsed, rows: list[Row], given_xive: str, known: list | None = None) -> str:
    """The table; `known` are the known issues (configs/known-issues.yaml) whose boot entries
    name KVM modes: what caskit's emulated hosts of those modes show beside the model."""
    lines = [f"{p.binary}: -machine {p.machine}" + "".join(
        f",{k}={p.axes[v]}" for k, v in (("ic-mode", "ic_mode"), ("kernel-irqchip", "kernel_irqchip"),
                                          ("max-cpu-compat", "cpu_compat")) if p.axes[v] != DEFAULT)
        + f" -cpu {p.axes['cpu']} -smp {p.axes['smp']} ({p.axes['firmware']})",
        f"the guest's command line {'has' if given_xive == 'off' else 'does not have'} xive=off", ""]
    w = max(len(k) for k in KVM_MODES)
    for r in rows:
        what, where, says = outcome(r.expected)
        mark = "*" if (r.guest == "xive=off") == (given_xive == "off") else " "
        lines.append(f"{mark} {r.kvm:<{w}}  guest {r.guest:<8}  {what:<18} {where:<10} [{r.expected.rule}]")
        if says:
            lines.append(f"  {'':<{w}}  {'':<14}  QEMU: {says}")
    lines.append("")
    lines.append("* = the guest as this command line boots it. KVM modes:")
    lines += [f"  {k:<{w}}  {v['what']}" for k, v in KVM_MODES.items()]
    boot = [k for k in known or () if k.host_findings and k.kvm_modes]
    if boot:
        lines.append("Known issues of caskit's emulated hosts (the model says what real hosts do; a hang there "
                     "that its host proves is XFAIL):")
        lines += [f"  {', '.join(k.kvm_modes):<{w}}  {k.id}: {k.summary.split('. ')[0].strip()}."
                  + (f" Not on an L0 with caskit's patch {', '.join(k.l0_without)}." if k.l0_without else "")
                  for k in boot]
    for n in p.notes:
        lines.append(f"note: {n}")
    if p.not_modelled:
        lines.append(f"not modelled (no rule depends on them): {', '.join(p.not_modelled)}")
    return "\n".join(lines)


def quote(argv: list[str]) -> str:
    return shlex.join(argv)
