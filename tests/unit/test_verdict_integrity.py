"""No failure hidden as PASS, XFAIL or SKIP: the pure parts that decide it.

The error tree and its one classification, what the end of a QEMU process means, heartbeat
continuity across a hop, known issues that must explain every signal of a hop, and kernel
findings that fail a cell that otherwise passed."""

from __future__ import annotations

import signal

import pytest

from harness import errors, qemu_exit
from harness.cell import GuestView, HostView, Observed, Verdict
from harness.errors import Kind, classify
from harness.heartbeat import Beat, continuity, liveness
from harness.migration import known_issues as ki
from harness.model import predict
from harness.verdict import decide

from .factories import TCG_HOST, make_cell


# -- one tree, one classification -----------------------------------------------------------

SUT = [errors.GuestPanic("boot", "Kernel panic - not syncing: x"), errors.GuestHang("hung"),
       errors.QemuCrashed("c", -11, ""), errors.QemuHung("h"), errors.QemuRefused("no", 1, ""),
       errors.GuestPoweredOff("off"), errors.WorkloadFailed("w"), errors.MigrationStuck("m")]
OURS = [errors.ConfigError("f", "k", "m"), errors.KitError("k"), errors.HostError("h"),
        errors.QemuKilled("k", -9, ""), errors.NoGuestOutput("n"), errors.ObserveError("o"),
        errors.QmpCommandError("c", {}, "r"), errors.PinRefused("p"), errors.NoPeer("n"),
        errors.GuestTimeout("x", 1, ""), errors.QemuDied("d", None, ""), errors.QmpLost("l"),
        errors.LaunchFailure("l", None, "", [])]


@pytest.mark.parametrize("e", SUT, ids=lambda e: type(e).__name__)
def test_the_system_misbehaving_is_fail(e):
    assert isinstance(e, errors.CaskitError) and classify(e)[1] is Kind.FAIL


@pytest.mark.parametrize("e", OURS, ids=lambda e: type(e).__name__)
def test_what_we_cannot_judge_is_error(e):
    assert isinstance(e, errors.CaskitError) and classify(e)[1] is Kind.ERROR


def test_every_caskit_exception_is_in_the_tree():
    import importlib

    mods = [importlib.import_module(m) for m in (
        "harness.console", "harness.interrupts", "harness.hosts.ssh", "harness.pytest_plugin", "harness.qmp",
        "harness.observe", "harness.workloads.base", "harness.migration.domains")]

    def walk(c):
        yield c
        for s in c.__subclasses__():
            yield from walk(s)
    tree = set(walk(errors.CaskitError))
    for m in mods:
        for obj in vars(m).values():
            if isinstance(obj, type) and issubclass(obj, Exception) and obj.__module__.startswith("harness"):
                assert obj in tree, f"{m.__name__}.{obj.__name__} is outside the error tree"


def test_a_harness_bug_is_error():
    assert classify(KeyError("x"))[1] is Kind.ERROR


def test_skip_is_only_a_workload_that_cannot_run():
    assert classify(errors.WorkloadSkipped("1 vCPU"))[1] is Kind.SKIP


# -- what the end of QEMU means ---------------------------------------------------------------

@pytest.mark.parametrize("code,stderr,cls", [
    (-signal.SIGSEGV, "", errors.QemuCrashed),
    (-signal.SIGABRT, "qemu-system-ppc64: ../hw/intc/xics.c:123: icp_irq: Assertion `x' failed.\n", errors.QemuCrashed),
    (-signal.SIGBUS, "", errors.QemuCrashed),
    (-signal.SIGKILL, "", errors.QemuKilled),  # the OOM killer, an operator, a timeout
    (-signal.SIGTERM, "", errors.QemuKilled),
    (0, "qemu-system-ppc64: terminating on signal 15 from pid 4271 (timeout)\n", errors.QemuKilled),
    (1, "qemu-system-ppc64: warning: TCG doesn't support requested feature, cap-cfpc=workaround\n"
        "qemu-system-ppc64: XIVE-only machines require a POWER9 CPU\n", errors.QemuRefused),
    (1, "", errors.QemuCrashed),  # exit 1 without saying why is no refusal
    (0, "", errors.GuestPoweredOff),
    (2, "", errors.QemuCrashed),
    (134, "", errors.QemuCrashed),
])
def test_the_end_of_qemu(code, stderr, cls):
    assert type(qemu_exit.cause(code, stderr)) is cls


def test_a_refusal_keeps_qemus_words_without_warnings():
    e = qemu_exit.cause(1, "qemu-system-ppc64: warning: w\nqemu-system-ppc64: Guest requested unavailable "
                           "interrupt mode (XICS), either don't set the ic-mode property or ...\n")
    assert isinstance(e, errors.QemuRefused) and e.error_line.startswith("Guest requested unavailable interrupt mode")


