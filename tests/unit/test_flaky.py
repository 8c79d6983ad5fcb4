"""harness/flaky.py: reruns of failed cells, their verdict, and every attempt's logs kept."""

from __future__ import annotations

import json

import pytest

from harness import flaky
from harness.results import EXIT_FAIL, EXIT_OK, RunStore, exit_status

from .factories import make_cell

CELL = make_cell(matrix="t")


@pytest.mark.parametrize("verdicts,final", [
    (["PASS"], "PASS"),
    (["FAIL"], "FAIL"),
    (["FAIL", "PASS"], "FLAKY"),
    (["ERROR", "PASS"], "FLAKY"),
    (["FAIL", "XFAIL"], "FAIL"),  # it never passed: an XFAIL after a FAIL is no PASS
    (["ERROR", "XFAIL"], "XFAIL"),  # the first attempt could not judge; the second did
    (["FAIL", "SKIP"], "FAIL"),
    (["FAIL", "FAIL", "FAIL"], "FAIL"),
    (["ERROR", "ERROR"], "ERROR"),
    (["ERROR", "FAIL"], "FAIL"),
    (["FAIL", "ERROR"], "FAIL"),  # the system failed once and never passed: not hidden as ERROR
])
def test_final_verdict(verdicts, final):
    assert flaky.final_verdict(verdicts) == final


@pytest.mark.parametrize("verdicts", [["FAIL", "PASS"], ["ERROR", "PASS"], ["FAIL", "FAIL", "PASS"]])
def test_a_defect_in_any_attempt_is_fail_whatever_came_after(verdicts):
    assert flaky.final_verdict(verdicts, defective=True) == "FAIL"


OOPS = {"kind": "oops", "line": "Oops: Kernel access of bad area, sig: 11 [#1]"}


@pytest.mark.parametrize("first,what", [
    ({"observed": {"kernel_findings": [OOPS]}}, "the guest kernel logged oops"),
    ({"observed": {"error_kind": "QemuCrashed", "error": "QEMU crashed (SIGSEGV)"}}, "QemuCrashed"),
    ({"workloads": [{"name": "virtio-blk", "verdict": "FAIL", "symptom": "disk-data-corrupt",
                     "reason": "read-back differs"}]}, "disk-data-corrupt"),
    ({"workloads": [{"name": "ipi", "verdict": "FAIL", "reason": "GuestPanic: Kernel panic - not syncing"}]}, "GuestPanic"),
])
def test_a_pass_after_a_defect_is_fail_with_every_attempt_kept(first, what):
    identity = {"id": "c1", "host": "local", "axes": {}}
    entries = [{"attempt": 1, "verdict": "FAIL", "reason": "bad", "observed": {}, **first},
               {"attempt": 2, "verdict": "PASS", "reason": "xive as predicted", "observed": {}}]
    rec = flaky.combined(identity, entries)
    assert rec["verdict"] == "FAIL" and what in rec["reason"], rec["reason"]
    assert [a["verdict"] for a in rec["attempts"]] == ["FAIL", "PASS"]


class FakeCell:
    """run_cell's part: writes the cell's logs and result.json, returns the record."""

    def __init__(self, store: RunStore, verdicts: list[str]):
        self.store, self.verdicts, self.calls = store, list(verdicts), 0

    def __call__(self) -> dict:
        v = self.verdicts[self.calls]
        self.calls += 1
        d = self.store.cell_dir(CELL.id)
        d.mkdir(parents=True, exist_ok=True)
        (d / "console.log").write_text(f"boot {self.calls}\n")
        rec = {**CELL.to_dict(), "verdict": v, "reason": f"{v} on call {self.calls}", "duration_s": 1.5,
               "observed": {"mode": "xive" if v == "PASS" else None}, "logs": {"console": f"cells/{CELL.id}/console.log"}}
        self.store.write_cell(rec)
        return rec


def test_a_pass_is_untouched(tmp_path):
    store = RunStore(tmp_path)
    fake = FakeCell(store, ["PASS"])
    rec = flaky.run_attempts(fake, store, CELL.id, reruns=2)
    assert fake.calls == 1 and "attempts" not in rec and rec["verdict"] == "PASS"


def test_no_reruns_asked_keeps_the_failure_as_it_is(tmp_path):
    store = RunStore(tmp_path)
    rec = flaky.run_attempts(FakeCell(store, ["FAIL"]), store, CELL.id, reruns=0)
    assert rec["verdict"] == "FAIL" and "attempts" not in rec


