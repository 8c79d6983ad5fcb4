"""The regression gate: what changed between two runs of the same matrix. Pure: results in, a Diff
out; `caskit diff` and `caskit report --baseline` only load and print.

A regression is what a CI job must stop on:
- a cell that was PASS, XFAIL, SKIP or FLAKY and is now FAIL or ERROR;
- a negotiated mode that changed (the guest's and host's agreed mode, either way);
- an expected outcome that changed (the model's rules, or the facts they read, moved: someone
  must look before the new prediction becomes the truth);
- a workload rate or a migration downtime that moved beyond its noise band in the bad direction
  (BANDS, measured: bench/README.md, "Noise bands");
- a cell the new run planned and never reported (a run that died half-way gates nothing green).
- a cell that failed in both runs, but differently (verdict.failure_signature: IPIs lost is not a
  kernel panic), and, with `--strict`, a cell that became FLAKY.
Cells failing the same way in both are listed, not gating.
A fix is a FAIL or ERROR cell that is now PASS, XFAIL, SKIP or FLAKY. Everything else that
differs (PASS -> XFAIL by a known issue, a cell that became FLAKY, a rate that improved beyond
its band) is a change: shown, never gating. Cells only in the base run are listed apart.
"""

from __future__ import annotations

import fnmatch
from dataclasses import asdict, dataclass, field

from .results import planned_records
from .verdict import failure_signature

OK = frozenset({"PASS", "XFAIL", "SKIP", "FLAKY"})
BAD = frozenset({"FAIL", "ERROR"})

# Rates worth comparing: workload -> paths into its metrics (bench_workloads.py reads the same).
RATE_PATHS: dict[str, tuple[tuple[str, ...], ...]] = {
    "ipi": (("ipis_per_s",),),
    "virtio-net": (("msix", "irqs_per_s"), ("lsi", "irqs_per_s")),
    "virtio-blk": (("irqs_per_s",),),
}


@dataclass(frozen=True)
class Band:
    """A metric moved when the larger of base and new is more than `factor` times the smaller
    AND they differ by more than `floor` (near zero a ratio means nothing); `worse` says which
    way hurts."""

    factor: float
    floor: float
    worse: str  # "lower" | "higher" | "either"
    unit: str = ""


# Noise bands, measured (bench/bench_noise.py; figures and method in bench/README.md, "Noise
# bands"): the workloads matrix 5 times and round trips of XIVE and XICS guests 4 times, on this
# shared 2-core TCG host under load 1.9-4.4. Per metric, the largest max/min seen between runs
# of one cell, spread = max/min - 1, factor = 1 + 1.5 x spread rounded up to 0.5 (0.1 below 2):
# an unchanged system stays inside with half its worst swing to spare.
# - IPIs/s (a ping-pong of shell processes under TCG) swing with the machine's load: 239-676
#   between runs of one XICS cell (2.83x), so only a 4x drop counts. Lower is worse.
# - virtio-net irq/s is paced by ping (20/s), so it barely moves (1.20x at worst): the rate is
#   interrupts per packet times the pace, and a move either way means the interrupt path
#   changed (lost or extra interrupts).
# - virtio-blk irq/s follows how fast 4 MiB of direct I/O completes: 1.84x at worst. Lower is worse.
# - Migration downtime (QMP's figure, ms) of a completed hop: 17-71 ms, 3.94x at worst; higher is
#   worse, and within 20 ms nothing counts.
# A farm on quiet hardware (KVM) can measure tighter bands with the same script.
BANDS: dict[str, Band] = {
    "ipi.ipis_per_s": Band(4.0, 50.0, "lower", "IPIs/s"),
    "virtio-net.msix.irqs_per_s": Band(1.3, 3.0, "either", "irq/s"),
    "virtio-net.lsi.irqs_per_s": Band(1.3, 3.0, "either", "irq/s"),
    "virtio-blk.irqs_per_s": Band(2.5, 20.0, "lower", "irq/s"),
    "migration.*.downtime_ms": Band(5.5, 20.0, "higher", "ms"),
}


def band_for(metric: str, bands: dict[str, Band] | None = None) -> Band | None:
    for pattern, b in (bands or BANDS).items():
        if fnmatch.fnmatchcase(metric, pattern):
            return b
    return None


def _dig(d, path):
    for k in path:
        if not isinstance(d, dict):
            return None
        d = d.get(k)
    return d


