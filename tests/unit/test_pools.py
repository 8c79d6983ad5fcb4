"""Pool placement's pure parts: a member that dropped under a cell is never forgotten (issue 21)."""

from __future__ import annotations

from harness import pools

DROPPED = {"id": "pool-p9-x", "verdict": "ERROR", "reason": "lost the connection to host hosta",
           "observed": {"error_kind": "HostError"}}


def test_a_cell_whose_member_dropped_under_it_is_fail_even_if_another_member_passed_it():
    passed = {"id": "pool-p9-x", "verdict": "PASS", "reason": "xive as predicted", "observed": {}, "ran_on": "hostb"}
    rec = pools.with_dropped(passed, [("hosta", DROPPED)])
    assert rec["verdict"] == "FAIL" and "hosta dropped while this cell's guest ran on it" in rec["reason"]
    assert [(a["attempt"], a["verdict"], a["ran_on"]) for a in rec["attempts"]] == [(1, "ERROR", "hosta"), (2, "PASS", "hostb")]


def test_a_cell_that_ran_once_is_left_as_it_is():
    passed = {"id": "pool-p9-x", "verdict": "PASS", "reason": "ok", "observed": {}, "ran_on": "hostb"}
    assert pools.with_dropped(passed, []) is passed


def test_health_checks_have_ids_of_their_own():
    assert pools.health_record_id("p9", "hosta", "hosta-tcg-x") == "health-p9-hosta-hosta-tcg-x"
