"""harness/verdict.py decide: every branch from expected and observed to a verdict and its reason."""

from __future__ import annotations

import pytest

from harness.cell import Expected, GuestView, HostView, Observed, Verdict
from harness.model import predict
from harness.verdict import decide

from .factories import TCG_HOST, make_cell

XIVE_NEEDS_P9 = "XIVE-only machines require a POWER9 CPU"


def expected(mode="xive", byte23="0x80", irqchip="emulated", **kw) -> Expected:
    return Expected(mode=mode, rule=kw.pop("rule", "guest-picks-xive"), source="test", byte23=byte23,
                    irqchip=irqchip, **kw)


def refusal(pattern=XIVE_NEEDS_P9, stage="qemu-start") -> Expected:
    return Expected(mode=None, rule="xive-needs-power9", source="test", error=pattern, stage=stage)


def guest(mode: str | None, *, chips=None, dt=None, dmesg=None, byte23="0x80") -> GuestView:
    chips, dt, dmesg = (mode if x is None else x for x in (chips, dt, dmesg))
    return GuestView(mode_from_chips=chips or None, mode_from_dt=dt or None, mode_from_dmesg=dmesg or None,
                     platform_support=byte23)


def observed(mode="xive", *, host_mode=None, irqchip="emulated", byte23="0x80", g: GuestView | None = None) -> Observed:
    g = g or guest(mode, byte23=byte23)
    return Observed(mode=mode, platform_support=byte23, guest=g,
                    host=HostView(mode=host_mode or mode, irqchip=irqchip, configured_ic_mode="dual"))


def failed(error: str, stage: str = "qemu-start", infra: bool = False, kind: str = "QemuRefused",
           exit_code: int = 1) -> Observed:
    return Observed(error=error, stage=stage, infra=infra, exit_code=exit_code, error_kind=kind)


# ---------------------------------------------------------------- PASS


@pytest.mark.parametrize("mode, byte23", [("xive", "0x80"), ("xics", "0x00"), ("xive", "0x40")])
def test_pass(mode, byte23):
    v, why = decide(expected(mode, byte23, rule="r1"), observed(mode, byte23=byte23))
    assert (v, why) == (Verdict.PASS, f"{mode} as predicted by r1")


def test_pass_without_byte23_or_irqchip_expectations():
    v, _ = decide(expected("xics", None, None), observed("xics", byte23=None, irqchip=None))
    assert v is Verdict.PASS


def test_pass_from_the_models_own_prediction():
    e = predict(make_cell(ic_mode="dual", guest_xive="off"), TCG_HOST)
    assert decide(e, observed("xics", byte23="0x80"))[0] is Verdict.PASS


# ---------------------------------------------------------------- FAIL: the system under test misbehaved


def test_fail_on_the_wrong_mode():
    v, why = decide(expected("xive", rule="guest-picks-xive"), observed("xics"))
    assert v is Verdict.FAIL
    assert why == "negotiated xics, expected xive (guest-picks-xive)"


def test_fail_on_the_wrong_byte23():
    v, why = decide(expected("xics", "0x00"), observed("xics", byte23="0x80"))
    assert (v, why) == (Verdict.FAIL, "platform offer byte 23 is 0x80, expected 0x00")


def test_fail_on_the_wrong_irqchip():
    v, why = decide(expected("xive", irqchip="in-kernel"), observed("xive", irqchip="emulated"))
    assert (v, why) == (Verdict.FAIL, "irqchip is emulated, expected in-kernel")


def test_fail_lists_every_problem():
    v, why = decide(expected("xive", "0x80", "in-kernel"), observed("xics", byte23="0x00"))
    assert v is Verdict.FAIL
    assert why.split("; ") == ["negotiated xics, expected xive (guest-picks-xive)",
                               "platform offer byte 23 is 0x00, expected 0x80", "irqchip is emulated, expected in-kernel"]


def test_fail_when_guest_and_host_disagree():
    o = observed("xive", host_mode="xics")
    o.mode = None
    v, why = decide(expected("xive"), o)
    assert (v, why) == (Verdict.FAIL, "guest view says xive but host view (info pic) says xics")


