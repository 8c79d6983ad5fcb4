"""Pool placement's pure parts: a member that dropped under a cell is never forgotten (issue 21)."""

from __future__ import annotations

import pytest

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


def test_workers_beyond_the_slots_or_the_cells_are_not_started(tmp_path):
    # Each would only wait for a lease, at the cost of an interpreter (issue 23).
    from harness import prepare
    inv = tmp_path / "hosts.yaml"
    inv.write_text("hosts:\n  local: {kind: local, slots: 2}\n  one: {kind: local, slots: 1}\n"
                   "  three: {kind: local, slots: 3}\n"
                   "pools:\n  farm: {hosts: [one, three]}\n")

    def plan(hosts, ic_modes):
        m = tmp_path / "m.yaml"
        m.write_text(f"hosts: {hosts}\naxes: {{ic_mode: {ic_modes}}}\n")
        return prepare.load_plan([str(m)], str(inv))

    assert prepare.useful_workers(plan("[one]", "[dual, xics, xive]"), 2) == 1
    assert prepare.useful_workers(plan("[local]", "[dual, xics, xive]"), 8) == 2
    assert prepare.useful_workers(plan("[local]", "[dual]"), 2) == 1  # one cell
    assert prepare.useful_workers(plan("[one, local]", "[dual, xics]"), 8) == 3
    assert prepare.useful_workers(plan("[pool:farm]", "[dual, xics, xive, default]"), 8) == 4
    assert prepare.useful_workers(plan("[local]", "[dual, xics]"), 0) == 1


def test_each_matrix_of_a_run_keeps_its_own_timeouts_and_names_must_differ(tmp_path):
    # A run of a CAS matrix and a workload matrix with longer command timeouts: the workload
    # cells ran with the first matrix's 30 s (seen in CI as a guest "hung" under load).
    from harness import prepare
    from harness.errors import ConfigError
    from harness.specs import matrix_settings
    inv = tmp_path / "hosts.yaml"
    inv.write_text("hosts:\n  local: {kind: local, slots: 1}\n")
    cas, load = tmp_path / "cas.yaml", tmp_path / "load.yaml"
    cas.write_text("name: cas\nhosts: [local]\naxes: {ic_mode: [xics]}\ntimeouts: {boot: 120}\n")
    load.write_text("name: load\nhosts: [local]\naxes: {ic_mode: [dual]}\nworkloads: [ipi]\n"
                    "timeouts: {command: 60}\nmigration_max_bandwidth: 1000000\n")
    p = prepare.load_plan([str(cas), str(load)], str(inv))
    run = {"matrices": prepare.matrices_record(p.matrices)}
    by = {c.matrix: c for c in p.cells}
    assert matrix_settings(run, by["cas"].matrix) == ({"boot": 120.0, "command": 30.0, "shutdown": 10.0,
                                                       "liveness": 10.0}, None)
    assert matrix_settings(run, by["load"].matrix) == ({"boot": 90.0, "command": 60.0, "shutdown": 10.0,
                                                        "liveness": 10.0}, 1000000)
    # A run.json from before kept the first matrix's settings at its top level.
    assert matrix_settings({"matrices": [{"name": "load"}], "timeouts": {"command": 45}}, "load")[0]["command"] == 45
    load.write_text("name: cas\nhosts: [local]\naxes: {ic_mode: [dual]}\n")
    with pytest.raises(ConfigError, match="also the name of") as e:
        prepare.load_plan([str(cas), str(load)], str(inv))
    assert e.value.path == str(load) and e.value.key == "name"
