"""The model: what *should* happen to a cell on a host. Pure functions, no I/O.

`predict(cell, facts)` walks the rules below in order; the first that decides the outcome names
itself in the result, the others that shaped it are kept as notes. Each rule cites its source
(a QEMU or Linux file and function) and the measurement that confirmed it, so a wrong
prediction points at one rule to fix.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .axes import COMPAT_LEVEL, CPU_LEVEL, DEFAULT
from .cell import Cell, Expected, HostFacts, Stage


@dataclass(frozen=True)
class Rule:
    name: str
    source: str
    says: str


def _r(name: str, source: str, says: str) -> Rule:
    return Rule(name, source, says)


# The POWER10 measurement behind the TCG CAS rules (docs/model.md, "POWER10"): POWER8, POWER9 and
# POWER10 x max-cpu-compat x ic-mode x guest xive=off, smp 1, VOF, on both QEMU builds.
P10 = ("; measured with POWER10 on QEMU 7.2.22 and 10.0.2 under TCG, 2026-12-07: all 144 cells of "
       "POWER8/9/10 x max-cpu-compat x ic-mode dual/xics/xive x guest xive=off x build as predicted, "
       "both builds alike")
P10_KIRQ = ("; measured with POWER10 on QEMU 7.2.22 and 10.0.2, 2026-12-07: kernel-irqchip on and off, "
            "ic-mode dual and xive, as predicted (info pic: emulated)")


RULES: dict[str, Rule] = {r.name: r for r in (
    _r("host-has-kvm", "caskit: accel=kvm needs a host whose probe found /dev/kvm",
       "a cell asking for KVM on a host without it is SKIP"),
    _r("pr-kvm-untestable", "cas-rules.md section 5: Debian's kernel has no kvm_pr",
       "PR KVM cells need a host whose kernel has kvm_pr"),
    _r("vof-not-under-pr", "measured in an emulated PR KVM L1 (Debian 6.1 source with kvm_pr, POWER9 hash MMU, "
       "QEMU 7.2), 2026-12-07: with x-vof=on the guest never prints; the L1 logs 'Couldn't emulate instruction "
       "0x00000000' and 'kvmppc_exit_pr_progint: emulation at 0 failed'",
       "VOF does not run under PR KVM: a PR host's cells use SLOF"),
    _r("qemu-build-usable", "caskit: hosts.yaml qemu builds, probed",
       "a QEMU build the inventory names that is missing, not executable or whose probe fails is the "
       "host's failure: its cells are ERROR with the probe's words"),
    _r("cpu-model-known", "QEMU -cpu help for the build, probed",
       "a CPU model the build does not emulate is SKIP"),
    _r("smp-max-cpus", "hw/core/machine-smp.c machine_parse_smp_config(); query-machines cpu-max",
       "more vCPUs than the machine's cpu-max is refused at start"),
    _r("xive-needs-power9", "hw/ppc/spapr_irq.c spapr_irq_check(); measured on 7.2" + P10,
       "ic-mode=xive with a CPU or max-cpu-compat below POWER9 is refused at start"),
    _r("compat-above-cpu", "target/ppc/compat.c ppc_set_compat(); measured on 7.2" + P10,
       "max-cpu-compat above the CPU model is refused at start"),
    _r("kvm-no-hpt-in-nested", "hw/ppc/spapr.c spapr_reallocate_hpt(); measured on caskit's nested-papr host, "
       "2026-12-07: max-cpu-compat=power8 with ic-mode dual and xics refused with 'HPT not supported in nested "
       "guests', and on nested-hv the same (both probe KVM_CAP_PPC_MMU_HASH_V3 = 0; powernv9's is 1)",
       "a guest that can only use the hashed page table (POWER8 CPU or compat) is refused at start where HV KVM "
       "has no HPT for its guests (KVM_CAP_PPC_MMU_HASH_V3 = 0: HV under a hypervisor)"),
    _r("kvm-pr-no-compat", "target/ppc/compat.c ppc_set_compat() sets KVM_REG_PPC_ARCH_COMPAT, which PR KVM "
       "(arch/powerpc/kvm/book3s_pr.c) does not implement; measured on caskit's pr host, 2026-12-07: every "
       "max-cpu-compat=power9 and power8 cell of kvm-modes refused at start with 'Unable to set CPU "
       "compatibility mode in KVM: Invalid argument'",
       "under PR KVM a max-cpu-compat (even the host's own generation) is refused at start"),
    _r("cpu-host-needs-kvm", "target/ppc/kvm.c (the host CPU class exists under KVM only); measured on QEMU 7.2.22 "
       "and 10.0.2 under TCG, 2026-12-07: 'unable to find CPU model 'host''",
       "-cpu host is the host's own processor under KVM (its generation from the probed PVR); TCG refuses it"),
    _r("kvm-hv-cpu-is-host", "target/ppc/kvm.c kvm_arch_init_vcpu(); measured with QEMU 7.2 in caskit's L1s, "
       "2026-12-07: on nested-papr (POWER10) -cpu POWER9 refused with 'Register sync failed... If you're using "
       "kvm-hv.ko, only \"-cpu host\" is possible', -cpu POWER10 and host start; on nested-papr-p9 (POWER10 in "
       "POWER9 compatibility, cpuinfo 'POWER9 (architected)') the same: the PVR decides; on nested-hv (POWER9) "
       "-cpu POWER10 and POWER8 refused alike",
       "under HV KVM the guest's CPU model must be the host's own (a POWER9 guest on a POWER10 host is "
       "max-cpu-compat=power9); PR KVM emulates other models"),
    _r("legacy-machine-no-ic-mode", "hw/ppc/spapr_irq.c spapr_irq_check(); measured on pseries-3.0",
       "machine versions whose default ic-mode is legacy are XICS-only and refuse an ic-mode option"),
    _r("ic-mode-default", "hw/ppc/spapr.c machine class compat options; qom-get /machine ic-mode, probed",
       "ic-mode not given is the machine version's default"),
    _r("offer-xics-only", "hw/ppc/spapr.c spapr_dt_ov5_platform_support(); measured byte 23 = 0x00" + P10,
       "ic-mode=xics offers XICS only"),
    _r("offer-xive-only", "hw/ppc/spapr.c spapr_dt_ov5_platform_support(); measured byte 23 = 0x40" + P10,
       "ic-mode=xive offers XIVE only"),
    _r("dual-below-power9-offers-xics", "hw/ppc/spapr_irq.c spapr_irq_check(); measured byte 23 = 0x00" + P10,
       "ic-mode=dual with a CPU or compat below POWER9 offers XICS only"),
    _r("offer-dual", "hw/ppc/spapr.c spapr_dt_ov5_platform_support(); measured byte 23 = 0x80" + P10,
       "ic-mode=dual on POWER9/10 offers both; the guest chooses"),
    _r("guest-picks-xive", "arch/powerpc/kernel/prom_init.c prom_parse_xive_model(); measured" + P10,
       "a guest built with CONFIG_PPC_XIVE_SPAPR asks for XIVE when offered"),
    _r("guest-xive-off", "arch/powerpc/kernel/prom_init.c prom_parse_xive_model(); measured" + P10,
       "xive=off makes the guest ask for XICS when the platform offers both"),
    _r("xive-only-ignores-xive-off", "arch/powerpc/kernel/prom_init.c prom_parse_xive_model(); measured" + P10,
       "on a XIVE-only machine the guest cannot honour xive=off and negotiates XIVE"),
    _r("tcg-emulates", "hw/ppc/spapr_irq.c spapr_irq_init_kvm() only acts under KVM; measured" + P10_KIRQ,
       "under TCG kernel-irqchip is accepted and has no effect; the controller is emulated"),
    _r("kvm-irqchip-off", "hw/ppc/spapr_irq.c spapr_irq_init_kvm(); measured on caskit's emulated hosts (nested-hv, powernv9), 2026-11-30: all 36 cells of ic-mode x kernel-irqchip x guest xive=off as predicted",
       "kernel-irqchip=off emulates the controller in QEMU"),
    _r("kvm-in-kernel", "hw/intc/spapr_xive_kvm.c kvmppc_xive_connect(), hw/intc/xics_kvm.c; measured on caskit's emulated hosts (nested-hv, powernv9), 2026-11-30: all 36 cells of ic-mode x kernel-irqchip x guest xive=off as predicted: XIVE "
       "in-kernel on powernv9, XICS in-kernel on both",
       "KVM with the in-kernel device for the negotiated mode uses it"),
    _r("kvm-irqchip-required", "hw/intc/spapr_xive_kvm.c kvmppc_xive_connect(); measured on caskit's emulated hosts (nested-hv, powernv9), 2026-11-30: all 36 cells of ic-mode x kernel-irqchip x guest xive=off as predicted: on nested-hv, ic-mode=xive "
       "refused at start, dual refused when the guest asks for XIVE at CAS; the same under PR KVM in an emulated PR "
       "L1 and on nested-papr, 2026-12-07",
       "kernel-irqchip=on without the in-kernel device fails"),
    _r("kvm-fallback-emulated", "hw/ppc/spapr_irq.c spapr_irq_init_kvm(); measured on caskit's emulated hosts (nested-hv, powernv9), 2026-11-30: all 36 cells of ic-mode x kernel-irqchip x guest xive=off as predicted: nested-hv dual and xive, with "
       "the 'allowed but unavailable' warning",
       "kernel-irqchip allowed but unavailable falls back to QEMU's emulation with a warning"),
)}

COMPAT_PVR = {"power8": "0x0f000004", "power9": "0x0f000005", "power10": "0x0f000006"}


# PVR version (its upper half) -> processor generation (arch/powerpc/include/asm/reg.h PVR_*).
PVR_LEVEL = {0x004B: 8, 0x004C: 8, 0x004D: 8, 0x004E: 9, 0x0080: 10, 0x0082: 11}


def host_cpu_level(facts: HostFacts) -> int | None:
    """The host's processor generation: from its PVR where probed (a POWER10 LPAR in POWER9
    compatibility mode says "POWER9 (architected)" in /proc/cpuinfo, yet KVM HV runs only
    POWER10 vCPUs there: measured on nested-papr-p9), else from its /proc/cpuinfo line; None
    when neither names one (an x86 host, or unknown)."""
    if facts.cpu_pvr:
        level = PVR_LEVEL.get(int(facts.cpu_pvr, 16) >> 16)
        if level:
            return level
    m = re.match(r"\s*POWER(\d+)", facts.cpu or "", re.I)
    return int(m.group(1)) if m else None


def _expected(rule: str, notes: list[str], **kw) -> Expected:
    return Expected(rule=rule, source=RULES[rule].source, notes=tuple(notes), **kw)


def _fail(rule: str, notes: list[str], stage: Stage, pattern: str) -> Expected:
    return _expected(rule, notes, mode=None, stage=stage.value, error=pattern)


def predict(cell: Cell, facts: HostFacts) -> Expected:
    a = cell.axes_dict
    notes: list[str] = []
    accel = a["accel"]

    # Can the host offer the cell at all?
    if accel == "kvm" and facts.kvm_mode == "tcg-only":
        why = f": {facts.kvm_note}" if facts.kvm_note else ""
        return _expected("host-has-kvm", notes, mode=None, skip=f"host {facts.name} has no KVM{why}")
    if accel == "kvm" and facts.kvm_mode == "pr" and not facts.kvm_xics and not facts.kvm_xive:
        notes.append("pr-kvm-untestable")
    if accel == "kvm" and facts.kvm_mode == "pr" and a["firmware"] == "vof":
        return _expected("vof-not-under-pr", notes, mode=None,
                         skip=f"host {facts.name} runs PR KVM, under which VOF does not run (measured): use firmware slof")
    build = facts.build(str(a["qemu"]))
    if build is None or build.error:
        why = build.error if build else "not probed on this host"
        return _expected("qemu-build-usable", notes, mode=None,
                         blocked=f"QEMU build {a['qemu']!r} on host {facts.name} cannot run: {why}")
    if a["cpu"] == "host":
        # The host's own CPU: what farms run under KVM; TCG has no such model.
        if accel != "kvm":
            return _fail("cpu-host-needs-kvm", notes, Stage.QEMU_START, r"unable to find CPU model 'host'")
        if host_cpu_level(facts) is None:
            return _expected("cpu-host-needs-kvm", notes, mode=None,
                             skip=f"host {facts.name}: its probe named no POWER generation for -cpu host")
    elif build.cpu_models and a["cpu"] not in build.cpu_models:
        return _expected("cpu-model-known", notes, mode=None, skip=f"{build.name} QEMU has no CPU model {a['cpu']}")

    # Refusals at QEMU start, in the order QEMU checks them.
    if build.max_cpus is not None and int(a["smp"]) > build.max_cpus:
        return _fail("smp-max-cpus", notes, Stage.QEMU_START, rf"Invalid SMP CPUs {a['smp']}\b.*max CPUs supported by machine")

    ic_mode = a["ic_mode"]
    if build.default_ic_mode == "legacy":
        # Machine versions before XIVE (pseries-3.0 and older) have only XICS and no choice.
        if ic_mode != DEFAULT:
            return _fail("legacy-machine-no-ic-mode", notes, Stage.QEMU_START,
                         r"This machine only uses the legacy XICS backend, don't pass ic-mode")
        ic_mode = "xics"
        notes.append("legacy-machine-no-ic-mode")
    if ic_mode == DEFAULT:
        if build.default_ic_mode is None:
            return _expected("ic-mode-default", notes, mode=None,
                             skip=f"{build.name} QEMU: the probe could not read the default ic-mode")
        ic_mode = build.default_ic_mode
        notes.append("ic-mode-default")
    cpu_level = (host_cpu_level(facts) or 9) if a["cpu"] == "host" else CPU_LEVEL[str(a["cpu"])]
    compat = a["cpu_compat"]
    compat_level = COMPAT_LEVEL.get(str(compat), cpu_level)
    # spapr_irq_check() asks whether the CPU can run ISA 3.00 within max-cpu-compat.
    isa300 = min(cpu_level, compat_level) >= 9
    if ic_mode == "xive" and not isa300:
        return _fail("xive-needs-power9", notes, Stage.QEMU_START, r"XIVE-only machines require a POWER9 CPU")
    if compat != DEFAULT and compat_level > cpu_level:
        return _fail("compat-above-cpu", notes, Stage.QEMU_START,
                     rf"Compatibility PVR {COMPAT_PVR[str(compat)]} not valid for CPU")
    host_level = host_cpu_level(facts)
    if accel == "kvm" and facts.kvm_mode.startswith("hv") and host_level and cpu_level != host_level:
        return _fail("kvm-hv-cpu-is-host", notes, Stage.QEMU_START, r'only "-cpu host" is possible')
    if (accel == "kvm" and facts.kvm_mode.startswith("hv") and not isa300
            and dict(facts.kvm_caps).get("KVM_CAP_PPC_MMU_HASH_V3") == 0):
        # Radix needs ISA 3.00; below it the guest has only the HPT, which such a KVM cannot give.
        return _fail("kvm-no-hpt-in-nested", notes, Stage.QEMU_START, r"HPT not supported in nested guests")

    # What the platform offers in ibm,arch-vec-5-platform-support byte 23.
    if ic_mode == "xics":
        offer, byte23, rule = "xics", "0x00", "offer-xics-only"
    elif ic_mode == "xive":
        offer, byte23, rule = "xive", "0x40", "offer-xive-only"
    elif not isa300:
        offer, byte23, rule = "xics", "0x00", "dual-below-power9-offers-xics"
    else:
        offer, byte23, rule = "both", "0x80", "offer-dual"

    # What the guest picks. A XICS-only offer decides by itself (the guest has no choice).
    if offer == "xics":
        mode = "xics"
    elif offer == "xive":
        notes.append(rule)
        mode, rule = "xive", ("xive-only-ignores-xive-off" if a["guest_xive"] == "off" else "guest-picks-xive")
    else:
        notes.append(rule)
        mode, rule = ("xics", "guest-xive-off") if a["guest_xive"] == "off" else ("xive", "guest-picks-xive")

    # Where the host runs the controller.
    kirq = a["kernel_irqchip"]
    # KVM: which in-kernel device is connected when. A XIVE-only or XICS-only machine connects
    # its one controller at init; a dual machine activates XICS at machine reset (during QEMU
    # start, before any CAS) and switches to XIVE only when CAS picks it.
    at_start = "xics" if ic_mode in ("dual", "xics") else "xive"
    if accel == "kvm" and kirq == "on" and not _in_kernel(facts, at_start):
        return _fail("kvm-irqchip-required", notes, Stage.QEMU_START, KVM_REQUIRED_ERROR[at_start])
    if accel == "kvm" and facts.kvm_mode == "pr" and compat != DEFAULT:
        # At machine reset, after the controllers' init above (measured: xive with
        # kernel-irqchip=on is refused for XIVE first).
        return _fail("kvm-pr-no-compat", notes, Stage.QEMU_START, r"Unable to set CPU compatibility mode in KVM")
    if accel == "tcg":
        notes.append("tcg-emulates")
        return _expected(rule, notes, mode=mode, byte23=byte23, irqchip="emulated")
    if kirq == "off":
        notes.append("kvm-irqchip-off")
        return _expected(rule, notes, mode=mode, byte23=byte23, irqchip="emulated")
    if kirq == "on" and not _in_kernel(facts, mode):
        return _fail("kvm-irqchip-required", notes, Stage.CAS, KVM_REQUIRED_ERROR[mode])
    if _in_kernel(facts, mode):
        notes.append("kvm-in-kernel")
        return _expected(rule, notes, mode=mode, byte23=byte23, irqchip="in-kernel")
    notes.append("kvm-fallback-emulated")
    # The first controller QEMU tries to connect and cannot says so: the reset-time one if KVM
    # lacks it, else the one CAS activates.
    first_missing = at_start if not _in_kernel(facts, at_start) else mode
    return _expected(rule, notes, mode=mode, byte23=byte23, irqchip="emulated",
                     warning=KVM_FALLBACK_WARNING[first_missing])


def _in_kernel(facts: HostFacts, mode: str) -> bool:
    return facts.kvm_xive if mode == "xive" else facts.kvm_xics


# spapr_irq_init_kvm() prefixes the connect function's own message (spapr_xive_kvm.c, xics_kvm.c).
KVM_REQUIRED_ERROR = {
    "xive": r"kernel_irqchip requested but unavailable: IRQ_XIVE capability must be present for KVM",
    "xics": r"kernel_irqchip requested but unavailable: KVM and IRQ_XICS capability must be present for in-kernel XICS",
}


# spapr_irq_init_kvm() with kernel-irqchip allowed (not given) warns and falls back to QEMU's
# emulation: "kernel_irqchip allowed but unavailable: <why>", hint "Falling back to kernel-irqchip=off".
KVM_FALLBACK_WARNING = {
    "xive": "kernel_irqchip allowed but unavailable: IRQ_XIVE capability must be present for KVM",
    "xics": "kernel_irqchip allowed but unavailable: KVM and IRQ_XICS capability must be present for in-kernel XICS",
}


def explain(e: Expected) -> str:
    what = (e.blocked and f"ERROR ({e.blocked})") or (e.skip and f"SKIP ({e.skip})") or e.mode \
        or f"fails at {e.stage}: /{e.error}/"
    return f"{what}  [{e.rule}: {RULES[e.rule].says}]"


def matches_error(e: Expected, message: str) -> bool:
    return bool(e.error) and re.search(e.error, message or "", re.S) is not None


# The interrupt controllers a machine of each ic-mode has (and migrates). pseries machines older
# than the ic-mode property ("legacy") have XICS only.
CONTROLLERS = {"xics": {"xics"}, "xive": {"xive"}, "dual": {"xics", "xive"}, "legacy": {"xics"}}


def ic_mismatches(source_ic_mode: str, guest_mode: str) -> list[tuple[str, bool]]:
    """Destination ic-modes other than the source's for a guest that negotiated `guest_mode`, each
    with whether QEMU must refuse the stream (measured on 7.2.22 and 10.0.2, cas-rules.md
    section 7):

    - a destination without the guest's controller (a XIVE guest into ic-mode=xics), or without
      a controller whose state the source sends (dual into xics or xive): refused, "Unknown
      savevm section";
    - a destination with every controller the source has, and more (xics or xive into dual):
      nothing in the stream can tell, so QEMU takes it; the guest must then live on there (a XIVE
      guest does; a XICS guest's destination aborts, a known defect).

    Never the source's own ic-mode: that is a plain migration, not a mismatch."""
    have = CONTROLLERS.get(source_ic_mode, {"xics", "xive"})
    refused = [(m, True) for m in ("xics", "xive", "dual")
               if CONTROLLERS[m] != have and (guest_mode not in CONTROLLERS[m] or not have <= CONTROLLERS[m])]
    accepted = [(m, False) for m in ("xics", "xive", "dual")
                if guest_mode in CONTROLLERS[m] and have < CONTROLLERS[m]]
    return refused + accepted
