"""One matrix split across controllers for real: `caskit run --shard K/3` as separate processes
sharing one history, `caskit report --merge` of the shards that reported (a shard that never ran
leaves its cells "not run": exit 3, named), then of all three, which must say what an unsharded
run of the same matrix says."""

from __future__ import annotations

import json

import pytest

from conftest import run_cli, write_matrix
from harness import prepare, shard as sh
from integration.helpers import assert_no_qemu_left

pytestmark = pytest.mark.guest

MATRIX = "name: sharded\nhosts: [local]\naxes: {ic_mode: [dual, xics, xive], smp: [1], firmware: [vof]}\n"


def test_shards_run_apart_and_merge_into_the_unsharded_runs_verdicts(tmp_path, kit):
    m = write_matrix(tmp_path / "m.yaml", MATRIX)
    mine = {k: [c.id for c in prepare.load_plan([str(m)], None, shard=sh.Shard(k, 3)).cells] for k in (1, 2, 3)}
    late = next(k for k in (3, 2, 1) if mine[k])  # a shard with cells, held back as if its job never ran
    db = f"sqlite://{tmp_path / 'history.sqlite'}"
    shards = {}
    for k in (1, 2, 3):
        if k == late:
            continue
        r = run_cli(["run", str(m), "--shard", f"{k}/3", "--db", db], tmp_path / f"s{k}")
        if not mine[k]:
            assert r.rc == 0 and "nothing to run" in r.stderr, r.stderr
            continue
        assert r.rc == 0, r.stdout[-2000:] + r.stderr[-2000:]
        assert [c["id"] for c in r.results["cells"]] == mine[k]
        assert_no_qemu_left(r.results["run"]["id"])
        shards[k] = tmp_path / f"s{k}"

    partial = run_cli(["report", "--merge", *map(str, shards.values()), "-o", str(tmp_path / "partial")])
    assert partial.rc == 3, partial.stderr
    res = json.loads((tmp_path / "partial" / "results.json").read_text())
    assert {c["id"] for c in res["cells"] if c.get("not_run")} == set(mine[late])
    assert f"shards never reported: {late}" in partial.stderr
    assert (tmp_path / "partial" / "report.html").read_text().count("not run") >= len(mine[late])
    again = run_cli(["report", str(tmp_path / "partial")])  # the merged run is a run like any other
    assert again.rc == 3

    r = run_cli(["run", str(m), "--shard", f"{late}/3", "--db", db], tmp_path / f"s{late}")
    assert r.rc == 0, r.stdout[-2000:] + r.stderr[-2000:]
    shards[late] = tmp_path / f"s{late}"
    merged = run_cli(["report", "--merge", *map(str, shards.values()), "-o", str(tmp_path / "merged")])
    whole = run_cli(["run", str(m), "-n", "2", "--db", db], tmp_path / "whole")
    assert merged.rc == whole.rc == 0, merged.stderr + whole.stdout[-2000:]
    got = json.loads((tmp_path / "merged" / "results.json").read_text())
    assert {c["id"]: c["verdict"] for c in got["cells"]} == {c["id"]: c["verdict"] for c in whole.results["cells"]}
    assert {c["id"]: c["observed"]["mode"] for c in got["cells"]} == \
        {c["id"]: c["observed"]["mode"] for c in whole.results["cells"]}
    # Each merged cell's logs are the shard's own files, reachable from the merged run.
    for c in got["cells"]:
        assert (tmp_path / "merged" / c["logs"]["console"]).resolve().is_file()
    d = run_cli(["diff", str(tmp_path / "whole"), str(tmp_path / "merged")])
    assert d.rc == 0 and "0 regression(s)" in d.stdout, d.stdout

    bad = run_cli(["report", "--merge", str(tmp_path / "whole"), "-o", str(tmp_path / "bad")])
    assert bad.rc == 2 and "not a shard" in bad.stderr
    assert run_cli(["run", str(m), "--shard", "4/3"], tmp_path / "x").rc == 2
