"""harness/model.py: predict(cell, facts), rule by rule, then every TCG combination against the
outcomes measured on QEMU 7.2 (cas-rules.md sections 1-3)."""

from __future__ import annotations

from dataclasses import replace

import itertools
from collections import Counter

import pytest

from harness.cell import Stage
from harness.model import RULES, predict, explain, matches_error

from .factories import HV_HOST, NESTED_HOST, PR_BARE_HOST, TCG_HOST, make_build, make_cell, make_facts

XIVE_NEEDS_P9 = "XIVE-only machines require a POWER9 CPU"
# What QEMU 7.2 prints on stderr (cellrun keeps the text after "qemu-system-ppc64: ").
PVR_MSG = {"power9": "Compatibility PVR 0x0f000005 not valid for CPU",
           "power10": "Compatibility PVR 0x0f000006 not valid for CPU"}
KVM_XIVE_REQUIRED = "kernel_irqchip requested but unavailable: IRQ_XIVE capability must be present for KVM"
# hw/intc/xics_kvm.c xics_kvm_connect(), prefixed by spapr_irq_init_kvm().
KVM_XICS_REQUIRED = ("kernel_irqchip requested but unavailable: "
                     "KVM and IRQ_XICS capability must be present for in-kernel XICS")


def assert_refused(e, rule: str, stage: Stage, message: str) -> None:
    assert (e.mode, e.rule, e.stage, e.skip) == (None, rule, stage.value, None)
    assert matches_error(e, message), f"/{e.error}/ does not match {message!r}"


def assert_mode(e, rule: str, mode: str, byte23: str, irqchip: str) -> None:
    assert (e.rule, e.mode, e.byte23, e.irqchip, e.error, e.stage, e.skip) == (
        rule, mode, byte23, irqchip, None, None, None)


# ---------------------------------------------------------------- can the host offer the cell


def test_kvm_cell_on_a_host_without_kvm_is_skip():
    e = predict(make_cell(accel="kvm"), TCG_HOST)
    assert (e.rule, e.mode, e.error) == ("host-has-kvm", None, None)
    assert e.skip == "host local has no KVM"


def test_a_build_that_was_not_probed_is_blocked_never_skip():
    e = predict(make_cell(qemu="backports"), TCG_HOST)
    assert (e.rule, e.mode, e.error, e.skip) == ("qemu-build-usable", None, None, None)
    assert "'backports'" in e.blocked and "not probed" in e.blocked


def test_a_build_whose_probe_failed_is_blocked_with_the_probe_error():
    # SKIP means "the host cannot offer this by its facts"; a build the inventory names that
    # cannot run is the host's failure (ERROR), so a broken farm host never comes out green.
    facts = make_facts(builds=(make_build(), make_build("mine", error="binary not found: /opt/q")))
    e = predict(make_cell(qemu="mine"), facts)
    assert e.rule == "qemu-build-usable" and e.skip is None
    assert e.blocked.endswith("binary not found: /opt/q")


def test_cpu_model_the_build_lacks_is_skip():
    facts = make_facts(builds=(make_build(cpu_models=("POWER8", "POWER9")),))
    e = predict(make_cell(cpu="POWER10"), facts)
    assert (e.rule, e.mode) == ("cpu-model-known", None)
    assert "POWER10" in e.skip


def test_pr_host_without_in_kernel_devices_is_noted():
    e = predict(make_cell(accel="kvm", ic_mode="xics", firmware="slof"), PR_BARE_HOST)
    assert "pr-kvm-untestable" in e.notes
    assert (e.mode, e.irqchip) == ("xics", "emulated")


# ---------------------------------------------------------------- refusals at QEMU start


@pytest.mark.parametrize("smp, refused", [(4096, False), (4097, True), (5000, True)])
def test_smp_above_the_machines_max_cpus_is_refused_at_start(smp, refused):
    e = predict(make_cell(smp=smp), TCG_HOST)
    if refused:
        assert_refused(e, "smp-max-cpus", Stage.QEMU_START,
                       f"Invalid SMP CPUs {smp}. The max CPUs supported by machine 'pseries-7.2' is 4096")
        assert not matches_error(e, "Invalid SMP CPUs 40971. The max CPUs supported by machine 'x' is 4096")
    else:
        assert (e.mode, e.error) == ("xive", None)


