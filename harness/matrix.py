"""Matrix expansion: a Matrix becomes a list of Cells. Pure: no I/O."""

from __future__ import annotations

import itertools

from .axes import AXIS_NAMES
from .specs import Matrix
from .cell import Cell


def _excluded(axes: dict, excludes: tuple[dict, ...]) -> bool:
    return any(all(axes[k] == v for k, v in e.items()) for e in excludes)


def expand(m: Matrix) -> list[Cell]:
    """The cross product of every axis, per host and migration plan, less the excluded cells.

    Order is deterministic (host, then axes in AXIS_NAMES order as written in the file) so that
    two runs of one matrix list cells alike.
    """
    cells: list[Cell] = []
    seen: set[str] = set()
    for host in m.hosts:
        for plan in m.migration:
            axes_here = m.axes_for(host)
            for combo in itertools.product(*(axes_here[n] for n in AXIS_NAMES)):
                axes = dict(zip(AXIS_NAMES, combo))
                if _excluded(axes, m.exclude):
                    continue
                cell = Cell(host, tuple(axes.items()), m.workloads, plan, m.name, m.append)
                if cell.id not in seen:
                    seen.add(cell.id)
                    cells.append(cell)
    return cells


def expand_all(matrices: list[Matrix]) -> list[Cell]:
    """Cells of several matrices; a cell listed by two matrices runs once."""
    out: dict[str, Cell] = {}
    for m in matrices:
        for c in expand(m):
            out.setdefault(c.id, c)
    return list(out.values())
