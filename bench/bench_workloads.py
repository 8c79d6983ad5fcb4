#!/usr/bin/env python3
"""Interrupts per second per workload, XIVE versus XICS, on one host in one run.

Runs the `workloads` matrix (every workload, one boot per mode) REPEAT times through caskit and
prints the median rate of each workload in each mode. Under TCG these are emulation figures;
the same script on a real POWER9 host (with a matrix using accel: kvm) gives the real ones.

    .venv/bin/python bench/bench_workloads.py [--repeat N] [--matrix workloads]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# (label, workload, path to the rate in its metrics)
RATES = [
    ("IPI (ping-pong CPU0<->CPU1)", "ipi", ("ipis_per_s",)),
    ("virtio-net MSI-X (ping)", "virtio-net", ("msix", "irqs_per_s")),
    ("virtio-net INTx/LSI (ping)", "virtio-net", ("lsi", "irqs_per_s")),
    ("virtio-blk (direct I/O 4 MiB w+r)", "virtio-blk", ("irqs_per_s",)),
]


def dig(d, path):
    for k in path:
        d = d[k]
    return d


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--matrix", default="workloads")
    a = ap.parse_args()
    samples: dict[tuple[str, str], list[float]] = {}
    spurious: dict[str, list[int]] = {}
    for i in range(a.repeat):
        with tempfile.TemporaryDirectory(prefix="caskit-benchwl-") as tmp:
            out = Path(tmp) / "run"
            p = subprocess.run([sys.executable, "-m", "harness.cli", "run", a.matrix, "-n", "2", "--out", str(out)],
                               cwd=ROOT, capture_output=True, text=True)
            res = json.loads((out / "results.json").read_text())
        for c in res["cells"]:
            mode = c["observed"]["mode"]
            wls = {w["name"]: w for w in c.get("workloads", [])}
            for label, name, path in RATES:
                w = wls.get(name)
                if w and w["verdict"] == "PASS":
                    samples.setdefault((label, mode), []).append(dig(w["metrics"], path))
            spurious.setdefault(mode, []).append(sum(w["metrics"].get("spurious_delta", 0) for w in wls.values()))
        print(f"run {i + 1}/{a.repeat}: caskit exit {p.returncode}", file=sys.stderr)
    modes = ["xive", "xics"]
    rows = []
    print(f"{'workload':36} " + " ".join(f"{m + ' irq/s':>12}" for m in modes) + "   xive/xics")
    for label, _, _ in RATES:
        med = {m: statistics.median(samples[(label, m)]) if samples.get((label, m)) else None for m in modes}
        ratio = med["xive"] / med["xics"] if med["xive"] and med["xics"] else None
        rows.append({"workload": label, **{m: med[m] for m in modes}, "ratio": ratio,
                     "samples": {m: samples.get((label, m), []) for m in modes}})
        cells = " ".join(f"{med[m]:>12.1f}" if med[m] is not None else f"{'-':>12}" for m in modes)
        print(f"{label:36} {cells}   {ratio:.2f}" if ratio else f"{label:36} {cells}")
    print("spurious (SPU) per cell, all workloads: " + ", ".join(f"{m} {spurious.get(m)}" for m in modes))
    outdir = ROOT / "bench" / "results"
    outdir.mkdir(parents=True, exist_ok=True)
    (outdir / "workloads.json").write_text(json.dumps({"rows": rows, "spurious": spurious}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