def test_failed_then_passed_is_flaky_with_both_attempts_and_their_logs(tmp_path):
    store = RunStore(tmp_path)
    fake = FakeCell(store, ["FAIL", "PASS", "PASS"])
    rec = flaky.run_attempts(fake, store, CELL.id, reruns=2)
    assert fake.calls == 2
    assert rec["verdict"] == "FLAKY" and [a["verdict"] for a in rec["attempts"]] == ["FAIL", "PASS"]
    assert rec["reason"].startswith("passed on attempt 2 (FAIL, PASS)") and "attempt 1 was FAIL" in rec["reason"]
    assert rec["duration_s"] == 3.0 and rec["observed"]["mode"] == "xive" and rec["id"] == CELL.id
    first, second = rec["attempts"]
    assert first["attempt"] == 1 and "id" not in first and "axes" not in first
    assert (tmp_path / first["logs"]["console"]).read_text() == "boot 1\n"
    assert first["logs"]["console"] == f"cells/{CELL.id}/attempts/1/console.log"
    assert (tmp_path / second["logs"]["console"]).read_text() == "boot 2\n" == (tmp_path / rec["logs"]["console"]).read_text()
    assert json.loads((store.cell_dir(CELL.id) / "result.json").read_text()) == rec
    assert store.cell_records() == [rec]  # the attempts' own result files are not cells
    assert exit_status([rec]) == EXIT_OK and exit_status([rec], strict=True) == EXIT_FAIL


def test_failing_every_time_stays_fail_after_n_plus_one_attempts(tmp_path):
    store = RunStore(tmp_path)
    fake = FakeCell(store, ["FAIL", "ERROR", "FAIL"])
    rec = flaky.run_attempts(fake, store, CELL.id, reruns=2)
    assert fake.calls == 3 and rec["verdict"] == "FAIL"
    assert [a["attempt"] for a in rec["attempts"]] == [1, 2, 3]
    assert rec["reason"].startswith("FAIL on every attempt (FAIL, ERROR, FAIL)")
    assert sorted(p.name for p in (store.cell_dir(CELL.id) / "attempts").iterdir()) == ["1", "2"]


def test_a_fail_that_ends_in_error_keeps_the_fail_attempt_as_its_body(tmp_path):
    store = RunStore(tmp_path)
    rec = flaky.run_attempts(FakeCell(store, ["FAIL", "ERROR"]), store, CELL.id, reruns=1)
    assert rec["verdict"] == "FAIL" and rec["logs"]["console"].endswith("attempts/1/console.log")


def test_between_attempts_the_stored_record_says_what_happened_so_far(tmp_path):
    store = RunStore(tmp_path)
    seen = []

    def attempt():
        if seen:  # the second attempt: what a killed run would leave behind now
            seen.append(store.read_cell(CELL.id))
            raise KeyboardInterrupt
        seen.append(None)
        return FakeCell(store, ["FAIL"])()

    with pytest.raises(KeyboardInterrupt):
        flaky.run_attempts(attempt, store, CELL.id, reruns=2)
    interim = seen[1]
    assert interim["verdict"] == "FAIL" and len(interim["attempts"]) == 1
    assert flaky.unfinished(interim, 2) and not flaky.unfinished(interim, 0)


def test_resume_goes_on_from_an_interim_record_and_drops_the_killed_attempts_partial_logs(tmp_path):
    store = RunStore(tmp_path)
    fake = FakeCell(store, ["FAIL"])
    with pytest.raises(IndexError):  # the fake has one verdict: the second attempt "dies"
        flaky.run_attempts(fake, store, CELL.id, reruns=3)
    d = store.cell_dir(CELL.id)
    (d / "console.log").write_text("partial boot of the killed attempt\n")
    record = store.read_cell(CELL.id)
    prior = flaky.resume_prior(store, record)
    assert [e["attempt"] for e in prior] == [1]
    assert sorted(p.name for p in d.iterdir()) == ["attempts", "result.json"]
    rec = flaky.run_attempts(FakeCell(store, ["PASS"]), store, CELL.id, reruns=3, prior=prior)
    assert rec["verdict"] == "FLAKY" and [a["attempt"] for a in rec["attempts"]] == [1, 2]


def test_resume_of_a_plain_failed_record_archives_it_as_attempt_one(tmp_path):
    store = RunStore(tmp_path)
    rec = FakeCell(store, ["FAIL"])()
    assert flaky.unfinished(rec, 1) and not flaky.unfinished({**rec, "verdict": "PASS"}, 1)
    prior = flaky.resume_prior(store, rec)
    assert prior[0]["logs"]["console"] == f"cells/{CELL.id}/attempts/1/console.log"
    assert (tmp_path / prior[0]["logs"]["console"]).exists() and not (store.cell_dir(CELL.id) / "console.log").exists()