def test_smp_is_unchecked_when_the_probe_found_no_max_cpus():
    facts = make_facts(builds=(make_build(max_cpus=None),))
    assert predict(make_cell(smp=100000), facts).mode == "xive"


@pytest.mark.parametrize("ic_mode,expected", [("default", "xics"), ("dual", None)])
def test_legacy_machine_versions_are_xics_only_and_refuse_ic_mode(ic_mode, expected):
    # Measured: pseries-3.0 and older report ic-mode "legacy" and refuse any ic-mode option.
    host = make_facts(builds=(make_build(default_ic_mode="legacy"),))
    e = predict(make_cell(ic_mode=ic_mode), host)
    if expected:
        assert (e.mode, e.byte23, e.error) == ("xics", "0x00", None)
        assert "legacy-machine-no-ic-mode" in e.notes
    else:
        assert_refused(e, "legacy-machine-no-ic-mode", Stage.QEMU_START,
                       "This machine only uses the legacy XICS backend, don't pass ic-mode")


def test_unknown_default_ic_mode_is_skipped_not_guessed():
    host = make_facts(builds=(make_build(default_ic_mode=None),))
    e = predict(make_cell(), host)
    assert e.skip and "default ic-mode" in e.skip


def test_xive_with_power8_compat_is_refused_with_qemus_message():
    e = predict(make_cell(ic_mode="xive", cpu_compat="power8"), TCG_HOST)
    assert_refused(e, "xive-needs-power9", Stage.QEMU_START, XIVE_NEEDS_P9)


@pytest.mark.parametrize("cpu, compat, message", [
    ("POWER9", "power10", "Compatibility PVR 0x0f000006 not valid for CPU"),
    ("POWER8", "power9", "Compatibility PVR 0x0f000005 not valid for CPU"),
    ("POWER8", "power10", "Compatibility PVR 0x0f000006 not valid for CPU"),
])
def test_compat_above_the_cpu_is_refused(cpu, compat, message):
    e = predict(make_cell(cpu=cpu, cpu_compat=compat, ic_mode="dual"), TCG_HOST)
    assert_refused(e, "compat-above-cpu", Stage.QEMU_START, message)
    other = PVR_MSG["power9" if compat == "power10" else "power10"]
    assert not matches_error(e, other), "the PVR in the pattern must be the compat level's"


def test_power8_cpu_with_xive_and_power10_compat_fails_on_xive_first():
    # Measured: QEMU checks the interrupt controller before the compat level.
    e = predict(make_cell(cpu="POWER8", ic_mode="xive", cpu_compat="power10"), TCG_HOST)
    assert_refused(e, "xive-needs-power9", Stage.QEMU_START, XIVE_NEEDS_P9)
    assert not matches_error(e, PVR_MSG["power10"])


# ---------------------------------------------------------------- the offer and the guest's choice


@pytest.mark.parametrize("build_default, mode, byte23, rule", [
    ("dual", "xive", "0x80", "guest-picks-xive"),
    ("xics", "xics", "0x00", "offer-xics-only"),
    ("xive", "xive", "0x40", "guest-picks-xive"),
])
def test_ic_mode_default_resolves_from_the_probed_build(build_default, mode, byte23, rule):
    facts = make_facts(builds=(make_build(default_ic_mode=build_default),))
    e = predict(make_cell(ic_mode="default"), facts)
    assert_mode(e, rule, mode, byte23, "emulated")
    assert "ic-mode-default" in e.notes


def test_given_ic_mode_does_not_note_the_default():
    assert "ic-mode-default" not in predict(make_cell(ic_mode="dual"), TCG_HOST).notes


@pytest.mark.parametrize("guest_xive, mode, rule", [
    ("default", "xive", "guest-picks-xive"),
    ("off", "xive", "xive-only-ignores-xive-off"),
])
def test_xive_off_is_ignored_on_a_xive_only_machine(guest_xive, mode, rule):
    e = predict(make_cell(ic_mode="xive", guest_xive=guest_xive), TCG_HOST)
    assert_mode(e, rule, mode, "0x40", "emulated")
    assert "offer-xive-only" in e.notes


@pytest.mark.parametrize("guest_xive", ["default", "off"])
@pytest.mark.parametrize("ic_mode", ["default", "dual", "xics"])
def test_power8_compat_forces_xics_only(ic_mode, guest_xive):
    e = predict(make_cell(ic_mode=ic_mode, cpu_compat="power8", guest_xive=guest_xive), TCG_HOST)
    rule = "offer-xics-only" if ic_mode == "xics" else "dual-below-power9-offers-xics"
    assert_mode(e, rule, "xics", "0x00", "emulated")


