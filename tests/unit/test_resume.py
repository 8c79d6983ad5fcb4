"""harness/resume.py: which stored cell results `--resume` may keep.

The decision is a pure function of the stored record and what this run would run the cell with
(run.json's kit and probed hosts, and the model's prediction now); the last test goes through the
command line with a cell that needs no boot (SKIP: KVM asked of a TCG-only host).
"""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from conftest import run_cli
from .factories import make_build, make_cell, make_facts
from harness import model, resume
from harness.cell import HostFacts

CELL = make_cell()
FACTS = make_facts(builds=(make_build("system", version="7.2.22"),))


def run_json(facts: HostFacts = FACTS, kit: str | None = "kit-a") -> dict:
    return {"kit": {"key": kit}, "hosts": {facts.name: json.loads(json.dumps(facts.to_dict()))}}


def stored(cell=CELL, facts: HostFacts = FACTS, **changes) -> dict:
    """The record a finished run of `cell` left, as read back from its result.json."""
    record = {**cell.to_dict(), "verdict": "PASS", "kit": "kit-a", "qemu_version": "7.2.22",
              "expected": model.predict(cell, facts).to_dict(), "observed": {"mode": "xive"},
              "provenance": resume.provenance(cell, facts, None, (), [])}
    return json.loads(json.dumps({**record, **changes}))


def why(record: dict, run: dict | None = None, cell=CELL) -> str | None:
    return resume.rerun_because(record, resume.current(cell, run or run_json()))


def test_an_unchanged_cell_is_kept():
    assert why(stored()) is None


@pytest.mark.parametrize("verdict", ["PASS", "FAIL", "XFAIL", "SKIP"])
def test_every_judged_verdict_is_kept_when_nothing_changed(verdict):
    assert why(stored(verdict=verdict)) is None


def test_an_error_runs_again():
    assert why(stored(verdict="ERROR")) == "it was ERROR"


def test_another_kit_runs_again():
    assert why(stored(kit="kit-old")) == "kit changed (kit-old -> kit-a)"


def test_a_kit_that_cannot_be_built_now_runs_again():
    assert why(stored(), run_json(kit=None)) == "kit changed (kit-a -> unknown)"


def test_a_record_without_a_kit_key_runs_again():
    record = stored()
    del record["kit"]
    assert why(record) == "kit changed (unknown -> kit-a)"


def test_another_qemu_version_runs_again():
    upgraded = replace(FACTS, qemu=(make_build("system", version="7.2.23"),))
    assert why(stored(), run_json(upgraded)) == "QEMU build system changed (7.2.22 -> 7.2.23)"


def test_a_build_gone_from_the_host_runs_again():
    gone = replace(FACTS, qemu=(make_build("other", version="7.2.22"),))
    assert why(stored(), run_json(gone)).startswith("QEMU build system changed (7.2.22 -> unknown)")


def test_the_version_of_the_cells_own_build_is_compared():
    cell = make_cell(qemu="backports")
    facts = replace(FACTS, qemu=(make_build("system", version="7.2.22"), make_build("backports", version="10.0.2")))
    record = stored(cell, facts, qemu_version="10.0.2")
    assert why(record, run_json(facts), cell) is None
    newer = replace(facts, qemu=(make_build("system", version="7.2.22"), make_build("backports", version="10.0.5")))
    assert why(record, run_json(newer), cell) == "QEMU build backports changed (10.0.2 -> 10.0.5)"


def test_another_expected_outcome_runs_again_naming_what_changed():
    record = stored()
    record["expected"]["mode"], record["expected"]["rule"] = "xics", "old-rule"
    reason = why(record)
    now = model.predict(CELL, FACTS)
    assert reason == f"expected outcome changed (mode: xics -> {now.mode}, rule: old-rule -> {now.rule})"


def test_a_prediction_that_changes_with_the_probed_facts_runs_again():
    # The machine's default ic-mode decides a cell with ic_mode default; a build whose default
    # moved predicts another outcome even at the same version.
    xics_default = replace(FACTS, qemu=(make_build("system", version="7.2.22", default_ic_mode="xics"),))
    reason = why(stored(), run_json(xics_default))
    assert reason is not None and reason.startswith("expected outcome changed (")


def test_several_changes_are_all_named():
    reason = why(stored(kit="kit-old", qemu_version="7.0.0"))
    assert reason == "kit changed (kit-old -> kit-a); QEMU build system changed (7.0.0 -> 7.2.22)"


