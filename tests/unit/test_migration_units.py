"""Pure parts of migration: liveness from heartbeats, kernel-log findings, known-issue matching,
migration-domain pins, and how a migration folds into a cell's verdict."""

from __future__ import annotations


import pytest

from harness import guestlog
from harness.migration import domains as md, known_issues as ki
from harness.cell import HostFacts, QemuBuild
from harness.errors import ConfigError
from harness.heartbeat import Beat, liveness


def beats(times, start_seq=1, period=0.2):
    return [Beat(t, start_seq + i, 100 + i * period) for i, t in enumerate(times)]


def test_liveness_of_a_healthy_guest():
    b = beats([9.8, 10.0] + [10.1 + 0.2 * i for i in range(40)])
    out = liveness(b, since=10.05, until=18.0)
    assert out["beats"] == 40 and out["first_beat_s"] == pytest.approx(0.05, abs=1e-3)
    assert out["seq_gaps"] == [] and out["last_seq_before"] == 2
    assert out["max_silence_after_first_s"] < 0.3


def test_liveness_of_a_dead_guest():
    out = liveness(beats([9.0, 9.2]), since=10.0, until=20.0)
    assert out["beats"] == 0 and out["first_beat_s"] is None and out["max_silence_s"] == 10.0


def test_liveness_sees_gaps_and_stalls():
    b = [Beat(9.9, 5, 1.0), Beat(10.2, 6, 1.2), Beat(10.4, 9, 1.8), Beat(10.6, 10, 2.0)]
    out = liveness(b, since=10.0, until=15.0)
    assert out["seq_gaps"] == [(6, 9)]
    assert out["max_silence_after_first_s"] == pytest.approx(4.4, abs=1e-3)


def test_ordinary_kernel_lines_are_not_findings():
    assert guestlog.findings(["[ 1.0] xive: Using 64kB queues", "[ 2.0] virtio_net virtio0 eth0: renamed"]) == []


@pytest.mark.parametrize("spec,version,ok", [
    ("<8", "7.2.22", True), ("<8", "10.0.2", False), (">=7.2,<8", "7.2.22", True),
    (">=10.0,<10.1", "10.0.2", True), ("==7.2", "7.2.22", True), (">7.2", "7.2.22", False),
])
def test_version_constraints(spec, version, ok):
    assert ki.version_matches(spec, version) is ok


ENTRY = {"id": "k1", "summary": "s", "reference": "r",
         "match": {"qemu_version": "<8", "accel": "tcg", "plans": ["roundtrip"], "symptoms": ["no-heartbeat"]}}
FACTS = ki.CellFacts("tcg", "roundtrip", "idle", 2, "xive")


def hop(verdict="FAIL", symptoms=("no-heartbeat",), kernel_log=(), status="completed", build="system 7.2.22"):
    return {"name": "B", "verdict": verdict, "symptoms": list(symptoms), "kernel_log": list(kernel_log),
            "qmp": {"status": status}, "source_build": build, "destination_build": build}


def test_a_matching_failure_is_xfail_with_the_id():
    issues = ki.parse({"issues": [ENTRY]}, "k.yaml")
    hops = [hop()]
    out = ki.classify(issues, FACTS, hops)
    assert out == {"verdict": "XFAIL", "known_issues": ["k1"], "no_longer_reproduces": []}
    assert hops[0]["known_issue"] == "k1"


def test_an_unmatched_failure_is_fail():
    issues = ki.parse({"issues": [ENTRY]}, "k.yaml")
    assert ki.classify(issues, FACTS, [hop(symptoms=("heartbeat-gap",))])["verdict"] == "FAIL"
    assert ki.classify(issues, FACTS, [hop(build="backports 10.0.2")])["verdict"] == "FAIL"


def test_an_entry_that_no_longer_fails_is_reported():
    issues = ki.parse({"issues": [ENTRY]}, "k.yaml")
    out = ki.classify(issues, FACTS, [hop(verdict="PASS", symptoms=())])
    assert out == {"verdict": "PASS", "known_issues": [], "no_longer_reproduces": ["k1"]}