def metrics(record: dict) -> dict[str, float]:
    """The comparable figures of one cell: rates of the workloads that passed, and the downtime
    of every migration hop QEMU completed (QEMU measured it whatever the guest did after)."""
    out: dict[str, float] = {}
    for w in record.get("workloads") or ():
        if not isinstance(w, dict) or w.get("verdict") != "PASS":
            continue
        for path in RATE_PATHS.get(w.get("name", ""), ()):
            v = _dig(w.get("metrics") or {}, path)
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                out[".".join((w["name"], *path))] = float(v)
    mig = record.get("migration")
    if isinstance(mig, dict):
        for h in mig.get("hops") or ():
            q = (h or {}).get("qmp") or {}
            v = q.get("downtime_ms")
            if q.get("status") == "completed" and isinstance(v, (int, float)) and not isinstance(v, bool):
                out[f"migration.{h.get('name')}.downtime_ms"] = float(v)
    return out


def metric_moved(base: float, new: float, band: Band) -> str | None:
    """"worse", "better" or None (within the band)."""
    if abs(new - base) <= band.floor:
        return None
    lo, hi = sorted((abs(base), abs(new)))
    if lo > 0 and hi / lo <= band.factor:
        return None
    if band.worse == "either":
        return "worse"
    return "worse" if (new < base) == (band.worse == "lower") else "better"


# The fields of an expected outcome that say what should happen; `source` (a citation) and
# `notes` (other rules met on the way) may be reworded without any prediction changing.
EXPECTED_FIELDS = ("mode", "error", "stage", "byte23", "irqchip", "warning", "skip", "blocked", "rule")


@dataclass(frozen=True)
class Entry:
    cell: str
    kind: str  # verdict | mode | expected | metric | not-run | only-base | only-new
    what: str  # one line a person reads
    base: object = None
    new: object = None


@dataclass
class Diff:
    base_id: str
    new_id: str
    regressions: list[Entry] = field(default_factory=list)
    fixes: list[Entry] = field(default_factory=list)
    changes: list[Entry] = field(default_factory=list)
    only_base: list[Entry] = field(default_factory=list)
    only_new: list[Entry] = field(default_factory=list)
    still_failing: list[Entry] = field(default_factory=list)  # FAIL/ERROR in both, the same failure
    compared: int = 0
    bands: dict = field(default_factory=dict)

    @property
    def exit_status(self) -> int:
        return 1 if self.regressions else 0

    def to_dict(self) -> dict:
        d = asdict(self)
        d["exit_status"] = self.exit_status
        return d


def _short(x, n: int = 160) -> str:
    s = str(x)
    return s if len(s) <= n else s[: n - 3] + "..."


def _pct(base: float, new: float) -> str:
    return f"{(new - base) / base * 100:+.0f}%" if base else "from 0"


def compare_cell(b: dict, n: dict, bands: dict[str, Band] | None = None,
                 strict: bool = False) -> tuple[list[Entry], list[Entry], list[Entry]]:
    """(regressions, fixes, changes) of one cell present in both runs. A cell failing in both
    runs is a regression when its failure changed (failure_signature); with `strict`, a cell
    that turned FLAKY is one too."""
    cid = n["id"]
    reg: list[Entry] = []
    fix: list[Entry] = []
    chg: list[Entry] = []
    vb, vn = b.get("verdict", "ERROR"), n.get("verdict", "ERROR")
    if vb != vn:
        e = Entry(cid, "verdict", f"{vb} -> {vn}: {_short(n.get('reason', ''))}", vb, vn)
        worse = (vb in OK and vn in BAD) or (strict and vn == "FLAKY" and vb != "FLAKY") or (vb == "ERROR" and vn == "FAIL")
        (reg if worse else fix if vb in BAD and vn in OK else chg).append(e)
    if vb in BAD and vn in BAD:
        sb, sn = failure_signature(b), failure_signature(n)
        if sb != sn:
            reg.append(Entry(cid, "failure", f"failed in both runs, differently: {'; '.join(sb) or vb} -> "
                                             f"{'; '.join(sn) or vn}", list(sb), list(sn)))
    ob, on = (b.get("observed") or {}).get("mode"), (n.get("observed") or {}).get("mode")
    if ob != on and ob is not None and on is not None:
        reg.append(Entry(cid, "mode", f"negotiated {ob} -> {on}", ob, on))
    elif ob != on and vb == vn and vn in OK:
        # One side has no mode while the verdict stayed good (an expected refusal that now boots,
        # say): the outcome changed all the same.
        reg.append(Entry(cid, "mode", f"negotiated {ob or 'nothing'} -> {on or 'nothing'}", ob, on))
    eb, en = b.get("expected") or {}, n.get("expected") or {}
    moved = [k for k in EXPECTED_FIELDS if eb.get(k) != en.get(k)]
    if moved:
        reg.append(Entry(cid, "expected", "expected outcome changed (model or host facts): "
                         + ", ".join(f"{k} {eb.get(k)!r} -> {en.get(k)!r}" for k in moved),
                         {k: eb.get(k) for k in moved}, {k: en.get(k) for k in moved}))
    mb, mn = metrics(b), metrics(n)
    for name in sorted(set(mb) & set(mn)):
        band = band_for(name, bands)
        if band is None:
            continue
        how = metric_moved(mb[name], mn[name], band)
        if how:
            e = Entry(cid, "metric", f"{name} {mb[name]:g} -> {mn[name]:g} {band.unit} ({_pct(mb[name], mn[name])}; "
                      f"band x{band.factor:g} and {band.floor:g})", mb[name], mn[name])
            (reg if how == "worse" else chg).append(e)
    return reg, fix, chg