def test_fail_when_the_guests_own_signals_disagree():
    o = observed(g=guest(None, chips="xive", dt="xics", dmesg="xive"))
    v, why = decide(expected("xive"), o)
    assert v is Verdict.FAIL
    assert why == "the guest's own signals disagree: /proc/interrupts=xive, device tree=xics, dmesg=xive"


def test_fail_when_a_mode_was_expected_but_qemu_refused():
    v, why = decide(expected("xive", rule="offer-dual"), failed(XIVE_NEEDS_P9))
    assert v is Verdict.FAIL
    assert why == f"expected xive (offer-dual), but it failed at qemu-start: {XIVE_NEEDS_P9}"


def test_fail_when_the_guest_panicked():
    v, _ = decide(expected("xive"), failed("Kernel panic - not syncing: VFS", stage="guest"))
    assert v is Verdict.FAIL


# ---------------------------------------------------------------- expected refusals


def test_xfail_when_the_predicted_refusal_happened():
    v, why = decide(refusal(), failed(XIVE_NEEDS_P9))
    assert v is Verdict.XFAIL
    assert why == f"failed at qemu-start as predicted by xive-needs-power9: {XIVE_NEEDS_P9}"


def test_xfail_matches_the_pattern_anywhere_in_the_message():
    v, _ = decide(refusal(r"Compatibility PVR 0x0f000006 not valid for CPU"),
                  failed("Compatibility PVR 0x0f000006 not valid for CPU; Unable to set CPU compatibility mode"))
    assert v is Verdict.XFAIL


@pytest.mark.parametrize("kind,code", [("QemuCrashed", -6), ("QemuCrashed", -11), ("QemuCrashed", 134)])
def test_the_predicted_words_from_a_qemu_that_crashed_are_no_refusal(kind, code):
    # QEMU printed the predicted line, then aborted or died of a signal: a crash, not the refusal.
    v, why = decide(refusal(), failed(f"QEMU crashed: {XIVE_NEEDS_P9}", kind=kind, exit_code=code))
    assert v is Verdict.FAIL and "did not exit cleanly" in why and kind in why


def test_fail_when_the_expected_refusal_did_not_happen():
    v, why = decide(refusal(), observed("xive"))
    assert v is Verdict.FAIL
    assert why == (f"xive-needs-power9 predicted a failure at qemu-start matching /{XIVE_NEEDS_P9}/, "
                   "but the guest booted in xive")


def test_fail_when_the_expected_refusal_did_not_happen_and_no_mode_was_seen():
    v, why = decide(refusal(), Observed())
    assert v is Verdict.FAIL and why.endswith("but the guest booted in an undetermined mode")


def test_fail_when_the_refusal_message_differs():
    v, why = decide(refusal(), failed("Compatibility PVR 0x0f000006 not valid for CPU"))
    assert v is Verdict.FAIL
    assert why.endswith("but it failed at qemu-start: Compatibility PVR 0x0f000006 not valid for CPU")


def test_fail_when_the_refusal_came_at_another_stage():
    v, why = decide(refusal(stage="qemu-start"), failed(XIVE_NEEDS_P9, stage="cas"))
    assert v is Verdict.FAIL
    assert f"but it failed at cas: {XIVE_NEEDS_P9}" in why


# ---------------------------------------------------------------- ERROR: could not judge; SKIP


@pytest.mark.parametrize("e", [expected("xive"), refusal()], ids=["mode", "refusal"])
def test_error_on_infrastructure_failure(e):
    # Even when the message looks like the predicted one: an infra failure is never judged.
    v, why = decide(e, failed(f"QEMU went away (exit code -9): {XIVE_NEEDS_P9}", infra=True))
    assert (v, why) == (Verdict.ERROR, f"QEMU went away (exit code -9): {XIVE_NEEDS_P9}")


def test_error_on_infrastructure_failure_without_a_message():
    assert decide(expected(), Observed(infra=True)) == (Verdict.ERROR, "infrastructure failure")


@pytest.mark.parametrize("o", [Observed(mode="xive"), Observed(mode="xive", guest=GuestView()),
                               Observed(mode="xive", host=HostView(mode="xive"))])
def test_error_when_the_outcome_was_not_observed(o):
    assert decide(expected(), o) == (Verdict.ERROR, "the outcome was not observed")


