"""Farm runs for real: flaky cells rerun (a QEMU that fails its first start, one that always
fails), the results history on a real PostgreSQL server and in SQLite, a controller SIGKILLed
mid-matrix and resumed to the verdicts of an uninterrupted run, and the diff gate between them."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from conftest import CASKIT, ROOT, CliRun, run_cli, write_matrix
from harness import history
from harness.hosts import kill_tagged, tagged_pids
from integration.helpers import assert_every_view_agrees, assert_no_qemu_left, pid_alive

pytestmark = pytest.mark.guest

ERROR_LINE = "qemu-system-ppc64: failed to initialize the interrupt controller: Device or resource busy"


def qemu_wrapper(tmp_path: Path, *, fail_always: bool) -> Path:
    """A QEMU build for a temp inventory: a guest start (it has -kernel; the host probe has not)
    fails with a QEMU-like error line, once (a marker file remembers) or every time."""
    marker = tmp_path / "failed-once"
    w = tmp_path / "qemu-wrapper"
    fail = "" if fail_always else f'[ -e "{marker}" ] && exec qemu-system-ppc64 "$@"\n: > "{marker}"\n'
    w.write_text('#!/bin/sh\ncase " $* " in *" -kernel "*) ;; *) exec qemu-system-ppc64 "$@";; esac\n'
                 f'{fail}echo "{ERROR_LINE}" >&2\nexit 1\n')
    w.chmod(w.stat().st_mode | stat.S_IXUSR)
    return w


def inventory(tmp_path: Path, wrapper: Path) -> Path:
    p = tmp_path / "hosts.yaml"
    p.write_text(f"hosts:\n  local:\n    kind: local\n    slots: 2\n    qemu: {{flaky: {{binary: {wrapper}}}}}\n")
    return p


FLAKY_MATRIX = "name: flaky\nhosts: [local]\naxes: {ic_mode: [dual], qemu: [flaky, system], smp: [1], firmware: [vof]}\n"


def by_build(r) -> dict[str, dict]:
    return {c["axes"]["qemu"]: c for c in r.results["cells"]}


def test_a_cell_that_fails_its_first_start_only_is_flaky_and_tracked_in_a_postgres_history(tmp_path, kit, pg):
    url = pg.createdb("flaky")
    m = write_matrix(tmp_path / "m.yaml", FLAKY_MATRIX)
    hosts = inventory(tmp_path, qemu_wrapper(tmp_path, fail_always=False))
    r = run_cli(["run", str(m), "--hosts", str(hosts), "-n", "2", "--rerun-failures", "2", "--db", url], tmp_path / "r1")
    assert r.rc == 0, r.stdout[-3000:] + r.stderr[-2000:]
    cells = by_build(r)
    c = cells["flaky"]
    assert c["verdict"] == "FLAKY", c["reason"]
    assert [(a["attempt"], a["verdict"]) for a in c["attempts"]] == [(1, "FAIL"), (2, "PASS")]
    assert c["observed"]["mode"] == "xive" and c["reason"].startswith("passed on attempt 2 (FAIL, PASS)")
    first = c["attempts"][0]
    assert "/attempts/1/" in first["logs"]["qemu_stderr"]
    assert ERROR_LINE in (r.out / first["logs"]["qemu_stderr"]).read_text()
    assert ERROR_LINE not in (r.out / c["logs"]["qemu_stderr"]).read_text()
    assert "attempts" not in cells["system"] and cells["system"]["verdict"] == "PASS"
    assert r.results["summary"]["FLAKY"] == 1
    case = next(tc for tc in ET.parse(r.out / "junit.xml").getroot() if c["id"] in tc.get("name", ""))
    assert case.find("failure") is None and case.find("error") is None  # passed, with its attempts
    assert {p.get("name"): p.get("value") for p in case.iter("property")}["attempts"] == "FAIL, PASS"
    assert_no_qemu_left(r.results["run"]["id"])

    # Committed by the workers that ran them, the moment each ended (and once more at the end).
    with history.connect(url) as db:
        (run,) = history.list_runs(db)
        assert run.id == r.results["run"]["id"] and run.ended and run.counts == {"FLAKY": 1, "PASS": 1}
        rows = db.query("SELECT cell_id, attempts, ran_in FROM cells WHERE run_id = ?", (run.id,))
        assert sorted(rows) == sorted([(c["id"], 2, run.id), (cells["system"]["id"], 1, run.id)])
    h = run_cli(["history", "--db", url, c["id"]])
    assert h.rc == 0 and "FLAKY" in h.stdout and " 2  " in h.stdout, h.stdout + h.stderr
    # With reruns too, the report, the history and the gate say what the run said.
    assert assert_every_view_agrees(r.out, r.results["run"]["id"], url, r.rc) == verdicts(r.results)

    # --strict: the same flaky cell is exit 1. A second run in the same history.
    (tmp_path / "failed-once").unlink()
    s = run_cli(["run", str(m), "--hosts", str(hosts), "-n", "2", "--rerun-failures", "1", "--strict", "--db", url],
                tmp_path / "r2")
    assert s.rc == 1 and by_build(s)["flaky"]["verdict"] == "FLAKY", s.stdout[-3000:]
    fl = run_cli(["history", "--db", url, "--flaky"])
    assert fl.rc == 0 and f"2 of   2 runs FLAKY  {c['id']}" in fl.stdout, fl.stdout
    listed = run_cli(["history", "--db", url])
    assert listed.stdout.index(s.results["run"]["id"]) < listed.stdout.index(r.results["run"]["id"])  # newest first

    # The same reruns through the pytest plugin: its exit status and every view agree with it too.
    (tmp_path / "failed-once").unlink()
    p = subprocess.run([sys.executable, "-m", "pytest", "-n", "2", "-p", "no:cacheprovider", "--caskit-matrix", str(m),
                        "--caskit-hosts", str(hosts), "--caskit-out", str(tmp_path / "r3"), "--caskit-db", url,
                        "--caskit-rerun-failures", "1"], cwd=ROOT, capture_output=True, text=True, timeout=600)
    plugged = CliRun(p.returncode, p.stdout, p.stderr, tmp_path / "r3")
    assert p.returncode == 0 and by_build(plugged)["flaky"]["verdict"] == "FLAKY", p.stdout[-3000:]
    assert assert_every_view_agrees(plugged.out, plugged.results["run"]["id"], url, p.returncode) == \
        verdicts(plugged.results)


def test_a_cell_that_always_fails_stays_fail_after_n_plus_one_attempts(tmp_path, kit, pg):
    url = pg.createdb("always")
    m = write_matrix(tmp_path / "m.yaml", FLAKY_MATRIX.replace("qemu: [flaky, system]", "qemu: [flaky]"))
    hosts = inventory(tmp_path, qemu_wrapper(tmp_path, fail_always=True))
    r = run_cli(["run", str(m), "--hosts", str(hosts), "--rerun-failures", "2"], tmp_path / "out",
                env={"CASKIT_DB": url})  # the farm's shared history, from the environment
    assert r.rc == 1, r.stdout[-3000:] + r.stderr[-2000:]
    (c,) = r.results["cells"]
    assert c["verdict"] == "FAIL" and [a["verdict"] for a in c["attempts"]] == ["FAIL"] * 3
    assert c["reason"].startswith("FAIL on every attempt (FAIL, FAIL, FAIL)")
    assert sorted(p.name for p in (r.out / "cells" / c["id"] / "attempts").iterdir()) == ["1", "2"]
    for a in c["attempts"]:
        assert ERROR_LINE in (r.out / a["logs"]["qemu_stderr"]).read_text()
    assert not (tmp_path / "history.sqlite").exists()  # CASKIT_DB took it, not the default
    with history.connect(url) as db:
        (at,) = history.cell_history(db, c["id"])
        assert (at.verdict, at.attempts) == ("FAIL", 3)
    assert_no_qemu_left(r.results["run"]["id"])


# Four cells that all boot a guest (XIVE and XICS), two at a time: the controller is killed with
# one finished and a guest booting for a cell started after it.
RESUME_MATRIX = ("name: resume\nhosts: [local]\naxes: {ic_mode: [dual, xics], guest_xive: [default, \"off\"], "
                 "smp: [1], firmware: [vof]}\n")


def verdicts(results: dict) -> dict[str, str]:
    return {c["id"]: c["verdict"] for c in results["cells"]}


def test_a_controller_killed_mid_matrix_resumes_to_an_uninterrupted_runs_verdicts(tmp_path, kit):
    m = write_matrix(tmp_path / "m.yaml", RESUME_MATRIX)
    runs = tmp_path / "runs"  # runs side by side: one history, runs/history.sqlite
    whole = run_cli(["run", str(m), "-n", "2"], runs / "whole")
    assert whole.rc == 0, whole.stdout[-3000:]

    out = runs / "killed"
    with open(tmp_path / "killed.log", "wb") as log:
        p = subprocess.Popen(CASKIT + ["run", str(m), "-n", "2", "--out", str(out)], cwd=ROOT, stdout=log,
                             stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
                             env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        # Await the moment: a cell has finished, and a guest of a cell started after it is booting
        # (not one on its way out, which would end by itself).
        deadline = time.monotonic() + 300
        run_id, before, fresh = None, None, []
        while not fresh:
            if run_id is None and (out / "run.json").exists():
                run_id = json.loads((out / "run.json").read_text())["id"]
            running = tagged_pids(f"caskit:{run_id}:") if run_id else []
            if before is None and list((out / "cells").glob("*/result.json")):
                before = set(running)
            if before is not None:
                fresh = [x for x in running if x not in before]
            assert p.poll() is None, (tmp_path / "killed.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "no cell started after the first one finished"
            time.sleep(0.05)  # the process table and the files: no event to wait on
    finally:
        os.killpg(p.pid, signal.SIGKILL)  # the controller and its xdist workers: one process group
        p.wait()
    tag = f"caskit:{run_id}:"
    try:
        _killed_run_views_and_resume(tmp_path, m, runs, whole, out, run_id, tag, fresh)
    finally:  # whatever failed above, the killed run's guests are stopped by PID (the resume does it when it runs)
        kill_tagged(tag)


def _killed_run_views_and_resume(tmp_path, m, runs, whole, out, run_id, tag, fresh):
    left = tagged_pids(tag)
    assert left, "the killed run's guests should outlive it (QEMU runs in its own session)"
    workers = [json.loads(f.read_text())["pid"] for f in (out / "procs").glob("*.json")]
    assert len(workers) == 3  # the controller and two workers recorded themselves
    kept = {f.parent.name for f in (out / "cells").glob("*/result.json")}
    assert 1 <= len(kept) < 4

    # Every view of the killed run shows the cells it never ran, and every exit status says so.
    db_url = f"sqlite://{runs / 'history.sqlite'}"
    planned = json.loads((out / "run.json").read_text())["cell_order"]
    rep = run_cli(["report", str(out)])
    assert rep.rc == 3 and "not run" in rep.stderr, rep.stdout + rep.stderr
    partial = json.loads((out / "results.json").read_text())
    assert {c["id"] for c in partial["cells"] if c.get("not_run")} == set(planned) - kept
    cases = {tc.get("name"): tc for tc in ET.parse(out / "junit.xml").getroot().findall("testcase")}
    assert set(cases) == set(planned) and all(cases[c].find("error") is not None for c in set(planned) - kept)
    assert_every_view_agrees(out, run_id, db_url, 3)
    assert_every_view_agrees(runs / "whole", whole.results["run"]["id"], db_url, whole.rc)
    gate = run_cli(["diff", whole.results["run"]["id"], run_id, "--db", db_url])
    assert gate.rc == 1 and gate.stdout.count("never reported") >= len(set(planned) - kept), gate.stdout

    # Resumed through the pytest plugin, as a farm's pytest job would: same runner, same record.
    p = subprocess.run([sys.executable, "-m", "pytest", "-n", "2", "-p", "no:cacheprovider", "--caskit-matrix", str(m),
                        "--caskit-out", str(out), "--caskit-resume"], cwd=ROOT, capture_output=True, text=True,
                       timeout=600)
    resumed = CliRun(p.returncode, p.stdout, p.stderr, out)
    assert resumed.rc == 0, resumed.stdout[-3000:] + resumed.stderr[-2000:]
    run = resumed.results["run"]
    assert run["resumed_from"] == run_id and run["id"] != run_id
    assert set(fresh) <= set(run["stopped_at_resume"]["qemu"]) <= set(left)  # stopped by PID at its start
    assert tagged_pids(tag) == [] and not any(pid_alive(x) for x in left + workers)
    assert_no_qemu_left(run["id"])
    assert verdicts(resumed.results) == verdicts(whole.results)
    ran_before = {c["id"] for c in resumed.results["cells"] if c.get("run_id") == run_id}
    assert ran_before == kept  # finished cells kept, the rest run again
    assert (out / "report.html").stat().st_size > 0
    assert len(ET.parse(out / "junit.xml").getroot().findall("testcase")) == 4

    # The resumed run: the plugin's exit status, the report's, the history's and the gate's agree.
    assert assert_every_view_agrees(out, run["id"], db_url, resumed.rc) == verdicts(resumed.results)
    junit = {tc.get("name"): {p.get("name"): p.get("value") for p in tc.iter("property")}["verdict"]
             for tc in ET.parse(out / "junit.xml").getroot().findall("testcase")}
    assert junit == verdicts(resumed.results)

    # The history has all three runs: the killed one unfinished with the cells that ended.
    with history.connect(db_url) as db:
        listed = {r.id: r for r in history.list_runs(db)}
        in_killed = {row[0] for row in db.query("SELECT cell_id FROM cells WHERE run_id = ?", (run_id,))}
    assert set(listed) == {whole.results["run"]["id"], run_id, run["id"]}
    # Only cells that ended were committed (one SIGKILLed between its result.json and its commit
    # is in the resumed run's rows all the same).
    assert listed[run_id].ended is None and in_killed and in_killed <= kept
    assert listed[run["id"]].ended and sum(listed[run["id"]].counts.values()) == 4

    # The gate: nothing regressed between the uninterrupted run and the resumed one, by
    # directory and by run id; the killed run never reported some of its cells.
    d = run_cli(["diff", str(runs / "whole"), str(out)])
    assert d.rc == 0 and "0 regression(s)" in d.stdout, d.stdout
    d = run_cli(["diff", whole.results["run"]["id"], run["id"], "--db", db_url])
    assert d.rc == 0 and "4 cells in both" in d.stdout, d.stdout + d.stderr
    d = run_cli(["diff", whole.results["run"]["id"], "no-such-run", "--db", db_url])
    assert d.rc == 2 and "no-such-run" in d.stderr
