"""`--rerun-failures N`: a FAIL or ERROR cell runs again, up to N more times, and its record keeps
every attempt.

A cell that PASSed on a rerun is FLAKY: exit 0 like PASS (unless `--strict`), so a nightly farm
pages people only on failures that happen every time, and the history tracks the flaky ones
(`caskit history --flaky`), but only when no attempt showed a defect (verdict.defects: a kernel
finding, a QEMU crash, corrupted data): those are FAIL however rarely they show, and reruns stop
at the first. A FAIL followed by an XFAIL or a SKIP never passed: FAIL. One that failed every
time keeps its failure: FAIL if any attempt was FAIL, else ERROR.

Every attempt's logs are kept: before the next attempt, the cell directory's files move to
`cells/<id>/attempts/<n>/` and that attempt's `logs` point there; the final attempt's logs stay
where every cell's are. `results.json` finds only `cells/<id>/result.json`, so the attempts'
own result files never pass for cells.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Callable

from .cell import Verdict
from .results import RunStore
from .verdict import defects

FAILED = frozenset({Verdict.FAIL.value, Verdict.ERROR.value})
ATTEMPTS_DIR = "attempts"
# What a cell is (Cell.to_dict): the same for every attempt, so kept once, at the record's top.
IDENTITY = frozenset({"id", "host", "axes", "workloads", "migration_plan", "matrix", "append", "pinned", "peer"})


def final_verdict(verdicts: list[str], defective: bool = False) -> str:
    """The cell's verdict from its attempts' verdicts, in order, and whether any attempt showed a
    defect (pure)."""
    if not verdicts:
        raise ValueError("a cell has at least one attempt")
    last, earlier = verdicts[-1], verdicts[:-1]
    if defective:
        return Verdict.FAIL.value
    if last == Verdict.PASS.value:
        return Verdict.FLAKY.value if any(v in FAILED for v in earlier) else last
    if last not in FAILED:  # XFAIL or SKIP after a failure: it never passed
        return Verdict.FAIL.value if Verdict.FAIL.value in earlier else last
    return Verdict.FAIL.value if Verdict.FAIL.value in verdicts else Verdict.ERROR.value


def attempt_entry(record: dict, n: int) -> dict:
    """One attempt as the record keeps it: everything but the cell's identity (and any earlier
    attempts list), numbered from 1."""
    return {"attempt": n, **{k: v for k, v in record.items() if k not in IDENTITY and k != "attempts"}}


def done(record: dict) -> int:
    """How many attempts a stored record holds."""
    return len(record.get("attempts") or ()) or 1


def unfinished(record: dict | None, reruns: int) -> bool:
    """A stored FAIL or ERROR record with attempts still due (its run died between two, or this
    run allows more): --resume goes on from it instead of keeping it or starting over."""
    return record is not None and record.get("verdict") in FAILED and done(record) <= reruns


def archive(store: RunStore, cell_id: str, entry: dict) -> dict:
    """Move the cell directory's files (an ended attempt's logs and result) to attempts/<n>/, and
    point the entry's logs there."""
    d = store.cell_dir(cell_id)
    dest = d / ATTEMPTS_DIR / str(entry["attempt"])
    dest.mkdir(parents=True, exist_ok=True)
    for p in list(d.iterdir()) if d.exists() else ():
        if p.name != ATTEMPTS_DIR:
            shutil.move(str(p), str(dest / p.name))
    logs = {}
    for name, rel in (entry.get("logs") or {}).items():
        moved = dest / Path(rel).name
        logs[name] = str(moved.relative_to(store.out)) if moved.exists() else rel
    return {**entry, "logs": logs}


def _reason(verdicts: list[str], entries: list[dict], final: str) -> str:
    seq = ", ".join(verdicts)
    failed = [e for e in entries if e["verdict"] in FAILED]
    found = [(e["attempt"], d) for e in entries for d in defects(e)]
    if found:
        n, what = found[0]
        more = f" (and {len(found) - 1} more)" if len(found) > 1 else ""
        return f"FAIL: attempt {n} showed a defect, whatever the other attempts did ({seq}): {what}{more}"
    if final == Verdict.FLAKY.value:
        first = failed[0]
        return (f"passed on attempt {len(entries)} ({seq}): {entries[-1].get('reason', '')}; "
                f"attempt {first['attempt']} was {first['verdict']}: {first.get('reason', '')}")
    return f"{final} on every attempt ({seq}): {entries[-1].get('reason', '')}"


def combined(identity: dict, entries: list[dict]) -> dict:
    """The cell's record from its attempts (pure). Its body (observed, logs, workloads) is the
    attempt that decided the verdict: the last one, or for a FAIL that ended in ERROR, the last
    FAIL."""
    verdicts = [e["verdict"] for e in entries]
    final = final_verdict(verdicts, any(defects(e) for e in entries))
    body = entries[-1] if final in (Verdict.FLAKY.value, verdicts[-1]) else \
        next((e for e in reversed(entries) if e["verdict"] == final), entries[-1])
    out = {**identity, **{k: v for k, v in body.items() if k != "attempt"}}
    out.update(verdict=final, reason=_reason(verdicts, entries, final), attempts=entries,
               duration_s=round(sum(e.get("duration_s") or 0 for e in entries), 3))
    return out


def run_attempts(attempt: Callable[[], dict], store: RunStore, cell_id: str, reruns: int,
                 prior: list[dict] | None = None) -> dict:
    """Run the cell (`attempt` runs it once and writes its result.json) until it does not fail
    or 1 + `reruns` attempts are spent, counting `prior` ones (from a resumed record). Returns
    the cell's record, also written to the store. Without a rerun the record is the attempt's
    own, untouched."""
    entries = list(prior or ())
    while True:
        record = attempt()
        identity = {k: v for k, v in record.items() if k in IDENTITY}
        entries.append(attempt_entry(record, len(entries) + 1))
        if record.get("verdict") not in FAILED or len(entries) > reruns or defects(record):
            break  # passed, out of attempts, or a defect no later attempt can make green
        entries[-1] = archive(store, cell_id, entries[-1])
        # Until the next attempt ends, the cell's result is what it has so far: a run killed
        # now is resumed from here (resume_prior), not started over.
        store.write_cell(combined(identity, entries))
    if len(entries) == 1:
        return record
    out = combined(identity, entries)
    store.write_cell(out)
    return out


def resume_prior(store: RunStore, record: dict) -> list[dict]:
    """The attempts an unfinished stored record already spent, so the next attempt starts in a
    clean cell directory and is numbered after them."""
    entries = list(record.get("attempts") or [attempt_entry(record, 1)])
    d = store.cell_dir(record["id"])
    if (d / ATTEMPTS_DIR / str(entries[-1]["attempt"])).exists():
        # A record written between two attempts: those are archived, and any other file here is
        # the partial log of the attempt a killed run was in (result.json stays until the next
        # attempt replaces it, so another kill still resumes from here).
        for p in d.iterdir():
            if p.name not in (ATTEMPTS_DIR, "result.json"):
                shutil.rmtree(p) if p.is_dir() else p.unlink()
    else:
        entries[-1] = archive(store, record["id"], entries[-1])
    return entries
