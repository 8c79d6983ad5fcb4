"""Pools of interchangeable hosts: health checks before a member takes cells, and running each
cell of the pool once, on whichever healthy member can offer it and has a free slot first.

A farm's nightly job names `hosts: [pool:p9]`; the cell's id names the pool (runs compare across
nights whichever member ran it) and its record names the member (`ran_on`). Every health check
is a result of the run (results.json, JUnit, the exit status): a check that FAILs is the system
under test failing on that member, never swallowed. Only a member whose trouble is its own (down,
unreachable, a check that is ERROR) or that drops mid-run is set aside for the rest of the run,
with the reason, and its unfinished cells go to the others; a pool with no member left makes its
cells ERROR. A cell whose member dropped while the cell ran on it keeps that attempt: it is FAIL
even if another member then passed it (a guest that takes its host down is a defect until shown
otherwise). The set-aside list is a directory of small files in the run's output, so every
xdist worker (and a resumed controller) sees what the others found.
"""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Callable

from . import model
from .cell import Cell, HostFacts, Verdict
from .specs import POOL_PREFIX, PoolSpec
from .errors import CaskitError, HostError

# An ERROR whose cause is the member itself: the cell did not fail, the host did; it goes to
# another member and this one is set aside.
HOST_LOST = ("HostError", "host-unreachable")


def is_pool(host: str) -> bool:
    return host.startswith(POOL_PREFIX)


def pool_name(host: str) -> str:
    return host[len(POOL_PREFIX):]


def members_used(cells: list[Cell], pools: dict[str, PoolSpec]) -> set[str]:
    return {m for c in cells if is_pool(c.host) for m in pools[pool_name(c.host)].hosts}


def health_cell(pool: PoolSpec, member: str) -> Cell:
    return Cell(member, pool.health_check, matrix=f"health-{pool.name}")


def _setaside_dir(out: Path, pool: str) -> Path:
    return Path(out) / "pools" / pool / "set-aside"


def set_aside(out: Path, pool: str, member: str, reason: str) -> None:
    d = _setaside_dir(out, pool)
    d.mkdir(parents=True, exist_ok=True)
    (d / member).write_text(json.dumps({"reason": reason, "at": time.time()}) + "\n")


def set_aside_members(out: Path, pool: str) -> dict[str, str]:
    d = _setaside_dir(out, pool)
    out_: dict[str, str] = {}
    for f in sorted(d.glob("*")) if d.is_dir() else []:
        try:
            out_[f.name] = json.loads(f.read_text())["reason"]
        except (OSError, ValueError, KeyError):
            out_[f.name] = "set aside"
    return out_


HEALTH_PREFIX = "health-"


def health_record_id(pool: str, member: str, cell_id: str) -> str:
    """A health check's id among the run's cells: apart from any matrix cell's (pure)."""
    return f"{HEALTH_PREFIX}{pool}-{member}-{cell_id}"


def check_health(pools: dict[str, PoolSpec], used: set[str], facts: dict[str, HostFacts],
                 run_health: Callable[[Cell], dict], out: Path, log=print) -> tuple[dict, list[dict]]:
    """Each used pool's members, health-checked in parallel (one known-good cell each). Returns
    the report and the checks' records (each one a result of the run). A member that is down or
    whose check is ERROR (its own trouble) is set aside with the reason; one whose check FAILed
    is not (its failure is the system's, and is in the results)."""
    report: dict = {}
    jobs = []
    for name in sorted(used):
        pool = pools[name]
        report[name] = {"hosts": list(pool.hosts), "health_check": dict(pool.health_check), "members": {}}
        for m in pool.hosts:
            if facts[m].error:
                report[name]["members"][m] = {"healthy": False, "reason": f"down: {facts[m].error}"}
                set_aside(out, name, m, f"down: {facts[m].error}")
            else:
                jobs.append((name, m))
    records: list[dict] = []
    with ThreadPoolExecutor(max(1, len(jobs))) as ex:
        futures = {(n, m): ex.submit(run_health, health_cell(pools[n], m)) for n, m in jobs}
    for (name, m), f in futures.items():
        cell = health_cell(pools[name], m)
        try:
            rec = f.result()
        except Exception as e:  # noqa: BLE001 -- a check that cannot even run sets the member aside
            rec = {**cell.to_dict(), "verdict": "ERROR", "reason": f"health check could not run: {e!r}",
                   "duration_s": None, "expected": {}, "observed": {}, "logs": {}}
        rec = {**rec, "id": health_record_id(name, m, cell.id), "health_check": {"pool": name, "member": m}}
        records.append(rec)
        ok = rec["verdict"] == Verdict.PASS.value
        aside = rec["verdict"] not in (Verdict.PASS.value, Verdict.FAIL.value)
        entry = {"healthy": ok, "set_aside": aside, "verdict": rec["verdict"], "reason": rec.get("reason", ""),
                 "duration_s": rec.get("duration_s"), "record": rec["id"]}
        report[name]["members"][m] = entry
        log(f"caskit: pool {name}: {m} health check {rec['verdict']}" + ("" if ok else f": {entry['reason']}"))
        if aside:
            set_aside(out, name, m, f"health check {rec['verdict']}: {entry['reason']}")
    return report, records


