"""The results store: one JSON file per cell, written as soon as the cell ends, and the
run's results.json assembled from them. Reports read only what this module writes.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from .cell import Expected, Observed, Verdict
from .errors import ConfigError

EXIT_OK, EXIT_FAIL, EXIT_USAGE, EXIT_ERROR = 0, 1, 2, 3


def reports_dir() -> Path:
    """Where runs go by default: reports/ under the working directory (an installed caskit's
    own directory is site-packages, no place for results)."""
    return Path.cwd() / "reports"


def atomic_write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)


class RunStore:
    def __init__(self, out: Path):
        self.out = Path(out)

    @property
    def run_file(self) -> Path:
        return self.out / "run.json"

    @property
    def results_file(self) -> Path:
        return self.out / "results.json"

    def cell_dir(self, cell_id: str) -> Path:
        return self.out / "cells" / cell_id

    def write_run(self, run: dict) -> None:
        atomic_write(self.run_file, json.dumps(run, indent=2, default=str) + "\n")

    def read_run(self) -> dict:
        return json.loads(self.run_file.read_text())

    def write_cell(self, record: dict) -> None:
        atomic_write(self.cell_dir(record["id"]) / "result.json", json.dumps(record, indent=2, default=str) + "\n")

    def read_cell(self, cell_id: str) -> dict | None:
        p = self.cell_dir(cell_id) / "result.json"
        try:
            return json.loads(p.read_text())
        except (OSError, ValueError):
            return None

    def cell_records(self) -> list[dict]:
        out = []
        for p in sorted((self.out / "cells").glob("*/result.json")):
            try:
                out.append(json.loads(p.read_text()))
            except ValueError:
                continue  # a half-written file of a killed worker; the cell counts as not run
        return out

    def assemble(self, order: list[str] | None = None, extra_run: dict[str, Any] | None = None) -> dict:
        """results.json from run.json and the cell records, in matrix order: exactly the run's
        planned cells (run.json's cell_order). A planned cell without a record is a "not run"
        record (ERROR); a record of a cell the run did not plan (left in the same --out by an
        earlier matrix) is not this run's and is left out."""
        run = self.read_run()
        run.update(extra_run or {})
        planned = order if order is not None else run.get("cell_order")
        results = {"run": run, "cells": planned_records(planned, self.cell_records(), run.get("cells"))}
        results["summary"] = summary(results["cells"])
        atomic_write(self.results_file, json.dumps(results, indent=2, default=str) + "\n")
        return results


NOT_RUN = "not run: no result was recorded for this planned cell (the run was stopped, or its worker died, first)"


def not_run(cell_id: str, spec: dict | None = None) -> dict:
    """The record of a planned cell that never reported: ERROR everywhere, marked `not_run`, with
    the cell's identity from the plan (`spec`: Cell.to_dict) so every view can place it."""
    return {"axes": {}, "host": "", **(spec or {}), "id": cell_id, "verdict": Verdict.ERROR.value, "reason": NOT_RUN,
            "not_run": True, "expected": Expected(None, "not-run", "the run's plan (run.json cell_order)").to_dict(),
            "observed": Observed(error=NOT_RUN, infra=True).to_dict(), "logs": {}, "duration_s": 0.0,
            "workloads": [], "migration": None}


def planned_records(planned: list[str] | None, records: list[dict], specs: list[dict] | None = None) -> list[dict]:
    """The planned cells' records in plan order, "not run" where a cell has none (pure). Without
    a plan (a results file older than cell_order), the records as they are."""
    if planned is None:
        return list(records)
    by_id = {r["id"]: r for r in records if "id" in r}
    spec = {c["id"]: c for c in specs or () if isinstance(c, dict) and "id" in c}
    return [by_id.get(cid) or not_run(cid, spec.get(cid)) for cid in planned]


def load_run(out: Path) -> dict:
    """A run directory's results, assembled anew from its store where it has one (run.json and
    the cells' own records are the truth: a controller killed before results.json was written,
    or one written before the last cells ended, still shows every planned cell)."""
    store = RunStore(Path(out))
    if not store.run_file.is_file():
        return load_results(out)
    try:
        prev = load_results(out)["run"]
    except ConfigError:
        prev = {}
    try:
        return store.assemble(None, {k: v for k, v in prev.items() if k not in ("cell_order", "cells")})
    except ValueError as e:
        raise ConfigError(str(store.run_file), None, f"not valid JSON: {e}") from e


def load_results(out: Path) -> dict:
    p = Path(out) / "results.json"
    try:
        data = json.loads(p.read_text())
    except OSError as e:
        raise ConfigError(str(p), None, f"cannot read results: {e.strerror}") from e
    except ValueError as e:
        raise ConfigError(str(p), None, f"not valid JSON: {e}") from e
    if not isinstance(data, dict) or "cells" not in data or "run" not in data:
        raise ConfigError(str(p), "cells", "not a caskit results file (needs `run` and `cells`)")
    return data


def summary(cells: list[dict]) -> dict[str, int]:
    counts = {v.value: 0 for v in Verdict}
    for c in cells:
        counts[c.get("verdict", "ERROR")] = counts.get(c.get("verdict", "ERROR"), 0) + 1
    return counts


def exit_status(cells: list[dict], planned: list[str] | None = None, strict: bool = False) -> int:
    """The one exit status of a run, from its planned cell ids and its records: 0 all
    PASS/XFAIL/SKIP/FLAKY, 1 any FAIL, 3 any ERROR or a planned cell without a record, without
    FAIL. `strict` (caskit run --strict): a FLAKY cell counts as a FAIL, for jobs that must not
    tolerate a cell passing only on a rerun. Records of cells outside the plan do not count."""
    s = summary(planned_records(planned, cells))
    if s["FAIL"] or (strict and s.get("FLAKY")):
        return EXIT_FAIL
    if s["ERROR"]:
        return EXIT_ERROR
    return EXIT_OK


def run_exit_status(results: dict, strict: bool = False) -> int:
    """exit_status of a results.json (its run's planned cells)."""
    return exit_status(results["cells"], results["run"].get("cell_order"), strict)
