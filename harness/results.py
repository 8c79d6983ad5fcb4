"""The results store: one JSON file per cell, written as soon as the cell ends, and the
run's results.json assembled from them. Reports read only what this module writes.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from .cell import Verdict
from .errors import ConfigError

EXIT_OK, EXIT_FAIL, EXIT_USAGE, EXIT_ERROR = 0, 1, 2, 3


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
        """results.json from run.json and every cell record, cells in matrix order."""
        run = self.read_run()
        run.update(extra_run or {})
        cells = self.cell_records()
        if order:
            rank = {cid: i for i, cid in enumerate(order)}
            cells.sort(key=lambda c: rank.get(c["id"], len(rank)))
        results = {"run": run, "cells": cells, "summary": summary(cells)}
        atomic_write(self.results_file, json.dumps(results, indent=2, default=str) + "\n")
        return results


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


def exit_status(cells: list[dict], expected_count: int | None = None, strict: bool = False) -> int:
    """0 all PASS/XFAIL/SKIP/FLAKY, 1 any FAIL, 3 any ERROR (or a cell that never reported)
    without FAIL. `strict` (caskit run --strict): a FLAKY cell counts as a FAIL, for jobs that
    must not tolerate a cell passing only on a rerun."""
    s = summary(cells)
    if s["FAIL"] or (strict and s.get("FLAKY")):
        return EXIT_FAIL
    if s["ERROR"] or (expected_count is not None and len(cells) < expected_count):
        return EXIT_ERROR
    return EXIT_OK