def test_a_refused_hop_says_nothing_about_a_defect_of_the_guest_after_a_hop():
    issues = ki.parse({"issues": [ENTRY]}, "k.yaml")
    out = ki.classify(issues, FACTS, [hop(verdict="PASS", symptoms=(), status="failed")])
    assert out["no_longer_reproduces"] == []


def test_log_regex_entries_match_kernel_findings():
    e = {**ENTRY, "match": {"log_regex": "hard LOCKUP"}}
    issues = ki.parse({"issues": [e]}, "k.yaml")
    h = hop(symptoms=("kernel:hard-lockup",), kernel_log=[{"kind": "hard-lockup", "line": "CPU 0 detected hard LOCKUP"}])
    assert ki.classify(issues, FACTS, [h])["verdict"] == "XFAIL"


@pytest.mark.parametrize("bad,key", [
    ({"issues": [{"id": "x"}]}, "issues[0]"),
    ({"issues": [{**ENTRY, "match": {"symptoms": ["x"], "colour": "red"}}]}, "issues[0].match.colour"),
    ({"issues": [{**ENTRY, "match": {"qemu_version": "~7"}}]}, "issues[0].match.qemu_version"),
    ({"issues": [{**ENTRY, "match": {"accel": "tcg"}}]}, "issues[0].match"),
    ({"issues": [ENTRY, ENTRY]}, "issues"),
])
def test_bad_known_issue_files_name_the_key(bad, key):
    with pytest.raises(ConfigError) as e:
        ki.parse(bad, "k.yaml")
    assert e.value.key == key and e.value.path == "k.yaml"


def test_the_shipped_known_issues_file_loads():
    issues = ki.load()
    assert {i.id for i in issues} >= {"qemu7.2-tcg-guest-timers-stop-after-migration"}
    assert all(i.reference and i.evidence for i in issues)


def build(name="system", machine="pseries-7.2", caps=(), models=("POWER10", "POWER8", "POWER9")):
    return QemuBuild(name, "qemu-system-ppc64", "7.2.22", machine=machine, cpu_models=models, caps=tuple(caps))


def host(name, kvm="tcg-only", cpu="AMD", xics=False, xive=False, builds=()):
    return HostFacts(name, "x86_64" if kvm == "tcg-only" else "ppc64le", cpu, kvm, xics, xive, 2, tuple(builds))


def test_pin_takes_the_weakest_of_every_member():
    a = build(caps=[("cap-cfpc", "workaround"), ("cap-htm", "true"), ("cap-hpt-max-page-size", "65536")])
    b = build("b", "pseries-10.0", caps=[("cap-cfpc", "broken"), ("cap-htm", "true"), ("cap-hpt-max-page-size", "4096"),
                                         ("cap-rpt-invalidate", "false")])
    hv9 = host("p9", "hv", "POWER9 (raw), altivec supported", True, True, [a])
    tcg = host("tcg", builds=[b])
    p = md.pin([md.Member(hv9, a), md.Member(tcg, b)])
    assert p.machine == "pseries-7.2"  # the oldest machine version: newer QEMUs can run it
    assert p.cpu_compat == "power9" and p.ic_mode == "dual"
    assert p.kernel_irqchip == "off"  # one member has no in-kernel controllers
    assert p.caps == {"cap-cfpc": "broken", "cap-htm": "on", "cap-hpt-max-page-size": "4096"}
    assert any("cap-rpt-invalidate" in n for n in p.notes)


def test_a_power8_member_pins_xics():
    p8 = host("p8", "hv", "POWER8E (raw)", True, False, [build()])
    p9 = host("p9", "hv", "POWER9 (raw)", True, True, [build()])
    p = md.pin([md.Member(p8, p8.qemu[0]), md.Member(p9, p9.qemu[0])])
    assert (p.cpu_compat, p.ic_mode) == ("power8", "xics")


def test_bare_metal_hv_members_keep_the_in_kernel_controllers():
    a = host("a", "hv", "POWER9", True, True, [build()])
    b = host("b", "hv", "POWER9", True, True, [build()])
    assert md.pin([md.Member(a, a.qemu[0]), md.Member(b, b.qemu[0])]).kernel_irqchip == "on"