@pytest.mark.parametrize("guest_xive", ["default", "off"])
def test_power8_cpu_with_dual_offers_xics_only(guest_xive):
    e = predict(make_cell(cpu="POWER8", ic_mode="dual", guest_xive=guest_xive), TCG_HOST)
    assert_mode(e, "dual-below-power9-offers-xics", "xics", "0x00", "emulated")


@pytest.mark.parametrize("cpu", ["POWER9", "POWER10"])
@pytest.mark.parametrize("guest_xive, mode, rule", [
    ("default", "xive", "guest-picks-xive"),
    ("off", "xics", "guest-xive-off"),
])
def test_dual_on_power9_and_power10_lets_the_guest_choose(cpu, guest_xive, mode, rule):
    e = predict(make_cell(cpu=cpu, ic_mode="dual", guest_xive=guest_xive), TCG_HOST)
    assert_mode(e, rule, mode, "0x80", "emulated")
    assert "offer-dual" in e.notes


@pytest.mark.parametrize("cpu", ["POWER9", "POWER10"])
def test_xics_on_power9_and_power10(cpu):
    assert_mode(predict(make_cell(cpu=cpu, ic_mode="xics"), TCG_HOST), "offer-xics-only", "xics", "0x00", "emulated")


@pytest.mark.parametrize("kirq", ["default", "on", "off"])
@pytest.mark.parametrize("ic_mode, mode", [("dual", "xive"), ("xics", "xics"), ("xive", "xive")])
def test_kernel_irqchip_has_no_effect_under_tcg(ic_mode, mode, kirq):
    e = predict(make_cell(ic_mode=ic_mode, kernel_irqchip=kirq), TCG_HOST)
    assert (e.mode, e.irqchip, e.error) == (mode, "emulated", None)
    assert "tcg-emulates" in e.notes
    assert "kvm-irqchip-off" not in e.notes


# ---------------------------------------------------------------- KVM hosts (synthetic HostFacts)


@pytest.mark.parametrize("kirq", ["default", "on"])
@pytest.mark.parametrize("ic_mode, guest_xive, mode", [
    ("dual", "default", "xive"), ("dual", "off", "xics"), ("xics", "default", "xics"), ("xive", "off", "xive"),
])
def test_bare_metal_hv_runs_both_controllers_in_kernel(ic_mode, guest_xive, mode, kirq):
    e = predict(make_cell(accel="kvm", ic_mode=ic_mode, guest_xive=guest_xive, kernel_irqchip=kirq), HV_HOST)
    assert (e.mode, e.irqchip, e.error) == (mode, "in-kernel", None)
    assert "kvm-in-kernel" in e.notes


@pytest.mark.parametrize("host", [HV_HOST, NESTED_HOST], ids=["hv", "hv-nested"])
@pytest.mark.parametrize("ic_mode, mode", [("dual", "xive"), ("xics", "xics"), ("xive", "xive")])
def test_kernel_irqchip_off_emulates_under_kvm(host, ic_mode, mode):
    e = predict(make_cell(accel="kvm", ic_mode=ic_mode, kernel_irqchip="off"), host)
    assert (e.mode, e.irqchip, e.error) == (mode, "emulated", None)
    assert "kvm-irqchip-off" in e.notes and "tcg-emulates" not in e.notes


@pytest.mark.parametrize("ic_mode", ["dual", "xive"])
def test_nested_hv_xive_allowed_but_unavailable_falls_back_to_emulation(ic_mode):
    e = predict(make_cell(accel="kvm", ic_mode=ic_mode), NESTED_HOST)
    assert (e.mode, e.irqchip, e.error) == ("xive", "emulated", None)
    assert "kvm-fallback-emulated" in e.notes


@pytest.mark.parametrize("ic_mode, stage", [("xive", Stage.QEMU_START), ("dual", Stage.CAS)])
def test_nested_hv_xive_required_but_unavailable_fails(ic_mode, stage):
    # A XIVE-only machine connects at init; a dual one when CAS switches to XIVE.
    e = predict(make_cell(accel="kvm", ic_mode=ic_mode, kernel_irqchip="on"), NESTED_HOST)
    assert_refused(e, "kvm-irqchip-required", stage, KVM_XIVE_REQUIRED)