def test_a_dropped_connection_is_the_hosts():
    assert type(qemu_exit.cause(-1, "", dropped=True, host="p9")) is errors.HostError


# -- heartbeat continuity across a hop ---------------------------------------------------------

def test_the_destination_carries_on_from_the_source():
    assert continuity(Beat(1.0, 41, 8.2), Beat(5.0, 42, 8.4)) is None
    assert continuity(Beat(1.0, 41, 8.2), Beat(5.0, 43, 8.6)) is None  # one beat torn by the hop


def test_a_restart_from_zero_is_a_reboot():
    why = continuity(Beat(1.0, 41, 8.2), Beat(5.0, 1, 0.9))
    assert why and "rebooted" in why


def test_beats_lost_across_the_hop():
    why = continuity(Beat(1.0, 41, 8.2), Beat(5.0, 60, 12.0))
    assert why and "42..59 lost" in why


def test_liveness_judges_continuity_from_the_source_beat():
    window = [Beat(10.5 + 0.2 * i, 1 + i, 0.5 + 0.2 * i) for i in range(10)]
    out = liveness(window, since=10.0, until=13.0, source_last=Beat(9.0, 80, 16.0))
    assert out["last_seq_before"] == 80 and "restarted" in out["continuity"]
    ok = [Beat(10.5 + 0.2 * i, 81 + i, 16.2 + 0.2 * i) for i in range(10)]
    assert liveness(ok, since=10.0, until=13.0, source_last=Beat(9.0, 80, 16.0))["continuity"] is None


# -- known issues explain every signal or nothing -------------------------------------------------

TIMERS = {"id": "timers", "summary": "s", "reference": "r",
          "match": {"qemu_version": "<8", "accel": "tcg", "plans": ["roundtrip"],
                    "symptoms": ["no-heartbeat", "heartbeat-stall", "unresponsive"]}}
MSI = {"id": "msi", "summary": "s", "reference": "r",
       "match": {"qemu_version": ">=10.0,<10.0.5", "accel": "tcg", "plans": ["roundtrip"], "modes": ["xics"],
                 "symptoms": ["unresponsive", "ipi-stopped", "pings-lost", "disk-read-stuck"]}}
FACTS = ki.CellFacts("tcg", "roundtrip", "workload", 2, "xics")


def _hop(symptoms, build="system 7.2.22", kernel=()):
    return {"name": "B", "verdict": "FAIL", "symptoms": list(symptoms), "kernel_log": list(kernel),
            "problems": list(symptoms), "qmp": {"status": "completed"}, "source_build": build,
            "destination_build": build}


def test_a_stall_alone_is_the_known_defect():
    out = ki.classify(ki.parse({"issues": [TIMERS]}, "k"), FACTS, [_hop(["heartbeat-stall"])])
    assert out["verdict"] == "XFAIL"


def test_a_stall_with_an_oops_a_panic_and_a_mode_change_is_fail():
    kernel = [{"kind": "oops", "line": "Oops: Kernel access of bad area, sig: 11 [#1]"},
              {"kind": "panic", "line": "Kernel panic - not syncing: Fatal exception"}]
    h = _hop(["heartbeat-stall", "kernel:oops", "kernel:panic", "mode-changed"], kernel=kernel)
    out = ki.classify(ki.parse({"issues": [TIMERS]}, "k"), FACTS, [h])
    assert out["verdict"] == "FAIL"
    assert h["known_issue"] is None and h["unexplained"] == ["kernel:oops", "kernel:panic", "mode-changed"]


def test_corrupt_data_is_not_lost_interrupts():
    issues = ki.parse({"issues": [MSI]}, "k")
    assert ki.classify(issues, FACTS, [_hop(["disk-read-stuck"], "backports 10.0.2")])["verdict"] == "XFAIL"
    h = _hop(["disk-data-corrupt"], "backports 10.0.2")
    assert ki.classify(issues, FACTS, [h])["verdict"] == "FAIL" and h["unexplained"] == ["disk-data-corrupt"]


def test_a_log_regex_explains_only_the_lines_it_matches():
    e = {**TIMERS, "match": {**TIMERS["match"], "symptoms": ["heartbeat-stall"], "log_regex": "hard LOCKUP"}}
    issues = ki.parse({"issues": [e]}, "k")
    lock = {"kind": "hard-lockup", "line": "watchdog: CPU 0 detected hard LOCKUP on other CPUs 1"}
    assert ki.classify(issues, FACTS, [_hop(["heartbeat-stall", "kernel:hard-lockup"], kernel=[lock])])["verdict"] == "XFAIL"
    other = {"kind": "hard-lockup", "line": "watchdog: CPU 1 self-detected hard LOCKUP @ x"}
    both = _hop(["heartbeat-stall", "kernel:hard-lockup", "kernel:oops"],
                kernel=[lock, other, {"kind": "oops", "line": "Oops: x"}])
    assert ki.classify(issues, FACTS, [both])["verdict"] == "FAIL"