def diff(base: dict, new: dict, bands: dict[str, Band] | None = None, strict: bool = False) -> Diff:
    """Two results (as results.json or the history hold them) compared cell by cell, by stable
    cell id, each over its own planned cells: a planned cell that never reported is "not run"
    on that side (results.planned_records), whether the run comes from a directory or the history."""
    bcells = {c["id"]: c for c in planned_records(base.get("run", {}).get("cell_order"), list(base.get("cells", ())))}
    ncells = {c["id"]: c for c in planned_records(new.get("run", {}).get("cell_order"), list(new.get("cells", ())))}
    d = Diff(str(base.get("run", {}).get("id")), str(new.get("run", {}).get("id")),
             bands={k: asdict(v) for k, v in (bands or BANDS).items()})
    order = list(ncells) + [c for c in bcells if c not in ncells]
    for cid in order:
        b, n = bcells.get(cid), ncells.get(cid)
        if n is not None and n.get("not_run"):
            d.regressions.append(Entry(cid, "not-run", "planned by the new run but never reported (the run died?)",
                                       (b or {}).get("verdict"), None))
        elif b is not None and b.get("not_run"):
            d.only_new.append(Entry(cid, "only-new", f"not run in the base run; now {n.get('verdict')}", None,
                                    n.get("verdict")))
        elif b is not None and n is not None:
            d.compared += 1
            r, f, c = compare_cell(b, n, bands, strict)
            d.regressions += r
            d.fixes += f
            d.changes += c
            if b.get("verdict") in BAD and n.get("verdict") in BAD and not any(e.kind == "failure" for e in r):
                d.still_failing.append(Entry(cid, "still-failing", f"{n.get('verdict')} in both runs, the same failure: "
                                                                   f"{_short(n.get('reason', ''))}", b.get("verdict"),
                                             n.get("verdict")))
        elif n is not None:
            d.only_new.append(Entry(cid, "only-new", f"only in the new run: {n.get('verdict')}", None, n.get("verdict")))
        else:
            d.only_base.append(Entry(cid, "only-base", f"only in the base run: {b.get('verdict')}", b.get("verdict")))
    return d


def format_text(d: Diff, base_label: str = "BASE", new_label: str = "NEW") -> str:
    lines = [f"caskit diff {base_label} ({d.base_id}) -> {new_label} ({d.new_id}): {d.compared} cells in both"]
    for title, entries in (("regressions", d.regressions), ("fixes", d.fixes),
                           ("failing in both runs (not gating: the same failure)", d.still_failing),
                           ("changes (not gating)", d.changes),
                           (f"only in {base_label}", d.only_base), (f"only in {new_label}", d.only_new)):
        if entries:
            lines.append(f"{title} ({len(entries)}):")
            lines += [f"  {e.cell}: {e.what}" for e in entries]
    lines.append(f"{len(d.regressions)} regression(s), {len(d.fixes)} fix(es), {len(d.still_failing)} failing in both, "
                 f"{len(d.changes)} other change(s), "
                 f"{len(d.only_base)} only in {base_label}, {len(d.only_new)} only in {new_label}")
    return "\n".join(lines)
