"""Whether `--resume` may keep a cell's stored result.

A stored record stands for its cell only while what the verdict depended on is unchanged: the
guest kit it booted, the QEMU build that ran it and what the model expected of it. A cell id
covers the host, the axes, the pins and the plan, not these, so a resumed run after a kit
rebuild, a QEMU upgrade or a model change would otherwise report results nobody ran. Pure: the
caller reads the record and run.json.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from . import model
from .cell import Cell, HostFacts, Verdict


@dataclass(frozen=True)
class Current:
    """What the cell would be run with now, from this run's run.json."""

    kit: str | None  # the kit's content key (None: the kit could not be built)
    qemu_version: str | None  # the cell's build as probed now (None: missing, or host unreachable)
    expected: dict | None  # model.predict now, as stored (None: the host cannot be predicted for)
    host_error: str | None = None  # the host could not be probed
    build: str = "system"  # the cell's QEMU build, by name


def _as_stored(value: Any) -> Any:
    """`value` as it reads back from a result.json (tuples become lists, the rest str)."""
    return json.loads(json.dumps(value, default=str))


def current(cell: Cell, run: dict) -> Current:
    facts = HostFacts.from_dict(run["hosts"][cell.host])
    build = facts.build(str(cell.axis("qemu")))
    # No prediction for a host that could not be probed: its facts are empty, and run_cell makes
    # such a cell ERROR without asking the model.
    expected = None if facts.error else _as_stored(model.predict(cell, facts).to_dict())
    return Current((run.get("kit") or {}).get("key"), build.version if build else None, expected, facts.error,
                   str(cell.axis("qemu")))


def _short(v: Any) -> str:
    s = "unknown" if v is None else str(v)
    return s if len(s) <= 60 else s[:57] + "..."


def _changed_fields(old: Any, new: dict) -> str:
    """`mode: xive -> xics, rule: a -> b`: the fields of the expected outcome that differ."""
    if not isinstance(old, dict):
        return f"{_short(old)} -> rule {_short(new.get('rule'))}"
    keys = [k for k in dict.fromkeys([*new, *old]) if old.get(k) != new.get(k)]
    return ", ".join(f"{k}: {_short(old.get(k))} -> {_short(new.get(k))}" for k in keys)


def rerun_because(record: dict, now: Current) -> str | None:
    """None when the stored record still stands for the cell; otherwise why it runs again."""
    if not isinstance(record, dict):
        return "its stored result is not a record"  # edited by hand, or another tool's file
    if record.get("verdict") == Verdict.ERROR.value:
        return "it was ERROR"  # never judged: always worth another try
    if now.host_error:
        return f"its host cannot be probed now, so its result cannot be confirmed ({_short(now.host_error)})"
    why = []
    if record.get("kit") != now.kit:
        why.append(f"kit changed ({_short(record.get('kit'))} -> {_short(now.kit)})")
    if record.get("qemu_version") != now.qemu_version:
        why.append(f"QEMU build {now.build} changed "
                   f"({_short(record.get('qemu_version'))} -> {_short(now.qemu_version)})")
    if now.expected is not None and _as_stored(record.get("expected")) != now.expected:
        why.append(f"expected outcome changed ({_changed_fields(record.get('expected'), now.expected)})")
    return "; ".join(why) or None
