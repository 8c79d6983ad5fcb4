"""Cells per minute on a pool of the two SSH test hosts against one host alone, and the
controller's own CPU per cell.

The two hosts are the test suite's (tests/sshhosts.py: OpenSSH in network namespaces on this
machine), one slot each. The same 12-cell matrix runs on `pool:p9` (both members) and on one host.
QEMU runs under each host's sshd, not under caskit: the CPU time `caskit run` and its children
use (getrusage of the children this script waits for) is the controller's own.

    .venv/bin/python bench/bench_pool.py --repeat 2
"""

from __future__ import annotations

import argparse
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO))

import sshhosts  # noqa: E402

MATRIX = """
name: bench-{name}
hosts: [{hosts}]
axes: {{ic_mode: [dual, xics, xive], guest_xive: [default, "off"], cpu_compat: [default, power8], smp: [1], firmware: [vof]}}
"""


def run(matrix: Path, inventory: Path, out: Path) -> tuple[float, float, int, float]:
    """(wall s, controller CPU s, cells, cell phase s) of one `caskit run -n 2`."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.monotonic()
    p = subprocess.run([sys.executable, "-m", "harness.cli", "run", str(matrix), "--hosts", str(inventory),
                        "-n", "2", "--out", str(out), "--db", "off"], cwd=REPO, capture_output=True, text=True)
    wall = time.monotonic() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if p.returncode != 0:
        raise SystemExit(f"caskit run failed ({p.returncode}): {p.stdout[-2000:]}{p.stderr[-2000:]}")
    import json
    cells = json.loads((out / "results.json").read_text())["cells"]
    # The cell phase alone: from the first cell's start to the last one's end (the run's fixed
    # costs, probing and a pool's health checks, are in `wall`).
    phase = max(c["started_s"] + c["duration_s"] for c in cells) - min(c["started_s"] for c in cells)
    return wall, cpu, len(cells), phase


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=2)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="caskit-bench-pool-") as tmp:
        d = Path(tmp)
        th = sshhosts.start(d / "hosts")
        try:
            inv = th.inventory(slots=1)
            inv["pools"] = {"p9": {"hosts": ["hosta", "hostb"]}}
            (d / "hosts.yaml").write_text(yaml.safe_dump(inv))
            plans = {"pool (2 members, 1 slot each)": "pool:p9", "one host (1 slot)": "hosta"}
            rows = []
            for label, hosts in plans.items():
                m = d / f"{hosts.replace(':', '-')}.yaml"
                m.write_text(MATRIX.format(name=hosts.replace(":", "-"), hosts=hosts))
                figures = [run(m, d / "hosts.yaml", d / f"out-{hosts.replace(':', '-')}-{i}") for i in range(a.repeat)]
                walls = [f[0] for f in figures]
                cells = figures[0][2]
                per_min = [cells / f[3] * 60 for f in figures]
                cpu_cell = [f[1] / cells for f in figures]
                rows.append((label, cells, statistics.median(walls), statistics.median(per_min), statistics.median(cpu_cell)))
        finally:
            th.close()
    print(f"{'plan':32} {'cells':>5} {'run wall s':>10} {'cells/min (cell phase)':>23} {'controller CPU s/cell':>22}")
    for label, cells, wall, pm, cpu in rows:
        print(f"{label:32} {cells:>5} {wall:>10.1f} {pm:>23.2f} {cpu:>22.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