def test_an_entry_about_one_build_does_not_cover_a_hop_to_another():
    issues = ki.parse({"issues": [TIMERS]}, "k")
    h = _hop(["no-heartbeat"])
    h["destination_build"] = "backports 10.0.2"
    assert ki.classify(issues, FACTS, [h])["verdict"] == "FAIL"


# -- a cell that passed is not well if its kernel logged a finding --------------------------------

def _observed(mode="xive", findings=()):
    g = GuestView(mode_from_chips=mode, mode_from_dt=mode, mode_from_dmesg=mode, platform_support="0x80")
    return Observed(mode=mode, platform_support="0x80", guest=g, host=HostView(mode=mode, irqchip="emulated"),
                    kernel_findings=list(findings))


def test_kernel_findings_fail_a_passing_cell():
    e = predict(make_cell(ic_mode="dual"), TCG_HOST)
    assert decide(e, _observed())[0] is Verdict.PASS
    v, why = decide(e, _observed(findings=[{"kind": "soft-lockup", "line": "watchdog: BUG: soft lockup - CPU#1"}]))
    assert v is Verdict.FAIL and "soft lockup - CPU#1" in why


def test_warnings_alone_do_not():
    e = predict(make_cell(ic_mode="dual"), TCG_HOST)
    o = _observed()
    o.kernel_warnings = ["WARNING: CPU: 1 PID: 0 at arch/powerpc/sysdev/xive/common.c:1 f+0x0/0x0"]
    assert decide(e, o)[0] is Verdict.PASS


# -- 7. options caskit composed that QEMU refuses are caskit's error -------------------------------

def test_a_refused_pin_is_error_naming_the_option():
    from harness.cellrun import _pinned_refusal
    from harness.errors import PinRefused, QemuRefused

    cell = make_cell(qemu="backports")
    pinned = type(cell)(cell.host, cell.axes, pinned=("pseries-10.0", "cap-cfpc=broken", "cap-dawr1=on"))
    e = predict(pinned, TCG_HOST)
    out = _pinned_refusal(QemuRefused("DAWR1 supported only on POWER10 and later CPUs", 1, ""), pinned, e)
    assert isinstance(out, PinRefused) and classify(out)[1] is Kind.ERROR
    assert "cap-dawr1=on" in str(out) and "cap-cfpc" not in str(out)
    # The same refusal of a cell nobody pinned is the system's answer, judged against the model.
    plain = _pinned_refusal(QemuRefused("DAWR1 supported only on POWER10 and later CPUs", 1, ""), cell, e)
    assert isinstance(plain, QemuRefused)


def _shipped(entry_id: str) -> ki.KnownIssue:
    return next(k for k in ki.load() if k.id == entry_id)


def _liveness(h: dict, beats: int, advance: float, window: float = 8.0) -> dict:
    return {**h, "window_s": window, "liveness": {"beats": beats, "guest_clock_advance_s": advance}}


def test_a_guest_that_beat_on_but_stopped_answering_is_not_the_timer_defect():
    # Issue 21 item 4: the heartbeat kept beating through the window, only the console stopped
    # answering: "guest timers stop" names `unresponsive`, but its evidence contradicts it.
    timers = _shipped("qemu7.2-tcg-guest-timers-stop-after-migration")
    beating = _liveness(_hop(["unresponsive"]), beats=8, advance=7.9)
    out = ki.classify([timers], FACTS, [beating])
    assert out["verdict"] == "FAIL" and beating["known_issue"] is None
    assert any("requires clock-stopped" in u and "ran on" in u for u in beating["unexplained"])
    for stopped in (_liveness(_hop(["no-heartbeat"]), beats=0, advance=0.0),
                    _liveness(_hop(["heartbeat-stall", "unresponsive"]), beats=2, advance=1.0)):
        assert ki.classify([timers], FACTS, [stopped])["verdict"] == "XFAIL"


def test_lost_msis_need_a_clock_that_runs():
    msi = _shipped("qemu10.0-tcg-xics-msi-lost-after-migration")
    facts = ki.CellFacts("tcg", "roundtrip", "workload", 1, "xics")
    stuck = _liveness(_hop(["disk-read-stuck", "unresponsive"], "backports 10.0.2"), beats=0, advance=0.0)
    assert ki.classify([msi], facts, [stuck])["verdict"] == "FAIL"
    running = _liveness(_hop(["disk-read-stuck"], "backports 10.0.2"), beats=25, advance=7.5)
    assert ki.classify([msi], facts, [running])["verdict"] == "XFAIL"


def test_an_unknown_condition_is_a_config_error_naming_the_allowed_ones():
    bad = {"id": "x", "summary": "s", "reference": "r", "match": {"symptoms": ["no-heartbeat"], "requires": ["clock-ish"]}}
    with pytest.raises(errors.ConfigError, match=r"requires.*clock-stopped"):
        ki.parse({"issues": [bad]}, "k.yaml")
