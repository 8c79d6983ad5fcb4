"""harness/diff.py: the regression gate between two runs, on records shaped like cellrun's."""

from __future__ import annotations

import copy

import pytest

from harness import diff
from harness.cell import Expected, Observed

from .factories import make_cell


def rec(verdict: str = "PASS", mode: str | None = "xive", *, expected_mode: str | None = "xive", rule="guest-picks-xive",
        workloads=None, migration=None, **axes) -> dict:
    cell = make_cell(matrix="t", **axes)
    return {**cell.to_dict(),
            "expected": Expected(mode=expected_mode, rule=rule, source="test", byte23="0x80").to_dict(),
            "observed": Observed(mode=mode).to_dict(),
            "verdict": verdict, "reason": f"{verdict} reason", "duration_s": 2.0,
            "workloads": workloads or [], "migration": migration}


def results(run_id: str, *cells, planned=None) -> dict:
    run = {"id": run_id}
    if planned is not None:
        run["cell_order"] = planned
    return {"run": run, "cells": list(cells)}


def ipi(rate: float, verdict: str = "PASS") -> dict:
    return {"name": "ipi", "verdict": verdict, "reason": "ok", "metrics": {"ipis_per_s": rate}}


def net(msix: float, lsi: float) -> dict:
    return {"name": "virtio-net", "verdict": "PASS", "reason": "ok",
            "metrics": {"msix": {"irqs_per_s": msix}, "lsi": {"irqs_per_s": lsi}}}


def mig(*downtimes, status="completed") -> dict:
    return {"plan": "roundtrip", "verdict": "PASS",
            "hops": [{"name": f"h{i}", "verdict": "PASS", "qmp": {"status": status, "downtime_ms": d}}
                     for i, d in enumerate(downtimes)]}


def kinds(entries) -> list[tuple[str, str]]:
    return [(e.cell, e.kind) for e in entries]


def test_identical_runs_have_nothing_to_say():
    a = rec(ic_mode="dual")
    d = diff.diff(results("A", a), results("B", copy.deepcopy(a)))
    assert (d.regressions, d.fixes, d.changes, d.only_base, d.only_new) == ([], [], [], [], [])
    assert d.compared == 1 and d.exit_status == 0


@pytest.mark.parametrize("before", ["PASS", "XFAIL", "SKIP", "FLAKY"])
@pytest.mark.parametrize("after", ["FAIL", "ERROR"])
def test_good_to_bad_is_a_regression(before, after):
    b, n = rec(before, None), rec(after, None)
    d = diff.diff(results("A", b), results("B", n))
    assert kinds(d.regressions) == [(n["id"], "verdict")]
    assert d.regressions[0].what.startswith(f"{before} -> {after}")
    assert d.exit_status == 1


@pytest.mark.parametrize("before", ["FAIL", "ERROR"])
@pytest.mark.parametrize("after", ["PASS", "XFAIL", "FLAKY"])
def test_bad_to_good_is_a_fix(before, after):
    d = diff.diff(results("A", rec(before, None)), results("B", rec(after, None)))
    assert kinds(d.fixes) == [(rec()["id"], "verdict")] and d.regressions == [] and d.exit_status == 0


@pytest.mark.parametrize("before,after", [("PASS", "XFAIL"), ("PASS", "FLAKY"), ("FAIL", "ERROR"), ("SKIP", "PASS")])
def test_other_verdict_moves_are_changes_that_do_not_gate(before, after):
    d = diff.diff(results("A", rec(before, None)), results("B", rec(after, None)))
    assert kinds(d.changes) == [(rec()["id"], "verdict")]
    assert d.regressions == [] and d.exit_status == 0


def test_a_changed_negotiated_mode_is_a_regression_even_when_both_pass():
    # Both PASS with the same expectation cannot happen unless the model moved too; the mode
    # entry is there whatever the verdicts say.
    b = rec("PASS", "xive")
    n = rec("FAIL", "xics")
    d = diff.diff(results("A", b), results("B", n))
    assert kinds(d.regressions) == [(n["id"], "verdict"), (n["id"], "mode")]
    assert "negotiated xive -> xics" in d.regressions[1].what


def test_a_model_change_is_a_regression_naming_the_fields():
    b = rec("PASS", "xive")
    n = rec("PASS", "xics", expected_mode="xics", rule="guest-picks-xics")
    d = diff.diff(results("A", b), results("B", n))
    assert ("expected" in [e.kind for e in d.regressions]) and d.exit_status == 1
    e = next(e for e in d.regressions if e.kind == "expected")
    assert "mode 'xive' -> 'xics'" in e.what and "rule 'guest-picks-xive' -> 'guest-picks-xics'" in e.what