def test_error_when_the_guest_shows_no_mode_at_all():
    v, why = decide(expected(), observed(g=guest(None)))
    assert v is Verdict.ERROR and why.startswith("the guest's output shows no interrupt mode")


def test_error_when_info_pic_shows_no_mode():
    o = observed("xive")
    o.host = HostView(mode=None, irqchip="emulated")
    assert decide(expected(), o) == (Verdict.ERROR, "QMP info pic shows neither XIVE nor XICS")


@pytest.mark.parametrize("o", [Observed(), failed("boom", infra=True), observed("xics")])
def test_skip_whatever_was_observed(o):
    e = Expected(mode=None, rule="host-has-kvm", source="test", skip="host local has no KVM")
    assert decide(e, o) == (Verdict.SKIP, "host local has no KVM")


# ------------------------------------------- one decide: workloads and the migration, with the boot


from harness.records import MigrationResult, WorkloadResult  # noqa: E402

BOOTS = {  # the boot's evidence, by the verdict it alone gives
    "PASS": lambda: (expected("xive"), observed("xive")),
    "FAIL": lambda: (expected("xive"), observed("xics", byte23="0x00")),
    "XFAIL": lambda: (refusal(), failed(XIVE_NEEDS_P9)),
    "ERROR": lambda: (expected("xive"), Observed(error="no answer", infra=True)),
}


def _w(name, verdict, reason="r"):
    return WorkloadResult(name, verdict, reason)


@pytest.mark.parametrize("boot,wls,want", [
    ("PASS", [_w("ipi", "PASS"), _w("virtio-net", "PASS")], Verdict.PASS),
    ("PASS", [_w("ipi", "PASS"), _w("virtio-net", "FAIL")], Verdict.FAIL),
    ("PASS", [_w("ipi", "ERROR"), _w("virtio-net", "FAIL")], Verdict.FAIL),
    ("PASS", [_w("ipi", "ERROR"), _w("virtio-net", "PASS")], Verdict.ERROR),
    ("PASS", [_w("ipi", "SKIP"), _w("virtio-net", "PASS")], Verdict.PASS),
    ("PASS", [], Verdict.ERROR),  # asked for workloads, none ran
    ("FAIL", [_w("ipi", "PASS")], Verdict.FAIL),
    ("XFAIL", [], Verdict.XFAIL),
    ("ERROR", [], Verdict.ERROR),
])
def test_workloads_can_only_make_a_passing_boot_worse(boot, wls, want):
    v, reason = decide(*BOOTS[boot](), wls, asked=("ipi", "virtio-net"))
    assert v == want
    if want == Verdict.FAIL and boot == "PASS":
        assert "workload virtio-net" in reason


def test_a_cell_without_workloads_is_its_boot():
    assert decide(*BOOTS["PASS"]()) == decide(*BOOTS["PASS"](), [], asked=())


@pytest.mark.parametrize("mig,want", [
    (MigrationResult("roundtrip", verdict=Verdict.PASS, reason="2 hop(s) healthy"), Verdict.PASS),
    (MigrationResult("roundtrip", verdict=Verdict.FAIL, reason="hop B: no heartbeat"), Verdict.FAIL),
    (MigrationResult("roundtrip", verdict=Verdict.XFAIL, reason="hop B [known issue k1]"), Verdict.XFAIL),
    (MigrationResult("roundtrip", verdict=Verdict.ERROR, reason="destination died"), Verdict.ERROR),
    (None, Verdict.ERROR),  # the plan was asked for and never ran
])
def test_the_migration_folds_into_a_passing_cell(mig, want):
    v, reason = decide(*BOOTS["PASS"](), [_w("ipi", "PASS")], mig, asked=("ipi",), plan="roundtrip")
    assert v == want
    assert ("migration roundtrip" in reason) == (mig is not None)


@pytest.mark.parametrize("boot,wls", [("FAIL", []), ("PASS", [_w("ipi", "FAIL")])])
def test_a_passing_migration_never_hides_a_failed_boot_or_workload(boot, wls):
    mig = MigrationResult("roundtrip", verdict=Verdict.PASS, reason="2 hop(s) healthy")
    assert decide(*BOOTS[boot](), wls, mig, asked=("ipi",) if wls else (), plan="roundtrip")[0] == Verdict.FAIL
