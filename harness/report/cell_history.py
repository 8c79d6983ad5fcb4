"""The hook through which a cell's page shows the cell's history across runs.

The results history (a database of every finished cell, harness/history.py) is another part of
caskit; the report builds none of its own and asks it here, and only here: the run's history
(`resolve_url(None, out)`: $CASKIT_DB, else history.sqlite beside the run directory), then
`cell_history(db, cell_id)` (HISTORY_FUNCTION), newest first. Whatever is missing (the module,
one of those functions, the database file) becomes a note the page shows instead, so the report
never depends on the history being there.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

HISTORY_MODULE = "harness.history"
HISTORY_FUNCTION = "cell_history"
NEEDED = ("resolve_url", "exists", "connect", HISTORY_FUNCTION)


@dataclass(frozen=True)
class History:
    rows: list[dict] = field(default_factory=list)  # oldest first
    note: str = ""  # why there is no history, when there is none

    @property
    def available(self) -> bool:
        return bool(self.rows)


def _row(r) -> dict:
    """One run of the cell, from a mapping or an object (history.CellAt)."""
    g = r.get if isinstance(r, dict) else (lambda k, d=None: getattr(r, k, d))
    return {"run": str(g("run_id") or g("run") or "?"), "start": str(g("run_started") or g("started") or ""),
            "verdict": str(g("verdict") or "?"), "duration_s": g("duration_s"),
            "mode": g("observed_mode") or g("mode")}


def lookup(out: Path, cell_id: str) -> History:
    import importlib

    try:
        mod = importlib.import_module(HISTORY_MODULE)
    except ImportError:
        return History(note=f"no results history: {HISTORY_MODULE} is not part of this caskit")
    missing = [n for n in NEEDED if not callable(getattr(mod, n, None))]
    if missing:
        return History(note=f"no results history: {HISTORY_MODULE} has no {', '.join(missing)}")
    try:
        url = mod.resolve_url(None, Path(out))
        if url is None:
            return History(note="the results history is off")
        if not mod.exists(url):
            return History(note="no results history beside this run")
        with mod.connect(url) as db:
            rows = [_row(r) for r in getattr(mod, HISTORY_FUNCTION)(db, cell_id)]
    except Exception as e:  # noqa: BLE001 -- a history that cannot be read must not cost the report
        return History(note=f"the results history could not be read: {type(e).__name__}: {e}")
    rows.reverse()  # the history answers newest first; the chart reads left to right
    return History(rows, "" if rows else "no runs of this cell in the results history")
