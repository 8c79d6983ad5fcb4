"""harness/results.py (exit status, summary) and harness/report/ (junit.xml, report.html), on
synthetic results shaped like the ones cellrun writes."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

import pytest

from harness.cell import Expected, Observed
from harness.report import html_report, junit_xml
from harness.report.layout import matrix_layout
from harness.results import EXIT_ERROR, EXIT_FAIL, EXIT_OK, RunStore, exit_status, load_results, summary
from harness.errors import ConfigError

from .factories import make_cell

RUN = {"id": "20250101-000000-abcd", "start": "2025-01-01T00:00:00Z", "end": "2025-01-01T00:05:00Z",
       "caskit_version": "0.1.0", "git_sha": "0123456789abcdef0123", "controller": "box", "user": "ci",
       "matrices": [{"name": "quick", "path": "configs/matrices/quick.yaml"}], "hosts": {}}


def record(verdict: str, reason: str = "", *, mode: str | None = "xive", error: str | None = None,
           log_excerpt: str | None = None, duration: float = 1.5, **axes) -> dict:
    cell = make_cell(matrix="quick", **axes)
    return {**cell.to_dict(),
            "expected": Expected(mode=mode, rule="guest-picks-xive", source="test", byte23="0x80").to_dict(),
            "observed": Observed(mode=mode if verdict in ("PASS", "FAIL") else None, error=error,
                                 log_excerpt=log_excerpt).to_dict(),
            "verdict": verdict, "reason": reason or f"{verdict.lower()} reason", "duration_s": duration,
            "logs": {"console": f"cells/{cell.id}/console.log"}}


CELLS = [
    record("PASS", ic_mode="dual"),
    record("FAIL", "negotiated xics, expected xive", ic_mode="xics", log_excerpt="stderr tail"),
    record("ERROR", "timed out after 90s", ic_mode="xive"),
    record("XFAIL", "failed at qemu-start as predicted", ic_mode="xive", cpu_compat="power8", mode=None,
           error="XIVE-only machines require a POWER9 CPU"),
    record("SKIP", "host local has no KVM", accel="kvm"),
]


def results(cells=CELLS) -> dict:
    return {"run": RUN, "cells": cells, "summary": summary(cells)}


# ---------------------------------------------------------------- summary and exit status


def test_summary_counts_every_verdict():
    assert summary(CELLS) == {"PASS": 1, "FAIL": 1, "XFAIL": 1, "ERROR": 1, "SKIP": 1, "FLAKY": 0}


def test_summary_counts_a_cell_without_verdict_as_error():
    assert summary([{"id": "x"}, record("PASS")])["ERROR"] == 1


@pytest.mark.parametrize("verdicts, status", [
    ([], EXIT_OK),
    (["PASS", "XFAIL", "SKIP"], EXIT_OK),
    (["PASS", "FAIL"], EXIT_FAIL),
    (["PASS", "ERROR"], EXIT_ERROR),
    (["ERROR", "FAIL", "PASS"], EXIT_FAIL),  # FAIL wins: it is the one that pages people
    (["SKIP"], EXIT_OK),
])
def test_exit_status(verdicts, status):
    assert exit_status([{"verdict": v} for v in verdicts]) == status


def test_exit_status_values_are_the_documented_ones():
    assert (EXIT_OK, EXIT_FAIL, EXIT_ERROR) == (0, 1, 3)


@pytest.mark.parametrize("reported, planned, status", [(2, 3, EXIT_ERROR), (3, 3, EXIT_OK), (0, 1, EXIT_ERROR)])
def test_a_cell_that_never_reported_is_an_error(reported, planned, status):
    ids = [f"c{i}" for i in range(planned)]
    assert exit_status([{"id": ids[i], "verdict": "PASS"} for i in range(reported)], ids) == status


def test_a_missing_cell_does_not_hide_a_fail():
    assert exit_status([{"id": "c0", "verdict": "FAIL"}], [f"c{i}" for i in range(5)]) == EXIT_FAIL


def test_a_stale_record_outside_the_plan_does_not_stand_in_for_a_missing_cell():
    # Counts were compared before: an old result of an earlier matrix in the same --out made up
    # for the planned cell that never ran.
    assert exit_status([{"id": "old-matrix-cell", "verdict": "PASS"}, {"id": "c0", "verdict": "PASS"}],
                       ["c0", "c1"]) == EXIT_ERROR


def test_the_store_shows_every_planned_cell_and_only_those(tmp_path):
    store = RunStore(tmp_path)
    planned = [c["id"] for c in CELLS]
    store.write_run({**RUN, "cell_order": planned, "cells": [{"id": c["id"], "axes": c["axes"]} for c in CELLS]})
    store.write_cell(CELLS[0])
    store.write_cell({**CELLS[0], "id": "stale-from-an-earlier-matrix"})
    res = store.assemble()
    assert [c["id"] for c in res["cells"]] == planned
    assert [bool(c.get("not_run")) for c in res["cells"]] == [False] + [True] * (len(CELLS) - 1)
    assert res["cells"][1]["axes"] == CELLS[1]["axes"] and res["cells"][1]["verdict"] == "ERROR"
    assert res["summary"]["ERROR"] == len(CELLS) - 1


# ---------------------------------------------------------------- the store


def test_store_assembles_results_in_matrix_order(tmp_path):
    store = RunStore(tmp_path)
    store.write_run(RUN)
    for c in CELLS:
        store.write_cell(c)
    store.cell_dir("half-written").mkdir(parents=True)
    (store.cell_dir("half-written") / "result.json").write_text('{"id": "half')  # a killed worker's file
    order = [c["id"] for c in reversed(CELLS)]
    res = store.assemble(order, {"end": "later"})
    assert [c["id"] for c in res["cells"]] == order
    assert res["run"]["end"] == "later"
    assert res["summary"] == summary(CELLS)
    assert load_results(tmp_path) == json.loads(json.dumps(res))


def test_load_results_names_the_file(tmp_path):
    (tmp_path / "results.json").write_text("{}")
    with pytest.raises(ConfigError) as info:
        load_results(tmp_path)
    assert info.value.path == str(tmp_path / "results.json") and info.value.key == "cells"


# ---------------------------------------------------------------- junit.xml


@pytest.fixture(scope="module")
def suite() -> ET.Element:
    return ET.fromstring(junit_xml(results()).encode())


def test_junit_has_one_testcase_per_cell(suite):
    names = [tc.get("name") for tc in suite.iter("testcase")]
    assert names == [c["id"] for c in CELLS]
    assert {tc.get("classname") for tc in suite.iter("testcase")} == {"caskit.quick"}


def test_junit_suite_counts(suite):
    assert suite.tag == "testsuite"
    assert {k: suite.get(k) for k in ("tests", "failures", "errors", "skipped", "time")} == {
        "tests": "5", "failures": "1", "errors": "1", "skipped": "2", "time": "7.500"}


@pytest.mark.parametrize("verdict, child, message, text", [
    ("FAIL", "failure", "negotiated xics, expected xive", "stderr tail"),
    ("ERROR", "error", "timed out after 90s", "timed out after 90s"),
    ("XFAIL", "skipped", "XFAIL: failed at qemu-start as predicted", None),
    ("SKIP", "skipped", "SKIP: host local has no KVM", None),
])
def test_junit_outcome_elements(suite, verdict, child, message, text):
    (tc,) = [tc for tc in suite.iter("testcase") if tc.find("properties/property[@name='verdict']").get("value") == verdict]
    outcomes = [e for e in tc if e.tag in ("failure", "error", "skipped")]
    assert [e.tag for e in outcomes] == [child]
    assert outcomes[0].get("message") == message
    if text is not None:
        assert outcomes[0].text == text
    if child == "skipped":
        assert outcomes[0].get("type") == verdict.lower()


def test_junit_pass_has_no_outcome_element(suite):
    tc = next(suite.iter("testcase"))
    assert [e.tag for e in tc] == ["properties"]
    props = {p.get("name"): p.get("value") for p in tc.iter("property")}
    assert props == {"verdict": "PASS", "observed_mode": "xive", "expected_rule": "guest-picks-xive"}


def test_junit_records_provenance(suite):
    props = {p.get("name"): p.get("value") for p in suite.find("properties")}
    assert props["caskit.id"] == RUN["id"] and props["caskit.git_sha"] == RUN["git_sha"]
    assert props["caskit.caskit_version"] == "0.1.0"


def test_junit_escapes_markup_in_reasons():
    bad = record("FAIL", 'guest printed <b>&"quotes"</b>')
    tc = next(ET.fromstring(junit_xml(results([bad])).encode()).iter("testcase"))
    assert tc.find("failure").get("message") == 'guest printed <b>&"quotes"</b>'


# ---------------------------------------------------------------- report.html


def test_html_lists_every_cell():
    html = html_report(results())
    for c in CELLS:
        assert f'id="{c["id"]}"' in html and f'href="#{c["id"]}"' in html
    assert "<b>PASS</b> 1" in html and "<b>FAIL</b> 1" in html


def test_html_escapes_a_reason():
    evil = record("FAIL", "<script>alert('x')</script>", ic_mode="xics")
    html = html_report(results([evil, CELLS[0]]))
    assert "<script>" not in html
    assert "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;" in html


def test_html_matrix_uses_ic_mode_as_columns():
    col, cols, row_axes, rows, grid = matrix_layout(CELLS)
    assert col == "ic_mode"
    assert cols == ["dual", "xics", "xive", "default"]  # in the order the cells come
    assert row_axes == ["accel", "cpu_compat"]
    assert sum(len(v) for v in grid.values()) == len(CELLS)
    assert [c["verdict"] for c in grid[(("tcg", "power8"), "xive")]] == ["XFAIL"]
    assert [c["verdict"] for c in grid[(("kvm", "default"), "default")]] == ["SKIP"]


def test_html_report_of_one_cell():
    html = html_report(results([CELLS[0]]))
    assert CELLS[0]["id"] in html
    assert "Same in every cell: accel=tcg, ic_mode=dual" in html


def test_html_shows_kernel_findings_and_warnings():
    warn = "WARNING: CPU: 1 PID: 0 at arch/powerpc/sysdev/xive/common.c:1321 xive_irq_eoi+0x4c/0x90"
    c = record("PASS", ic_mode="dual")
    c["observed"]["kernel_warnings"] = [warn]
    bad = record("FAIL", "soft lockup", ic_mode="xics")
    bad["observed"]["kernel_findings"] = [{"kind": "soft-lockup", "line": "watchdog: BUG: soft lockup - CPU#1"}]
    html = html_report(results([c, bad]))
    assert warn in html and "kernel warnings (1)" in html
    assert "soft-lockup: watchdog: BUG: soft lockup - CPU#1" in html


def test_one_column_group_per_kvm_mode():
    run = {**RUN, "hosts": {"nested-hv": {"kvm_mode": "hv-nested"}, "powernv9": {"kvm_mode": "hv"}}}
    cells = []
    for host in ("nested-hv", "powernv9"):
        for ic in ("dual", "xics"):
            c = record("PASS", ic_mode=ic, accel="kvm")
            c["host"] = host
            cells.append(c)
    res = {"run": run, "cells": cells, "summary": summary(cells)}
    col, cols, row_axes, rows, grid = matrix_layout(cells, lambda c: ("hv-nested", "hv")[c["host"] == "powernv9"])
    assert col == "ic_mode" and cols == [("hv-nested", "dual"), ("hv-nested", "xics"), ("hv", "dual"), ("hv", "xics")]
    assert "host" not in row_axes and "accel" not in row_axes
    html = html_report(res)
    assert 'colspan="2" class="group">KVM mode: hv-nested' in html and 'class="group">KVM mode: hv<' in html