@pytest.mark.parametrize("kirq", ["default", "on"])
@pytest.mark.parametrize("ic_mode, guest_xive", [("xics", "default"), ("dual", "off")])
def test_nested_hv_xics_is_in_kernel(ic_mode, guest_xive, kirq):
    e = predict(make_cell(accel="kvm", ic_mode=ic_mode, guest_xive=guest_xive, kernel_irqchip=kirq), NESTED_HOST)
    assert (e.mode, e.irqchip, e.error) == ("xics", "in-kernel", None)


def test_xics_required_but_unavailable_matches_qemus_xics_message():
    e = predict(make_cell(accel="kvm", ic_mode="xics", kernel_irqchip="on", firmware="slof"), PR_BARE_HOST)
    assert_refused(e, "kvm-irqchip-required", Stage.QEMU_START, KVM_XICS_REQUIRED)


@pytest.mark.parametrize("guest_xive", ["default", "off"])
def test_dual_without_in_kernel_xics_fails_at_start_when_required(guest_xive):
    # hw/ppc/spapr_irq.c spapr_irq_update_active_intc(), called by spapr_irq_reset() at start.
    e = predict(make_cell(accel="kvm", ic_mode="dual", guest_xive=guest_xive, kernel_irqchip="on", firmware="slof"), PR_BARE_HOST)
    assert e.stage == Stage.QEMU_START.value


# ---------------------------------------------------------------- every TCG combination, measured


def measured(cpu: str, compat: str, ic_mode: str, guest_xive: str) -> tuple[str | None, str | None, str | None]:
    """(mode, byte23, error message) as QEMU 7.2 and a Debian 6.1 guest produced them under TCG."""
    level = {"POWER8": 8, "POWER9": 9, "POWER10": 10}[cpu]
    compat_level = {"default": level, "power8": 8, "power9": 9, "power10": 10}[compat]
    low = min(level, compat_level)
    if ic_mode == "xive":
        if low < 9:
            return None, None, XIVE_NEEDS_P9
        if compat_level > level:
            return None, None, PVR_MSG[compat]
        return "xive", "0x40", None
    if compat_level > level:
        return None, None, PVR_MSG[compat]
    if ic_mode == "xics" or low < 9:
        return "xics", "0x00", None
    return ("xics" if guest_xive == "off" else "xive"), "0x80", None


COMBOS = list(itertools.product(["POWER8", "POWER9", "POWER10"], ["default", "power8", "power9", "power10"],
                                ["default", "dual", "xics", "xive"], ["default", "off"]))


def test_the_table_covers_the_whole_tcg_cas_space():
    assert len(COMBOS) == 96
    errors = Counter(measured(*c)[2] for c in COMBOS)
    # XIVE below POWER9: every POWER8 cpu (8) and compat power8 on POWER9/10 (4); compat above the
    # CPU: POWER9+power10 (8) and POWER8+power9/10 outside ic-mode=xive (12).
    assert errors == {None: 64, XIVE_NEEDS_P9: 12, PVR_MSG["power10"]: 14, PVR_MSG["power9"]: 6}


@pytest.mark.parametrize("cpu, compat, ic_mode, guest_xive", COMBOS, ids=["-".join(c) for c in COMBOS])
def test_every_tcg_combination_matches_the_measured_table(cpu, compat, ic_mode, guest_xive):
    mode, byte23, error = measured(cpu, compat, ic_mode, guest_xive)
    e = predict(make_cell(cpu=cpu, cpu_compat=compat, ic_mode=ic_mode, guest_xive=guest_xive), TCG_HOST)
    if error:
        assert (e.mode, e.stage, e.byte23) == (None, Stage.QEMU_START.value, None)
        assert matches_error(e, error), f"/{e.error}/ does not match {error!r}"
        for other in {XIVE_NEEDS_P9, *PVR_MSG.values()} - {error}:
            assert not matches_error(e, other), f"/{e.error}/ also matches {other!r}"
    else:
        assert (e.mode, e.byte23, e.irqchip, e.error, e.skip) == (mode, byte23, "emulated", None, None)


# ---------------------------------------------------------------- every rule is reachable and cited


