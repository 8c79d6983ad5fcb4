"""Migration judged by the guest itself, on the system QEMU (7.2): its known defects are seen as
failures, become XFAIL only through a known-issues entry, and a refused mismatch leaves a
healthy source. (Clean round trips on QEMU 10 are in test_migration_builds.py.)"""

from __future__ import annotations

import json

from pathlib import Path

import pytest

from conftest import run_cli, write_matrix
from harness import config
from harness import probe
from harness.cellrun import CellContext, run_cell, run_tag
from harness.cell import Cell
from harness.hosts import LocalHost
from harness.results import RunStore
from integration.helpers import KillWhen, assert_no_qemu_left, pid_alive
from integration.test_failures import AXES

pytestmark = pytest.mark.guest

IDLE = """
name: {name}
axes: {{ic_mode: [dual], guest_xive: [default, "off"], smp: [2], firmware: [vof]}}
migration: [roundtrip]
timeouts: {{liveness: 6}}
"""


@pytest.fixture(scope="module")
def no_known_issues(tmp_path_factory):
    p = tmp_path_factory.mktemp("ki") / "none.yaml"
    p.write_text("issues: []\n")
    return p


@pytest.fixture(scope="module")
def idle_7_2(tmp_path_factory, kit, no_known_issues):
    d = tmp_path_factory.mktemp("idle72")
    m = write_matrix(d / "idle.yaml", IDLE.format(name="idle72"))
    bare = run_cli(["run", str(m), "-n", "2", "--known-issues", str(no_known_issues)], d / "bare")
    known = run_cli(["run", str(m), "-n", "2"], d / "known")
    return bare, known


def test_a_guest_that_never_resumes_is_not_pass(idle_7_2):
    bare, _ = idle_7_2
    assert bare.rc == 1, bare.stdout[-2000:]  # FAIL: a new failure pages people
    for c in bare.results["cells"]:
        assert c["verdict"] == "FAIL", c["reason"]
        # The round trip stops at the first failed hop; on 7.2 the first hop now and then survives.
        *healthy, bad = c["migration"]["hops"]
        assert all(h["verdict"] == "PASS" for h in healthy)
        assert bad["verdict"] == "FAIL" and bad["known_issue"] is None
        assert bad["qmp"]["status"] == "completed"  # QMP said all was well...
        assert {"no-heartbeat", "heartbeat-stall"} & set(bad["symptoms"])  # ...the guest said otherwise
        if bad["liveness"]["beats"]:  # a few beats, then the stall: the guest's clock fell behind the host's
            assert "heartbeat-stall" in bad["symptoms"]
            assert bad["liveness"]["guest_clock_advance_s"] < bad["window_s"] / 2
        else:
            assert "no-heartbeat" in bad["symptoms"]
        assert bad["mode_before"]["guest"] == c["observed"]["mode"]
        # A guest that stops after a hop gets the forensics of a hang at boot: the destination's
        # registers (7.2's defect shows as DECR never delivered), its interrupt state, SysRq.
        forensics = Path(bad["forensics"]).read_text()
        assert "## info registers -a" in forensics and "DECR" in forensics and "## info pic" in forensics
    assert_no_qemu_left(bare.results["run"]["id"])


def test_the_same_failure_is_xfail_once_a_known_issue_matches(idle_7_2):
    _, known = idle_7_2
    assert known.rc == 0, known.stdout[-2000:]
    for c in known.results["cells"]:
        assert c["verdict"] == "XFAIL", c["reason"]
        assert c["migration"]["known_issues"] == ["qemu7.2-tcg-guest-timers-stop-after-migration"]
        assert "qemu7.2-tcg-guest-timers-stop-after-migration" in c["reason"]
    html = (known.out / "report.html").read_text()
    assert "qemu7.2-tcg-guest-timers-stop-after-migration" in html


def test_the_liveness_window_sends_nothing_to_the_guest(idle_7_2):
    for run in idle_7_2:
        for c in run.results["cells"]:
            for hop in c["migration"]["hops"]:
                t0, t1 = hop["window_wall"]
                assert t1 - t0 >= 5.5
                d = run.out / "cells" / c["id"] / hop["destination"]
                qmp_sent = [json.loads(l)["t"] for l in (d / "qmp.jsonl").read_text().splitlines() if '"send"' in l]
                console = d / "console-sent.jsonl"
                con_sent = [json.loads(l)["t"] for l in console.read_text().splitlines()] if console.exists() else []
                # Both clocks are rounded to the millisecond: the first send after the window may equal t1.
                assert not [t for t in qmp_sent + con_sent if t0 < t < t1], (c["id"], hop["name"])
                assert qmp_sent and qmp_sent[-1] > t1  # it did talk to QEMU afterwards (quit at least)


