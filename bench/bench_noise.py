#!/usr/bin/env python3
"""Noise bands for `caskit diff`: how far workload rates and migration downtimes move between
runs of an unchanged system.

Runs the `workloads` matrix and a small migration matrix (round trips of one-vCPU guests, XIVE
and XICS, on the backports build) REPEAT times each through the real CLI, takes every figure
`harness.diff.metrics` compares, and prints per metric and cell the values, their max/min,
and the band `harness/diff.py` uses (x factor / floor); then diffs every run against the first
with those bands and says whether an unchanged system would ever have tripped the gate.

    .venv/bin/python bench/bench_noise.py [--repeat 4] [--skip-migration] [--skip-workloads]

Writes bench/results/noise.json (--json FILE elsewhere). Every run goes to a temporary --out and
is removed after.

`--smoke`: one run of one cell (the workloads matrix's XIVE cell with the IPI workload only), its
metrics and bands, and the diff of that run against itself (which must trip nothing); the
figures go to a temporary file; exit 1 unless the cell passed with its rate measured.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import _smoke  # noqa: E402
from harness import diff as diffmod  # noqa: E402
from harness.hosts import tagged_pids  # noqa: E402

MIGRATION = """
name: noise-migration
hosts: [local]
axes: {ic_mode: [dual], guest_xive: [default, "off"], smp: [1], firmware: [vof], qemu: [backports]}
workloads: []
migration: [roundtrip]
timeouts: {liveness: 3}
"""

# --smoke: one cell of the workloads matrix (guest XIVE), with one rated workload.
SMOKE = """
name: noise-smoke
hosts: [local]
axes: {ic_mode: [dual], guest_xive: [default], smp: [2], firmware: [vof]}
workloads: [ipi]
"""


def run_once(matrix: str, tmp: Path, i: int, workers: str = "2") -> dict:
    out = tmp / f"run-{Path(matrix).stem}-{i}"
    t0 = time.monotonic()
    load = os.getloadavg()[0]
    p = subprocess.run([sys.executable, "-m", "harness.cli", "run", matrix, "-n", workers, "--out", str(out),
                        "--db", "off"], cwd=ROOT, capture_output=True, text=True)
    try:
        res = json.loads((out / "results.json").read_text())
    except (OSError, ValueError):
        raise SystemExit(f"{matrix} run {i + 1}: no results.json (caskit exit {p.returncode}): "
                         f"{p.stdout[-1500:]}{p.stderr[-1500:]}") from None
    left = tagged_pids(f"caskit:{res['run']['id']}:")
    if left:
        raise SystemExit(f"QEMU of run {res['run']['id']} left running: {left}")
    print(f"  {matrix} run {i + 1}: exit {p.returncode}, {time.monotonic() - t0:.0f} s, load {load:.1f}, "
          + ", ".join(f"{k} {v}" for k, v in res["summary"].items() if v), file=sys.stderr)
    res["bench"] = {"load_before": load, "wall_s": time.monotonic() - t0, "exit": p.returncode,
                    "run_id": res["run"]["id"]}
    return res


def spread(values: list[float]) -> float | None:
    """max/min - 1: how far apart runs of an unchanged cell landed."""
    lo = min(values)
    return max(values) / lo - 1 if lo > 0 else None


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=4)
    ap.add_argument("--skip-migration", action="store_true")
    ap.add_argument("--skip-workloads", action="store_true")
    _smoke.add_args(ap, "noise")
    a = ap.parse_args()
    jpath = _smoke.json_path(a.json, a.smoke, "noise")
    _smoke.sigterm_unwinds()
    if a.smoke:
        a.repeat = 1
    runs: dict[str, list[dict]] = {}
    with tempfile.TemporaryDirectory(prefix="caskit-noise-") as tmp_s:
        tmp = Path(tmp_s)
        matrices = []
        if a.smoke:
            (tmp / "noise-smoke.yaml").write_text(SMOKE)
            matrices.append(str(tmp / "noise-smoke.yaml"))
        else:
            if not a.skip_workloads:
                matrices.append("workloads")
            if not a.skip_migration:
                (tmp / "noise-migration.yaml").write_text(MIGRATION)
                matrices.append(str(tmp / "noise-migration.yaml"))
        for m in matrices:
            runs[Path(m).stem] = [run_once(m, tmp, i, "1" if a.smoke else "2") for i in range(a.repeat)]
    rows = []
    print(f"{'metric':34} {'cell':10} {'values':40} {'max/min':>7} {'band':>14}")
    for name, rs in runs.items():
        per: dict[tuple[str, str], list[float]] = {}
        for r in rs:
            for c in r["cells"]:
                mode = c["observed"].get("mode") or "?"
                for k, v in diffmod.metrics(c).items():
                    per.setdefault((k, mode), []).append(v)
        for (k, mode), vs in sorted(per.items()):
            b = diffmod.band_for(k)
            s = spread(vs)
            rows.append({"matrix": name, "metric": k, "mode": mode, "values": vs, "spread": s,
                         "band": None if b is None else {"factor": b.factor, "floor": b.floor, "worse": b.worse}})
            band = f"x{b.factor:g}/{b.floor:g}" if b else "-"
            print(f"{k:34} {mode:10} {', '.join(f'{v:g}' for v in vs)[:40]:40} "
                  f"{(f'{s + 1:.2f}' if s is not None else '-'):>7} {band:>14}")
    tripped = []
    for name, rs in runs.items():
        for r in rs[1:] or (rs if a.smoke else []):  # --smoke: its one run against itself
            d = diffmod.diff(rs[0], r)
            tripped += [f"{name}: {e.cell}: {e.what}" for e in d.regressions]
            tripped += [f"{name} (not gating): {e.cell}: {e.what}" for e in d.changes if e.kind == "metric"]
    print(f"\nrepeated runs diffed against the first with the bands of harness/diff.py: "
          f"{len(tripped)} metric or verdict move(s)")
    for t in tripped:
        print(f"  {t}")
    problems = []
    if a.smoke:
        for rs in runs.values():
            for r in rs:
                if r["bench"]["exit"] != 0 or any(c["verdict"] != "PASS" for c in r["cells"]):
                    problems.append(f"run {r['bench']['run_id']}: exit {r['bench']['exit']}, "
                                    + ", ".join(f"{c['id']} {c['verdict']}: {c.get('reason')}" for c in r["cells"]))
        if not rows or any(not (row["values"] and all(v > 0 for v in row["values"]) and row["band"]) for row in rows):
            problems.append(f"a metric without values above 0 or without a band: {rows}")
        if tripped:
            problems.append(f"a run diffed against itself moved: {tripped}")
    _smoke.write(jpath, {
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "smoke": a.smoke, "repeat": a.repeat, "rows": rows,
        "tripped": tripped, "runs": {n: [r["bench"] | {"summary": r["summary"]} for r in rs] for n, rs in runs.items()},
        "run_ids": [r["bench"]["run_id"] for rs in runs.values() for r in rs], "problems": problems,
    })
    if a.smoke:
        return _smoke.status(problems, True)
    return 1 if any(not t.split(":", 1)[0].endswith("(not gating)") for t in tripped) else 0


if __name__ == "__main__":
    sys.exit(main())