EXAMPLES = [
    (make_cell(accel="kvm"), TCG_HOST),
    (make_cell(accel="kvm", ic_mode="xics", firmware="slof"), PR_BARE_HOST),
    (make_cell(qemu="nope"), TCG_HOST),
    (make_cell(cpu="POWER10"), make_facts(builds=(make_build(cpu_models=("POWER9",)),))),
    (make_cell(smp=9999), TCG_HOST),
    (make_cell(ic_mode="xics"), make_facts(builds=(make_build(default_ic_mode="legacy"),))),
    (make_cell(ic_mode="xive", cpu_compat="power8"), TCG_HOST),
    (make_cell(cpu_compat="power10"), TCG_HOST),
    (make_cell(), TCG_HOST),
    (make_cell(ic_mode="xics"), TCG_HOST),
    (make_cell(ic_mode="xive", guest_xive="off"), TCG_HOST),
    (make_cell(cpu="POWER8"), TCG_HOST),
    (make_cell(guest_xive="off"), TCG_HOST),
    (make_cell(accel="kvm", kernel_irqchip="off"), HV_HOST),
    (make_cell(accel="kvm"), HV_HOST),
    (make_cell(accel="kvm", kernel_irqchip="on"), NESTED_HOST),
    (make_cell(accel="kvm"), NESTED_HOST),
    (make_cell(accel="kvm", cpu="POWER10"), NESTED_HOST),  # a POWER10 guest on a POWER9 HV host
    (make_cell(cpu="host"), TCG_HOST),  # -cpu host under TCG
    (make_cell(accel="kvm", firmware="vof"), PR_BARE_HOST),  # VOF under PR KVM
    # A max-cpu-compat under PR KVM (no KVM_REG_PPC_ARCH_COMPAT there).
    (make_cell(accel="kvm", cpu_compat="power9", firmware="slof"), replace(PR_BARE_HOST, kvm_xics=True)),
    # A POWER8-compat guest where HV KVM has no HPT (nested: KVM_CAP_PPC_MMU_HASH_V3 = 0).
    (make_cell(accel="kvm", cpu_compat="power8"), replace(NESTED_HOST, kvm_caps=(("KVM_CAP_PPC_MMU_HASH_V3", 0),))),
]


def test_every_rule_is_reached_by_an_example():
    reached = set()
    for cell, facts in EXAMPLES:
        e = predict(cell, facts)
        reached |= {e.rule, *e.notes}
    assert reached == set(RULES)


@pytest.mark.parametrize("cell, facts", EXAMPLES)
def test_expected_cites_its_rules_source(cell, facts):
    e = predict(cell, facts)
    assert e.source == RULES[e.rule].source
    assert all(n in RULES for n in e.notes)
    assert e.rule not in e.notes


@pytest.mark.parametrize("cell, starts", [
    (make_cell(), "xive  [guest-picks-xive: "),
    (make_cell(accel="kvm"), "SKIP (host local has no KVM)  [host-has-kvm: "),
    (make_cell(ic_mode="xive", cpu="POWER8"), f"fails at qemu-start: /{XIVE_NEEDS_P9}/  [xive-needs-power9: "),
])
def test_explain(cell, starts):
    assert explain(predict(cell, TCG_HOST)).startswith(starts)


def test_matches_error_is_false_without_an_expected_error():
    e = predict(make_cell(), TCG_HOST)
    assert not matches_error(e, "anything")


@pytest.mark.parametrize("ic_mode,kirq,compat,rule,stage", [
    ("dual", "default", "power9", "kvm-pr-no-compat", "qemu-start"),
    ("dual", "on", "power8", "kvm-pr-no-compat", "qemu-start"),  # before CAS could refuse XIVE
    ("xics", "off", "power9", "kvm-pr-no-compat", "qemu-start"),
    ("xive", "on", "power9", "kvm-irqchip-required", "qemu-start"),  # the controller's init comes first
    ("xive", "default", "power8", "xive-needs-power9", "qemu-start"),
    ("dual", "default", "default", "guest-picks-xive", None),
])
def test_pr_kvm_refuses_any_compat_mode_at_start_after_the_controllers_init(ic_mode, kirq, compat, rule, stage):
    pr = replace(PR_BARE_HOST, kvm_xics=True)  # what caskit's pr host probes
    e = predict(make_cell(accel="kvm", ic_mode=ic_mode, kernel_irqchip=kirq, cpu_compat=compat, firmware="slof"), pr)
    assert (e.rule, e.stage) == (rule, stage)
    if rule == "kvm-pr-no-compat":
        assert matches_error(e, "qemu-system-ppc64: Unable to set CPU compatibility mode in KVM: Invalid argument")

