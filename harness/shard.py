"""One matrix across several controllers (`caskit run --shard K/N`), and their runs merged into
one (`caskit report --merge DIR... -o DIR`). Pure: cells and results in, cells and results out.

A farm's CI engine (GitLab `parallel:`, a Jenkins matrix) starts N jobs with the same matrix and
`--shard 1/N` ... `--shard N/N`. Each runs the cells of its shard and records the whole plan, so
the merge knows every planned cell even when a shard never reported: those cells are "not run",
and the merged run exits 3 like any partial run.

The split is stable (by a hash of a group key, not by position: adding a cell to the matrix moves
no other cell between shards) and keeps together the cells that share something expensive:
every cell of one emulated host, whose L1 boot the shard's run makes once.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass

from .cell import Cell
from .errors import ConfigError
from .results import planned_records, summary

SHARD_RE = re.compile(r"([1-9][0-9]{0,3})/([1-9][0-9]{0,3})")


@dataclass(frozen=True)
class Shard:
    index: int  # 1-based, as the command line says it
    of: int

    def __str__(self) -> str:
        return f"{self.index}/{self.of}"


def parse(text: str) -> Shard:
    m = SHARD_RE.fullmatch(text or "")
    if not m or not 1 <= int(m.group(1)) <= int(m.group(2)):
        raise ConfigError("command line", "--shard", f"{text!r} is not K/N with 1 <= K <= N (e.g. 2/3)")
    return Shard(int(m.group(1)), int(m.group(2)))


def group_key(cell: Cell, emulated_hosts: set[str]) -> str:
    """What a cell must share a shard with: its emulated host (one L1 boot per shard), else nothing."""
    return f"host:{cell.host}" if cell.host in emulated_hosts else f"cell:{cell.id}"


def member(key: str, shard: Shard) -> bool:
    h = int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big")
    return h % shard.of == shard.index - 1


def select(cells: list[Cell], shard: Shard | None, emulated_hosts: set[str]) -> list[Cell]:
    """The cells of `shard`, in plan order (every cell without a shard)."""
    if shard is None:
        return list(cells)
    return [c for c in cells if member(group_key(c, emulated_hosts), shard)]


class MergeError(ValueError):
    """Runs that are not shards of one plan."""


def merge(runs: list[tuple[str, dict]], out_dir: str) -> dict:
    """One results object from the shards' results (`(directory, results)` pairs): every cell of
    the whole plan, each from the shard that ran it, "not run" where no shard reported it. Each
    cell's log paths are made relative to `out_dir`, where the merged report is written."""
    if not runs:
        raise MergeError("nothing to merge")
    plans = {}
    for where, res in runs:
        sh = (res.get("run") or {}).get("shard")
        if not sh:
            raise MergeError(f"{where}: not a shard (its run has no --shard)")
        plans[where] = (tuple(sh["plan"]), int(sh["of"]), int(sh["index"]))
    (plan, of, _), *_ = plans.values()
    for where, (p, n, k) in plans.items():
        if (p, n) != (plan, of):
            raise MergeError(f"{where}: shard {k}/{n} of another plan than {runs[0][0]} (matrix or inventory differ)")
    seen: dict[int, str] = {}
    for where, (_, _, k) in plans.items():
        if k in seen:
            raise MergeError(f"{where}: shard {k}/{of} again (also {seen[k]}); give each shard once")
        seen[k] = where
    records: dict[str, dict] = {}
    specs: dict[str, dict] = {}
    for where, res in runs:
        for c in (res.get("run") or {}).get("cells") or ():
            specs.setdefault(c["id"], c)
        for c in res.get("cells") or ():
            if not c.get("not_run") and c["id"] in plan:
                logs = {k: os.path.relpath(os.path.join(where, v), out_dir) for k, v in (c.get("logs") or {}).items()}
                records[c["id"]] = {**c, "logs": logs, "shard": res["run"]["shard"]["index"]}
    first = runs[0][1]["run"]
    for _, res in runs:
        for c in (res["run"].get("shard") or {}).get("plan_specs") or ():
            specs.setdefault(c["id"], c)
    cells = planned_records(list(plan), list(records.values()), list(specs.values()))
    hosts: dict = {}
    for _, res in runs:
        hosts.update(res["run"].get("hosts") or {})
    run = {**first, "id": f"{first['id']}-merged", "cell_order": list(plan), "cells": list(specs.values()),
           "hosts": hosts, "shard": None,
           "merged": {"of": of, "shards": {str(k): {"dir": where, "run": res["run"]["id"]}
                                           for (where, res), (_, _, k) in zip(runs, plans.values())},
                      "missing_shards": sorted(set(range(1, of + 1)) - set(seen))},
           "start": min(r["run"].get("start") or "" for _, r in runs),
           "end": max(r["run"].get("end") or "" for _, r in runs)}
    return {"run": run, "cells": cells, "summary": summary(cells)}
