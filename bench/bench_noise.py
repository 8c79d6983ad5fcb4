#!/usr/bin/env python3
"""Noise bands for `caskit diff`: how far workload rates and migration downtimes move between
runs of an unchanged system.

Runs the `workloads` matrix and a small migration matrix (round trips of one-vCPU guests, XIVE
and XICS, on the backports build) REPEAT times each through the real CLI, takes every figure
`harness.diff.metrics` compares, and prints per metric and cell the values, their max/min,
and the band `harness/diff.py` uses (x factor / floor); then diffs every run against the first
with those bands and says whether an unchanged system would ever have tripped the gate.

    .venv/bin/python bench/bench_noise.py [--repeat 4] [--skip-migration] [--skip-workloads]

Writes bench/results/noise.json. Every run goes to a temporary --out and is removed after.
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


def run_once(matrix: str, tmp: Path, i: int) -> dict:
    out = tmp / f"run-{Path(matrix).stem}-{i}"
    t0 = time.monotonic()
    load = os.getloadavg()[0]
    p = subprocess.run([sys.executable, "-m", "harness.cli", "run", matrix, "-n", "2", "--out", str(out), "--db", "off"],
                       cwd=ROOT, capture_output=True, text=True)
    res = json.loads((out / "results.json").read_text())
    left = tagged_pids(f"caskit:{res['run']['id']}:")
    if left:
        raise SystemExit(f"QEMU of run {res['run']['id']} left running: {left}")
    print(f"  {matrix} run {i + 1}: exit {p.returncode}, {time.monotonic() - t0:.0f} s, load {load:.1f}, "
          + ", ".join(f"{k} {v}" for k, v in res["summary"].items() if v), file=sys.stderr)
    res["bench"] = {"load_before": load, "wall_s": time.monotonic() - t0}
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
    a = ap.parse_args()
    runs: dict[str, list[dict]] = {}
    with tempfile.TemporaryDirectory(prefix="caskit-noise-") as tmp_s:
        tmp = Path(tmp_s)
        matrices = []
        if not a.skip_workloads:
            matrices.append("workloads")
        if not a.skip_migration:
            (tmp / "noise-migration.yaml").write_text(MIGRATION)
            matrices.append(str(tmp / "noise-migration.yaml"))
        for m in matrices:
            runs[Path(m).stem] = [run_once(m, tmp, i) for i in range(a.repeat)]
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
        for r in rs[1:]:
            d = diffmod.diff(rs[0], r)
            tripped += [f"{name}: {e.cell}: {e.what}" for e in d.regressions]
            tripped += [f"{name} (not gating): {e.cell}: {e.what}" for e in d.changes if e.kind == "metric"]
    print(f"\nrepeated runs diffed against the first with the bands of harness/diff.py: "
          f"{len(tripped)} metric or verdict move(s)")
    for t in tripped:
        print(f"  {t}")
    outdir = ROOT / "bench" / "results"
    outdir.mkdir(parents=True, exist_ok=True)
    (outdir / "noise.json").write_text(json.dumps({
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "repeat": a.repeat, "rows": rows,
        "tripped": tripped, "runs": {n: [r["bench"] | {"summary": r["summary"]} for r in rs] for n, rs in runs.items()},
    }, indent=2) + "\n")
    return 1 if any(not t.split(":", 1)[0].endswith("(not gating)") for t in tripped) else 0


if __name__ == "__main__":
    sys.exit(main())