def test_a_refused_mismatch_leaves_the_source_running(tmp_path, kit):
    m = write_matrix(tmp_path / "mm.yaml", """
name: mismatch
axes: {ic_mode: [dual], smp: [2], firmware: [vof]}
workloads: [ipi, virtio-net]
migration: [mismatch]
timeouts: {liveness: 5}
""")
    r = run_cli(["run", str(m)], tmp_path / "out")
    (c,) = r.results["cells"]
    assert c["observed"]["mode"] == "xive"
    assert c["verdict"] == "PASS", c["reason"]
    ic, ic2, machine = c["migration"]["hops"]  # three destinations that cannot take the state
    assert ic["name"] == "B-ic_mode-xics" and ic["qmp"]["destination"] == {"axes": {"ic_mode": "xics"}}
    assert "Unknown savevm section or instance 'xive-source'" in ic["qmp"]["destination_error"]
    # A XIVE-only destination lacks the XICS state a dual source sends, though the guest uses XIVE.
    assert ic2["name"] == "B-ic_mode-xive" and "Unknown savevm section or instance 'ics'" in ic2["qmp"]["destination_error"]
    older = machine["qmp"]["destination"]["pinned"][0]
    assert older.startswith("pseries-") and older != "pseries-7.2"
    assert machine["qmp"]["destination_error"]  # QEMU's own words, whatever they are
    for hop in (ic, ic2, machine):
        assert hop["qmp"]["expected"] == "refused"
        assert hop["qmp"]["status"] == "failed" and hop["qmp"]["destination_exit"] == 1
        assert hop["source_alive"] is True and hop["destination_alive"] is False
        assert hop["refusal"] and hop["refusal"] in hop["qmp"]["destination_error"]  # the destination's own words
        src = hop["source_after"]  # the source never stopped, and its interrupts still flow
        assert src["verdict"] == "PASS" and src["liveness"]["beats"] > 10 and not src["liveness"]["seq_gaps"]
        assert src["mode"]["guest"] == src["mode"]["host"] == "xive"
        assert src["progress"]["ipi"]["ipi_delta"]["1"] > 0
        assert src["progress"]["virtio-net"]["received"] == src["progress"]["virtio-net"]["sent"] > 0
    assert_no_qemu_left(r.results["run"]["id"])


def test_destination_killed_mid_migration_is_error_and_the_source_survives(tmp_path, kit):
    facts = probe.probe(config.load_hosts()["local"], tmp_path / "probe")
    ax = {**AXES, "smp": 1}
    cell = Cell("local", tuple((n, ax[n]) for n in config.AXIS_NAMES), migration="roundtrip")
    store = RunStore(tmp_path)
    run_id = "faulttest"
    src_qmp = store.cell_dir(cell.id) / "qmp.jsonl"
    migrating = lambda: src_qmp.exists() and '"execute": "migrate"' in src_qmp.read_text()  # noqa: E731
    timeouts = {**config.TIMEOUT_KEYS, "liveness": 4}
    # 0.3 s into a migration throttled to several seconds: well inside it.
    with KillWhen(run_tag(run_id, cell.id) + ":B", migrating, delay=0.3) as k:
        rec = run_cell(CellContext(cell, facts, LocalHost("local", 2), kit, store, run_id, timeouts,
                                   max_bandwidth=16 << 20))
    killed = k.killed
    assert killed, "the destination was never seen migrating"
    assert rec["verdict"] == "ERROR", rec["reason"]
    (hop,) = rec["migration"]["hops"]
    assert hop["verdict"] == "ERROR" and "killed from outside (SIGKILL)" in hop["infra"][0]
    assert hop["source_alive"] is True
    assert not pid_alive(killed[0])
    assert (tmp_path / "cells" / cell.id / "B" / "qemu-stderr.log").exists()
    assert_no_qemu_left(run_id)
