#!/usr/bin/env python3
"""Interrupts per second per workload, XIVE versus XICS, on one host in one run.

Runs the `workloads` matrix (every workload, one boot per mode) REPEAT times through caskit and
prints the median rate of each workload in each mode. Under TCG these are emulation figures;
the same script on a real POWER9 host (with a matrix using accel: kvm) gives the real ones.

    .venv/bin/python bench/bench_workloads.py [--repeat N] [--matrix workloads]

`--smoke`: one cell (the workloads matrix's XIVE cell) with only the workloads whose rates this
prints (ipi, virtio-net, virtio-blk), one run, `-n 1`; exit 1 unless every rate was measured.
The figures go to bench/results/workloads.json (with --smoke a temporary file; --json FILE either
way).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import _smoke  # noqa: E402

# The smoke's one cell: the workloads matrix's first (guest XIVE), with the rated workloads only.
SMOKE_MATRIX = """
name: bench-workloads-smoke
hosts: [local]
axes: {ic_mode: [dual], guest_xive: [default], smp: [2], firmware: [vof]}
workloads: [ipi, virtio-net, virtio-blk]
"""

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
    _smoke.add_args(ap, "workloads")
    a = ap.parse_args()
    jpath = _smoke.json_path(a.json, a.smoke, "workloads")
    _smoke.sigterm_unwinds()
    samples: dict[tuple[str, str], list[float]] = {}
    spurious: dict[str, list[int]] = {}
    problems: list[str] = []
    run_ids: list[str] = []
    if a.smoke:
        a.repeat = 1
    for i in range(a.repeat):
        with tempfile.TemporaryDirectory(prefix="caskit-benchwl-") as tmp:
            out = Path(tmp) / "run"
            matrix = a.matrix
            if a.smoke:
                matrix = str(Path(tmp) / "smoke.yaml")
                Path(matrix).write_text(SMOKE_MATRIX)
            res = _smoke.caskit_run(matrix, out, a.smoke, f"run {i + 1}/{a.repeat}", problems)
        if res is None:
            continue
        run_ids.append(res["run"]["id"])
        for c in res["cells"]:
            mode = c["observed"].get("mode") or "-"
            wls = {w["name"]: w for w in c.get("workloads", [])}
            for label, name, path in RATES:
                w = wls.get(name)
                if w and w["verdict"] == "PASS":
                    samples.setdefault((label, mode), []).append(dig(w["metrics"], path))
                elif a.smoke:
                    problems.append(f"{c['id']}: {name}: {w['verdict'] if w else 'not run'}"
                                    + (f": {w.get('reason')}" if w else ""))
            spurious.setdefault(mode, []).append(sum(w["metrics"].get("spurious_delta", 0) for w in wls.values()))
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
    if a.smoke:
        problems += [f"{label} ({mode}): rate {x}" for (label, mode), v in samples.items() for x in v
                     if not (isinstance(x, (int, float)) and x > 0)]
    left = _smoke.qemu_left([f"caskit:{r}:" for r in run_ids])
    if left:
        problems.append(f"QEMU left running: {left}")
    _smoke.write(jpath, {"smoke": a.smoke, "run_ids": run_ids, "rows": rows, "spurious": spurious,
                         "problems": problems})
    return _smoke.status(problems, a.smoke)


if __name__ == "__main__":
    sys.exit(main())