def pool_facts(pool: PoolSpec, facts: dict[str, HostFacts], healthy: list[str]) -> HostFacts:
    """What the run records for the pool's cells before a member is chosen: the first healthy
    member's facts under the pool's name (members are interchangeable), or the pool's error."""
    if not healthy:
        return HostFacts.unreachable(f"{POOL_PREFIX}{pool.name}", "no healthy member")
    return replace(facts[healthy[0]], name=f"{POOL_PREFIX}{pool.name}")


def offers(cell: Cell, facts: HostFacts) -> bool:
    """The member can offer the cell by its facts: neither SKIP nor blocked by the model."""
    e = model.predict(replace(cell, host=facts.name), facts)
    return not e.skip and not e.blocked


def with_dropped(rec: dict, dropped: list[tuple[str, dict]]) -> dict:
    """The cell's record with the attempts whose member dropped under it (pure): such an attempt
    is never forgotten, and a cell that then passed elsewhere is FAIL, not PASS."""
    if not dropped:
        return rec
    attempts = [{"attempt": i + 1, "ran_on": m, **{k: v for k, v in r.items() if k not in ("attempts",)}}
                for i, (m, r) in enumerate(dropped)]
    attempts.append({"attempt": len(dropped) + 1, **{k: v for k, v in rec.items() if k != "attempts"}})
    out = {**rec, "attempts": attempts}
    if rec["verdict"] not in (Verdict.FAIL.value,):
        first_m, first = dropped[0]
        out["verdict"] = Verdict.FAIL.value
        out["reason"] = (f"member {first_m} dropped while this cell's guest ran on it ({first.get('reason', '')[:300]}); "
                         f"then {rec['verdict']} on {rec.get('ran_on')}: a guest that takes its host down is a "
                         f"defect until shown otherwise")
    return out


def choose_and_run(cell: Cell, pool: str, members: list[str], facts: dict[str, HostFacts], out: Path,
                   try_run: Callable[[str], dict | None], offset: int = 0, wait: float = 24 * 3600) -> dict | None:
    """Run `cell` on the first member that is healthy, can offer it and has a free slot.
    `try_run(member)` leases a slot without waiting and runs the cell, returning its record, or
    None when the member has no free slot. A record whose error is the member's own (the host
    dropped) sets the member aside and the cell goes on to another. Returns None when no member
    is left (the caller records ERROR), or the SKIP-worthy case as a record from the caller."""
    deadline = time.monotonic() + wait
    delay = 0.05
    dropped: list[tuple[str, dict]] = []  # (member, record) of attempts whose member dropped mid-cell
    rotated = members[offset % len(members):] + members[:offset % len(members)] if members else []
    while time.monotonic() < deadline:
        aside = set_aside_members(out, pool)
        usable = [m for m in rotated if m not in aside and not facts[m].error and offers(cell, facts[m])]
        if not usable:
            return None
        for m in usable:
            try:
                rec = try_run(m)
            except HostError as e:
                set_aside(out, pool, m, f"dropped: {e}")
                continue
            if rec is None:
                continue
            if rec["verdict"] == Verdict.ERROR.value and rec.get("observed", {}).get("error_kind") in HOST_LOST:
                set_aside(out, pool, m, f"dropped mid-run: {rec.get('reason', '')[:300]}")
                dropped.append((m, rec))
                continue
            rec["ran_on"] = m
            return with_dropped(rec, dropped)
        time.sleep(delay)  # slots are flocks on each member: no event says which frees first
        delay = min(delay * 2, 0.5)
    raise CaskitError(f"pool {pool}: no slot became free in {wait:.0f}s")
