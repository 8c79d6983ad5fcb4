"""harness/shard.py: the split of a matrix into shards (stable, disjoint, whole, an emulated host's
cells together) and the merge of the shards' runs (every planned cell; a missing shard's cells not
run; shards of another plan refused)."""

from __future__ import annotations

import pytest

from harness import shard as sh
from harness.errors import ConfigError
from harness.results import run_exit_status

from .factories import make_cell


def cells(n: int, host: str = "local"):
    return [make_cell(host, smp=i + 1) for i in range(n)]


@pytest.mark.parametrize("text,want", [("1/1", (1, 1)), ("2/3", (2, 3)), ("10/10", (10, 10))])
def test_parse(text, want):
    s = sh.parse(text)
    assert (s.index, s.of) == want and str(s) == text


@pytest.mark.parametrize("text", ["", "0/3", "4/3", "1/0", "a/b", "1-3", "1/3/", " 1/3", "99999/99999"])
def test_parse_refuses_with_the_option_named(text):
    with pytest.raises(ConfigError, match="--shard"):
        sh.parse(text)


def test_the_shards_are_disjoint_whole_and_stable():
    cs = cells(40)
    parts = [sh.select(cs, sh.Shard(k, 4), set()) for k in range(1, 5)]
    ids = [c.id for p in parts for c in p]
    assert sorted(ids) == sorted(c.id for c in cs) and len(ids) == len(set(ids))
    assert all(parts)  # 40 cells over 4 shards: none empty
    # A cell added to the matrix moves no other cell to another shard.
    more = sh.select(cs + cells(41)[40:], sh.Shard(2, 4), set())
    assert [c.id for c in more if c.id in {x.id for x in cs}] == [c.id for c in parts[1]]
    assert sh.select(cs, None, set()) == cs


def test_an_emulated_hosts_cells_stay_in_one_shard():
    cs = cells(12, "nested-hv") + cells(12)
    owners = {k for k in range(1, 4) for c in sh.select(cs, sh.Shard(k, 3), {"nested-hv"}) if c.host == "nested-hv"}
    assert len(owners) == 1


def _shard_results(where: str, k: int, of: int, plan, ran, verdict="PASS"):
    specs = [c.to_dict() for c in plan]
    return (where, {"run": {"id": f"run{k}", "start": f"2026-01-0{k}T00:00:00Z", "end": f"2026-01-0{k}T01:00:00Z",
                            "hosts": {"local": {"kvm_mode": "tcg-only"}}, "cell_order": [c.id for c in ran],
                            "cells": [c.to_dict() for c in ran],
                            "shard": {"index": k, "of": of, "plan": [c.id for c in plan], "plan_specs": specs}},
                    "cells": [{**c.to_dict(), "verdict": verdict, "reason": "ok",
                               "logs": {"console": f"cells/{c.id}/console.log"}} for c in ran]})


def test_a_merge_has_every_planned_cell_and_a_missing_shards_cells_are_not_run(tmp_path):
    plan = cells(9)
    parts = {k: sh.select(plan, sh.Shard(k, 3), set()) for k in (1, 2, 3)}
    runs = [_shard_results(str(tmp_path / f"s{k}"), k, 3, plan, parts[k]) for k in (1, 3)]
    merged = sh.merge(runs, str(tmp_path / "merged"))
    assert [c["id"] for c in merged["cells"]] == [c.id for c in plan] == merged["run"]["cell_order"]
    missing = {c["id"] for c in merged["cells"] if c.get("not_run")}
    assert missing == {c.id for c in parts[2]} and merged["run"]["merged"]["missing_shards"] == [2]
    assert run_exit_status(merged) == (3 if missing else 0)
    ran = next(c for c in merged["cells"] if not c.get("not_run"))
    assert ran["logs"]["console"] == f"../s{ran['shard']}/cells/{ran['id']}/console.log"
    whole = sh.merge(runs + [_shard_results(str(tmp_path / "s2"), 2, 3, plan, parts[2])], str(tmp_path / "m"))
    assert run_exit_status(whole) == 0 and not whole["run"]["merged"]["missing_shards"]
    assert {c["id"]: c["verdict"] for c in whole["cells"]} == {c.id: "PASS" for c in plan}


def test_a_merge_refuses_runs_that_are_not_shards_of_one_plan(tmp_path):
    plan = cells(4)
    a = _shard_results("a", 1, 2, plan, plan[:2])
    with pytest.raises(sh.MergeError, match="b: shard 2/2 of another plan"):
        sh.merge([a, _shard_results("b", 2, 2, cells(5), plan[2:])], "m")
    with pytest.raises(sh.MergeError, match="shard 1/2 again"):
        sh.merge([a, _shard_results("c", 1, 2, plan, plan[:2])], "m")
    with pytest.raises(sh.MergeError, match="not a shard"):
        sh.merge([a, ("d", {"run": {"id": "x"}, "cells": []})], "m")