def test_a_reworded_rule_source_is_not_a_model_change():
    b, n = rec(), rec()
    n["expected"]["source"] = "another citation"
    n["expected"]["notes"] = ["offer-dual"]
    assert diff.diff(results("A", b), results("B", n)).regressions == []


def test_cells_only_on_one_side_are_listed_not_gated():
    a, b, c = rec(ic_mode="dual"), rec(ic_mode="xics"), rec(ic_mode="xive")
    d = diff.diff(results("A", a, b), results("B", b, c))
    assert kinds(d.only_base) == [(a["id"], "only-base")]
    assert kinds(d.only_new) == [(c["id"], "only-new")]
    assert d.exit_status == 0


def test_a_cell_the_new_run_planned_but_never_reported_gates():
    a, b = rec(ic_mode="dual"), rec(ic_mode="xics")
    d = diff.diff(results("A", a, b), results("B", a, planned=[a["id"], b["id"]]))
    assert kinds(d.regressions) == [(b["id"], "not-run")]
    assert d.only_base == []  # said once, as the regression


def test_metrics_are_read_from_passing_workloads_and_completed_hops():
    r = rec(workloads=[ipi(500.0), net(38.0, 20.0), ipi(1.0, "FAIL") | {"name": "virtio-blk"}],
            migration=mig(30, 45) | {"hops": mig(30, 45)["hops"] + [{"name": "x", "qmp": {"status": "failed", "downtime_ms": 1}}]})
    assert diff.metrics(r) == {"ipi.ipis_per_s": 500.0, "virtio-net.msix.irqs_per_s": 38.0,
                               "virtio-net.lsi.irqs_per_s": 20.0, "migration.h0.downtime_ms": 30.0,
                               "migration.h1.downtime_ms": 45.0}


def test_metrics_survive_odd_records():
    assert diff.metrics({"workloads": [None, {"name": "ipi", "verdict": "PASS"}], "migration": "none"}) == {}
    assert diff.metrics({"workloads": [{"name": "ipi", "verdict": "PASS", "metrics": {"ipis_per_s": True}}]}) == {}


BAND = diff.Band(1.3, 5.0, "lower")


@pytest.mark.parametrize("base,new,moved", [
    (100.0, 77.0, None),       # 1.30x: within
    (100.0, 76.0, "worse"),    # 1.32x, the bad way
    (100.0, 131.0, "better"),  # beyond, the good way
    (4.0, 0.0, None),          # the floor: 4 -> 0 is within 5 units, whatever the ratio
    (4.0, 10.0, "better"),
    (0.0, 10.0, "better"),     # from zero: beyond any factor
])
def test_metric_moves_against_a_band(base, new, moved):
    assert diff.metric_moved(base, new, BAND) == moved


def test_either_direction_band_makes_both_ways_worse():
    b = diff.Band(1.3, 3.0, "either")
    assert diff.metric_moved(40.0, 60.0, b) == "worse" and diff.metric_moved(40.0, 20.0, b) == "worse"


def test_a_rate_drop_beyond_the_band_is_a_regression_and_a_rise_a_change():
    bands = {"ipi.ipis_per_s": diff.Band(2.0, 10.0, "lower", "IPIs/s")}
    base = rec(workloads=[ipi(500.0)])
    slow, fast, same = rec(workloads=[ipi(200.0)]), rec(workloads=[ipi(1100.0)]), rec(workloads=[ipi(300.0)])
    d = diff.diff(results("A", base), results("B", slow), bands)
    assert kinds(d.regressions) == [(base["id"], "metric")]
    assert "ipi.ipis_per_s 500 -> 200 IPIs/s (-60%; band x2 and 10)" in d.regressions[0].what
    d = diff.diff(results("A", base), results("B", fast), bands)
    assert d.regressions == [] and kinds(d.changes) == [(base["id"], "metric")]
    assert diff.diff(results("A", base), results("B", same), bands).changes == []


def test_the_measured_swings_stay_inside_the_shipped_bands():
    """bench/README.md "Noise bands": the extremes seen between runs of one unchanged cell."""
    seen = {"ipi.ipis_per_s": (676.1, 239.3), "virtio-net.msix.irqs_per_s": (40.3, 33.7),
            "virtio-net.lsi.irqs_per_s": (22.0, 18.5), "virtio-blk.irqs_per_s": (144.9, 78.6),
            "migration.B.downtime_ms": (71.0, 18.0)}
    for name, (a, b) in seen.items():
        band = diff.band_for(name)
        assert diff.metric_moved(a, b, band) is None and diff.metric_moved(b, a, band) is None, name