def test_an_unreachable_host_cannot_confirm_a_stored_result():
    down = HostFacts.unreachable("local", "ssh: connection refused")
    assert why(stored(), run_json(down)) == ("its host cannot be probed now, so its result cannot be confirmed "
                                            "(ssh: connection refused)")


def test_a_stored_file_that_is_not_a_record_runs_again():
    assert resume.rerun_because(["not", "a", "record"], resume.current(CELL, run_json())) is not None


def test_tuples_and_lists_compare_as_stored():
    # model.predict gives tuples (notes); result.json gives lists back: not a change.
    now = resume.current(CELL, run_json())
    assert isinstance(now.expected["notes"], list)
    assert why(stored()) is None


def test_long_values_are_cut_short_in_the_reason():
    reason = why(stored(kit="k" * 200))
    assert reason.startswith("kit changed (" + "k" * 57 + "... -> kit-a)")


# ---------------------------------------------------------------- through the command line


def test_a_resumed_run_reruns_a_cell_whose_kit_changed_and_keeps_the_others(tmp_path):
    """Cells that need no boot (KVM asked of this TCG host: SKIP) and a user-supplied kit (no
    build): the whole run takes seconds."""
    (tmp_path / "vmlinux").write_bytes(b"\x7fELF")
    m = tmp_path / "m.yaml"
    m.write_text("hosts: [local]\naxes: {accel: [kvm], smp: [1, 2]}\nkit: {kernel: vmlinux}\n")
    out = tmp_path / "out"
    first = run_cli(["run", str(m)], out, timeout=300)
    cells = first.cells()
    if any(c["verdict"] != "SKIP" for c in cells.values()):
        pytest.skip("this host offers KVM to ppc64 guests: the cells would boot")
    assert first.rc == 0, first.stderr
    edited, kept = sorted(cells)
    f = out / "cells" / edited / "result.json"
    record = json.loads(f.read_text())
    record["kit"] = "a-kit-of-another-run"
    f.write_text(json.dumps(record))
    kept_before = (out / "cells" / kept / "result.json").read_text()

    again = run_cli(["run", str(m), "--resume"], out, timeout=300)
    assert again.rc == 0, again.stderr
    key = again.results["run"]["kit"]["key"]
    assert key.startswith("user-")  # a user kit is keyed by its files' content
    assert f"caskit: rerunning {edited}: kit changed (a-kit-of-another-run -> {key})" in again.stdout
    assert f"rerunning {kept}" not in again.stdout
    new = again.cells()
    assert new[edited]["rerun_because"] == f"kit changed (a-kit-of-another-run -> {key})"
    assert new[edited]["kit"] == key
    assert "rerun_because" not in new[kept]
    assert (out / "cells" / kept / "result.json").read_text() == kept_before  # kept as it was



# -- issue 21 item 10: reuse keyed by content ---------------------------------------------------

def test_a_qemu_rebuilt_with_the_same_version_line_runs_again():
    built = replace(FACTS, qemu=(make_build("system", version="7.2.22", sha256="a" * 64),))
    patched = replace(FACTS, qemu=(make_build("system", version="7.2.22", sha256="b" * 64),))
    record = stored(facts=built)
    assert why(record, run_json(built)) is None
    assert why(record, run_json(patched)) == "QEMU build system changed by content (sha256 aaaaaaaaaaaa -> bbbbbbbbbbbb)"


def test_a_known_issue_that_turned_the_cell_green_is_part_of_its_key():
    from harness.migration import known_issues as ki
    entry = {"id": "timers", "summary": "s", "reference": "r", "match": {"symptoms": ["no-heartbeat"]}}
    (issue,) = ki.parse({"issues": [entry]}, "k")
    record = json.loads(json.dumps({**stored(verdict="XFAIL"),
                                    "provenance": resume.provenance(CELL, FACTS, None, [issue], ["timers"])}))
    now = lambda issues: resume.rerun_because(record, resume.current(CELL, run_json(), issues))  # noqa: E731
    assert now([issue]) is None
    (edited,) = ki.parse({"issues": [{**entry, "match": {"symptoms": ["no-heartbeat", "unresponsive"]}}]}, "k")
    assert now([edited]) == "known issue timers changed"
    assert now([]) == "known issue timers is gone"


def test_host_facts_and_the_peer_build_are_part_of_the_key():
    assert why(stored(), run_json(replace(FACTS, kvm_mode="hv"))) is not None
    assert "the host's facts changed" in why(stored(), run_json(replace(FACTS, cpu="POWER10")))


def test_a_record_without_provenance_runs_again():
    record = stored()
    del record["provenance"]
    assert why(record) == "its record predates content keys (no provenance)"
