"""One matrix split across controllers for real: `caskit run --shard K/3` as three processes at
once on the same two SSH hosts (real sshd in network namespaces) sharing one PostgreSQL history;
one is killed mid-way. `caskit report --merge` of what reported names the killed shard's missing
cells (a shard that never ran at all: its number), exit 3, as does `caskit report --run-id` from
the history alone; after the killed shard is resumed both say what an unsharded run says."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time

import pytest
import yaml

from conftest import CASKIT, ROOT, run_cli, write_matrix
from harness import history, prepare, shard as sh
from harness.hosts import kill_tagged, tagged_pids
from integration.helpers import assert_no_qemu_left
from integration.test_ssh_hosts import pair  # noqa: F401  (two sshd hosts in network namespaces)

pytestmark = pytest.mark.guest

SSH_MATRIX = "name: sharded-ssh\nhosts: [hosta, hostb]\naxes: {ic_mode: [dual, xics, xive], smp: [1], firmware: [vof]}\n"


def test_three_shards_share_ssh_hosts_and_postgresql_one_killed_midway_resumes_to_the_unsharded_verdicts(
        pair, tmp_path, kit, pg):  # noqa: F811
    """The scenario of a farm's CI engine: three jobs at once on the same two one-slot SSH hosts
    (real sshd in network namespaces) and one PostgreSQL history; one job is killed while its
    guest runs. The merge names what it never reported and exits 3; that job rerun with
    --resume completes it, and the merge then says what one unsharded run says."""
    inv = tmp_path / "hosts.yaml"
    inv.write_text(yaml.safe_dump(pair.inventory(slots=1)))
    m = write_matrix(tmp_path / "m.yaml", SSH_MATRIX)
    db = pg.createdb("shards")
    mine = {k: [c.id for c in prepare.load_plan([str(m)], str(inv), shard=sh.Shard(k, 3)).cells] for k in (1, 2, 3)}
    victim = max(mine, key=lambda k: len(mine[k]))
    assert sum(map(len, mine.values())) == 6 and len(mine[victim]) >= 2

    procs, logs = {}, {}
    for k in (1, 2, 3):
        logs[k] = open(tmp_path / f"s{k}.log", "wb")
        procs[k] = subprocess.Popen(CASKIT + ["run", str(m), "--hosts", str(inv), "--shard", f"{k}/3", "--db", db,
                                              "--out", str(tmp_path / f"s{k}")], cwd=ROOT, stdout=logs[k],
                                    stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
                                    env={**os.environ, "PYTHONUNBUFFERED": "1"})
    out = tmp_path / f"s{victim}"
    tag = None
    try:
        # Await the moment: the victim's own guest runs (its run id names its QEMU), so it has
        # started and cannot have finished all of its cells.
        deadline = time.monotonic() + 300
        while tag is None or not tagged_pids(tag):
            if tag is None and (out / "run.json").exists():
                tag = f"caskit:{json.loads((out / 'run.json').read_text())['id']}:"
            assert procs[victim].poll() is None, (tmp_path / f"s{victim}.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "the victim shard's first guest never started"
            time.sleep(0.05)  # the process table: no event to wait on
        os.killpg(procs[victim].pid, signal.SIGKILL)
        procs[victim].wait()
        for k in (1, 2, 3):
            if k != victim:
                assert procs[k].wait(timeout=600) == 0, (tmp_path / f"s{k}.log").read_text()[-3000:]
    finally:
        for k, p in procs.items():
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
            logs[k].close()
    try:
        dirs = [str(tmp_path / f"s{k}") for k in (1, 2, 3)]
        partial = run_cli(["report", "--merge", *dirs, "-o", str(tmp_path / "partial")])
        assert partial.rc == 3, partial.stdout + partial.stderr
        res = json.loads((tmp_path / "partial" / "results.json").read_text())
        reported = {f.parent.name for f in (out / "cells").glob("*/result.json")}
        missing = {c["id"] for c in res["cells"] if c.get("not_run")}
        assert missing == set(mine[victim]) - reported and missing, (missing, reported)
        assert (tmp_path / "partial" / "report.html").read_text().count("not run") >= len(missing)
        again = run_cli(["report", str(tmp_path / "partial")])  # the merged run is a run like any other
        assert again.rc == 3
        # A shard whose job never ran at all: its number is named, its cells are not run.
        two = run_cli(["report", "--merge", *[d for d in dirs if not d.endswith(f"s{victim}")], "-o",
                       str(tmp_path / "two")])
        assert two.rc == 3 and f"shards never reported: {victim}" in two.stderr, two.stderr
        with history.connect(db) as h:  # one history: every shard's run is in it, the killed one unfinished
            runs = {r.id: r for r in history.list_runs(h)}
        shard_ids = {json.loads((tmp_path / f"s{k}" / "run.json").read_text())["id"] for k in (1, 2, 3)}
        assert shard_ids <= set(runs) and [r.ended for i, r in runs.items() if f"caskit:{i}:" == tag] == [None]
        # The same from the history alone, as a CI job that shares only the database would ask.
        other = next(iter(shard_ids - {tag.split(":")[1]}))
        hist = run_cli(["report", "--run-id", other, "--db", db, "-o", str(tmp_path / "hist-partial")])
        assert hist.rc == 3, hist.stdout + hist.stderr
        got = json.loads((tmp_path / "hist-partial" / "results.json").read_text())
        assert {c["id"] for c in got["cells"] if c.get("not_run")} == missing

        resumed = run_cli(["run", str(m), "--hosts", str(inv), "--shard", f"{victim}/3", "--db", db, "--resume"], out)
        assert resumed.rc == 0, resumed.stdout[-3000:] + resumed.stderr[-2000:]
        assert tagged_pids(tag) == []  # the killed job's guest was stopped by PID at the resume
    finally:
        kill_tagged(tag)
    merged = run_cli(["report", "--merge", *dirs, "-o", str(tmp_path / "merged")])
    whole = run_cli(["run", str(m), "--hosts", str(inv), "-n", "2", "--db", db], tmp_path / "whole")
    assert merged.rc == whole.rc == 0, merged.stderr + whole.stdout[-2000:]
    got = json.loads((tmp_path / "merged" / "results.json").read_text())
    assert {c["id"]: (c["verdict"], c["observed"]["mode"]) for c in got["cells"]} == \
        {c["id"]: (c["verdict"], c["observed"]["mode"]) for c in whole.results["cells"]}
    d = run_cli(["diff", str(tmp_path / "whole"), str(tmp_path / "merged")])
    assert d.rc == 0 and "0 regression(s)" in d.stdout, d.stdout
    # From the history: the resumed run stands for its shard; every view agrees with the merge.
    hist = run_cli(["report", "--run-id", resumed.results["run"]["id"], "--db", db, "-o", str(tmp_path / "hist")])
    assert hist.rc == 0, hist.stdout + hist.stderr
    from_db = json.loads((tmp_path / "hist" / "results.json").read_text())
    assert {c["id"]: c["verdict"] for c in from_db["cells"]} == {c["id"]: c["verdict"] for c in got["cells"]}
    assert (tmp_path / "hist" / "report.html").stat().st_size > 0
    nope = run_cli(["report", "--run-id", "no-such-run", "--db", db, "-o", str(tmp_path / "nope")])
    assert nope.rc == 2 and "no-such-run" in nope.stderr
    # Each merged cell's logs are the shard's own files, reachable from the merged run.
    for c in got["cells"]:
        assert (tmp_path / "merged" / c["logs"]["console"]).resolve().is_file()
    bad = run_cli(["report", "--merge", str(tmp_path / "whole"), "-o", str(tmp_path / "bad")])
    assert bad.rc == 2 and "not a shard" in bad.stderr
    assert run_cli(["run", str(m), "--shard", "4/3"], tmp_path / "x").rc == 2
    for r in (resumed, whole):
        assert_no_qemu_left(r.results["run"]["id"])