def test_downtime_band_from_the_shipped_bands():
    base, worse = rec(migration=mig(30.0)), rec(migration=mig(300.0))
    d = diff.diff(results("A", base), results("B", worse))
    assert kinds(d.regressions) == [(base["id"], "metric")] and "migration.h0.downtime_ms" in d.regressions[0].what
    assert diff.diff(results("A", base), results("B", rec(migration=mig(120.0)))).regressions == []


def test_every_shipped_band_is_found_for_its_metrics():
    r = rec(workloads=[ipi(1.0), net(1.0, 1.0), {"name": "virtio-blk", "verdict": "PASS", "metrics": {"irqs_per_s": 1}}],
            migration=mig(1))
    assert all(diff.band_for(m) is not None for m in diff.metrics(r))


def test_text_and_dict_forms():
    b, n = rec("PASS"), rec("FAIL", "xics")
    d = diff.diff(results("A", b), results("B", n))
    text = diff.format_text(d, "base", "new")
    assert text.splitlines()[0] == "caskit diff base (A) -> new (B): 1 cells in both"
    assert "regressions (2):" in text and text.splitlines()[-1].startswith("2 regression(s), 0 fix(es)")
    as_dict = d.to_dict()
    assert as_dict["exit_status"] == 1 and as_dict["regressions"][0]["kind"] == "verdict"
    assert "ipi.ipis_per_s" in as_dict["bands"]


def test_report_html_shows_the_diff_against_a_baseline(tmp_path):
    """`caskit report DIR --baseline BASE` hands the diff to the report as run.baseline."""
    from harness.report import html_report
    from harness.results import summary

    b, n = rec("PASS"), rec("FAIL", "xics")
    for c in (b, n):
        c["logs"] = {}
    d = diff.diff(results("A", b), results("B", n))
    run = {"id": "B", "start": "s", "end": "e", "caskit_version": "0", "git_sha": None, "matrices": [], "hosts": {},
           "baseline": {**d.to_dict(), "label": "base-dir"}}
    html = html_report({"run": run, "cells": [n], "summary": summary([n])})
    assert '<h2 id="baseline">Against baseline <code>base-dir</code> (A)</h2>' in html
    assert html.count('<tr class="regression">') == 2 and "negotiated xive -&gt; xics" in html
    del run["baseline"]
    assert 'id="baseline"' not in html_report({"run": run, "cells": [n], "summary": summary([n])})


def test_a_cell_failing_in_both_runs_differently_is_a_regression():
    lost = rec("FAIL", workloads=[{"name": "ipi", "verdict": "FAIL", "symptom": "ipi-stopped", "reason": "IPIs lost"}])
    panic = rec("FAIL", workloads=[{"name": "ipi", "verdict": "FAIL", "reason": "GuestPanic: Kernel panic"}])
    panic["observed"]["kernel_findings"] = [{"kind": "panic", "line": "Kernel panic - not syncing: x"}]
    d = diff.diff(results("a", lost), results("b", panic))
    assert [e.kind for e in d.regressions] == ["failure"] and d.exit_status == 1
    assert "ipi-stopped" in d.regressions[0].what and "kernel panic" in d.regressions[0].what


def test_a_cell_failing_the_same_way_in_both_is_listed_not_gating():
    lost = rec("FAIL", workloads=[{"name": "ipi", "verdict": "FAIL", "symptom": "ipi-stopped", "reason": "IPIs lost"}])
    d = diff.diff(results("a", lost), results("b", copy.deepcopy(lost)))
    assert d.regressions == [] and [e.cell for e in d.still_failing] == [lost["id"]] and d.exit_status == 0
    assert "failing in both runs" in diff.format_text(d)


def test_pass_to_flaky_gates_only_with_strict():
    a, b = rec("PASS"), rec("FLAKY")
    assert diff.diff(results("a", a), results("b", b)).exit_status == 0
    strict = diff.diff(results("a", a), results("b", b), strict=True)
    assert strict.exit_status == 1 and strict.regressions[0].kind == "verdict"


def test_a_planned_cell_the_history_run_never_reported_is_not_run_not_only_in_base():
    a, b = rec("PASS", ic_mode="dual"), rec("PASS", ic_mode="xics")
    d = diff.diff(results("a", a, b, planned=[a["id"], b["id"]]), results("b", a, planned=[a["id"], b["id"]]))
    assert [(e.cell, e.kind) for e in d.regressions] == [(b["id"], "not-run")] and d.only_base == []
