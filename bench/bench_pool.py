"""Cells per minute on a pool of the two SSH test hosts against one host alone, and the
controller's own CPU per cell.

The two hosts are the test suite's (tests/sshhosts.py: OpenSSH in network namespaces on this
machine), one slot each. The same 12-cell matrix runs on `pool:p9` (both members) and on one host.
QEMU runs under each host's sshd, not under caskit: the CPU time `caskit run` and its children
use (getrusage of the children this script waits for) is the controller's own. Each checkout's
`harness` is byte-compiled first, as an installed caskit is. The controller
reaches the hosts at 127.0.0.1 through the test bed's loopback relays (tests/loopback_relay.py,
children of this script that live through every run), as a farm's controller reaches its hosts
over TCP; `--via proxy` uses the suite's proxy command instead, whose copying (a child of
`caskit run`) is then counted as the controller's. `--via relay,proxy` runs both, alternating
like `--repo`, so that both see the same minutes of a shared machine.

    .venv/bin/python bench/bench_pool.py --repeat 2

`--fixed-marginal`: the one-host plan also with one cell; the controller's fixed cost per run and
its marginal cost per cell are then the intercept and the slope between 1 and 12 cells (issue 23).
`--repo DIR[,DIR...]`: run these checkouts' caskit (each with its own harness on PYTHONPATH), side
by side, the order alternating in every repeat: an old commit against this one
(`git worktree add /tmp/old COMMIT`). A warm-up run (not counted) first sends the guest kit to
both hosts, so that no counted run pays for the transfer.

`--smoke`: one cell (dual, guest XIVE) on the pool, once (not the one-host plan: the same code
with another host name); exit 1 unless it passed and the figures were taken. The figures go to
bench/results/pool.json (with --smoke a temporary file; --json FILE either way).
"""

from __future__ import annotations

import argparse
import os
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

import _smoke  # noqa: E402
import sshhosts  # noqa: E402

MATRIX = """
name: bench-{name}
hosts: [{hosts}]
axes: {{ic_mode: {ic_mode}, guest_xive: {guest_xive}, cpu_compat: {cpu_compat}, smp: [1], firmware: [vof]}}
"""
FULL = {"ic_mode": "[dual, xics, xive]", "guest_xive": '[default, "off"]', "cpu_compat": "[default, power8]"}
SMOKE = {"ic_mode": "[dual]", "guest_xive": "[default]", "cpu_compat": "[default]"}


def run(matrix: Path, inventory: Path, out: Path, repo: Path = REPO) -> tuple[float, float, int, float, dict]:
    """(wall s, controller CPU s, cells, cell phase s, results, largest process MiB so far) of one
    `caskit run -n 2` of `repo`."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.monotonic()
    p = subprocess.run([sys.executable, "-m", "harness.cli", "run", str(matrix), "--hosts", str(inventory),
                        "-n", "2", "--out", str(out), "--db", "off"], cwd=repo, capture_output=True, text=True,
                       env={**os.environ, "PYTHONPATH": str(repo)})
    wall = time.monotonic() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if p.returncode != 0:
        raise SystemExit(f"caskit run failed ({p.returncode}): {p.stdout[-2000:]}{p.stderr[-2000:]}")
    import json
    results = json.loads((out / "results.json").read_text())
    # The matrix's cells: a pool's health checks are cells of the run too (one per member, before
    # the pool takes cells); they are fixed costs, in `wall`, not in the cell phase.
    cells = [c for c in results["cells"] if not c.get("health_check")]
    # The cell phase alone: from the first cell's start to the last one's end (the run's fixed
    # costs, probing and a pool's health checks, are in `wall`).
    phase = max(c["started_s"] + c["duration_s"] for c in cells) - min(c["started_s"] for c in cells)
    # ru_maxrss of the children: the largest process this run left behind (the controller or a
    # worker, each holding one cell at a time), in KiB; a high-water mark over this script's life.
    return wall, cpu, len(cells), phase, results, after.ru_maxrss / 1024


def in_flight(cells: list[dict], slots: int) -> tuple[float, float]:
    """(mean cells in flight over the cell phase, share of the phase with every slot busy), from
    each cell's start and duration (pure): how well the run keeps its hosts' slots filled."""
    edges = sorted([(c["started_s"], 1) for c in cells] + [(c["started_s"] + c["duration_s"], -1) for c in cells])
    t0, t_end = edges[0][0], edges[-1][0]
    if t_end <= t0:
        return 0.0, 0.0
    busy = full = 0.0
    n, prev = 0, t0
    for t, d in edges:
        busy += n * (t - prev)
        full += (t - prev) if n >= slots else 0.0
        n, prev = n + d, t
    return busy / (t_end - t0), full / (t_end - t0)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--fixed-marginal", action="store_true",
                    help="also the one-host plan with one cell: fixed cost per run and marginal cost per cell")
    ap.add_argument("--repo", default=str(REPO), help="checkouts to run, comma-separated (default: this one)")
    ap.add_argument("--via", default="relay",
                    help="how the controller reaches the netns hosts: relay (default: a loopback relay that is not "
                         "its child), proxy (the suite's proxy command), or both, comma-separated")
    _smoke.add_args(ap, "pool")
    a = ap.parse_args()
    jpath = _smoke.json_path(a.json, a.smoke, "pool")
    _smoke.sigterm_unwinds()
    repos = [Path(r).resolve() for r in a.repo.split(",")]
    vias = a.via.split(",")
    if not vias or any(v not in ("relay", "proxy") for v in vias):
        ap.error(f"--via: relay, proxy or relay,proxy, not {a.via!r}")
    variants = [(r, v) for r in repos for v in vias]  # (checkout, route), alternating in every repeat
    plans = {"pool (2 members, 1 slot each)": ("pool:p9", FULL), "one host (1 slot)": ("hosta", FULL)}
    slots = {"pool:p9": 2, "hosta": 1}
    if a.fixed_marginal:
        plans["one host, 1 cell"] = ("hosta", SMOKE)
    if a.smoke:
        a.repeat, plans = 1, {"pool (2 members, 1 slot each)": ("pool:p9", SMOKE)}
    rows, run_ids, problems, leftovers = [], [], [], []
    fm: list[dict] = []
    for repo in repos:
        # Each checkout's bytecode, compiled once before anything is timed, as `pip install` does
        # for an installed caskit: with PYTHONDONTWRITEBYTECODE set (as on this machine) a
        # checkout's stale or missing .pyc files were otherwise compiled again in every run, and
        # how many were stale depended on which files had changed since the last write.
        subprocess.run([sys.executable, "-m", "compileall", "-q", str(repo / "harness")], check=True)
    with tempfile.TemporaryDirectory(prefix="caskit-bench-pool-") as tmp:
        d = Path(tmp)
        th = sshhosts.start(d / "hosts")
        try:
            for via in vias:
                inv = th.inventory(slots=1, direct=via == "relay")
                inv["pools"] = {"p9": {"hosts": ["hosta", "hostb"]}}
                (d / f"hosts-{via}.yaml").write_text(yaml.safe_dump(inv))
            if len(variants) > 1 or a.fixed_marginal:  # the kit onto both hosts, before anything is counted
                m = d / "warm-up.yaml"
                m.write_text(MATRIX.format(name="warm-up", hosts="pool:p9", **SMOKE))
                run_ids.append(run(m, d / f"hosts-{vias[0]}.yaml", d / "out-warm-up", repos[0])[4]["run"]["id"])
            figures: dict = {}
            for i in range(a.repeat):
                for label, (hosts, axes) in plans.items():
                    m = d / f"{label.split(' (')[0].replace(' ', '-').replace(',', '')}.yaml"
                    m.write_text(MATRIX.format(name=hosts.replace(":", "-"), hosts=hosts, **axes))
                    for repo, via in variants if i % 2 == 0 else variants[::-1]:
                        f = run(m, d / f"hosts-{via}.yaml", d / f"out-{m.stem}-{repo.name}-{via}-{i}", repo)
                        figures.setdefault((label, repo, via), []).append(f)
                        run_ids.append(f[4]["run"]["id"])
                        problems += [f"{label}: {c['id']}: {c['verdict']}: {c.get('reason')}" for c in f[4]["cells"]
                                     if a.smoke and c["verdict"] != "PASS"]
            for (label, repo, via), fs in figures.items():
                walls = [f[0] for f in fs]
                cells = fs[0][2]
                per_min = [cells / f[3] * 60 for f in fs]
                cpu_cell = [f[1] / cells for f in fs]
                name = label + (f" [{repo}]" if len(repos) > 1 else "") + (f" via {via}" if len(vias) > 1 else "")
                flights = [in_flight([c for c in f[4]["cells"] if not c.get("health_check")], slots[plans[label][0]])
                           for f in fs]
                rows.append((name, cells, statistics.median(walls), statistics.median(per_min), statistics.median(cpu_cell),
                             statistics.median(x[0] for x in flights), statistics.median(x[1] for x in flights),
                             slots[plans[label][0]], max(f[5] for f in fs)))
            for repo, via in variants if a.fixed_marginal else []:
                one = statistics.median(f[1] for f in figures[("one host, 1 cell", repo, via)])
                full = figures[("one host (1 slot)", repo, via)]
                n = full[0][2]
                many = statistics.median(f[1] for f in full)
                marginal = (many - one) / (n - 1)
                fm.append({"repo": str(repo), "via": via, "cpu_1_cell_s": one, f"cpu_{n}_cells_s": many,
                           "marginal_s_per_cell": marginal, "fixed_s_per_run": one - marginal})
        finally:
            th.close()
            # What is still there (sshds, namespaces, mounts), what close() had to kill, our QEMUs.
            leftovers = th.leftovers() + [f"killed by close(): {x}" for x in th.stragglers]
            leftovers += [f"pid {p} (QEMU)" for p in _smoke.qemu_left([f"caskit:{r}:" for r in run_ids])]
    print(f"{'plan':32} {'cells':>5} {'run wall s':>10} {'cells/min (cell phase)':>23} {'controller CPU s/cell':>22} "
          f"{'in flight / slots':>18} {'all slots busy':>15}")
    for label, cells, wall, pm, cpu, fl, full, sl, _ in rows:
        print(f"{label:32} {cells:>5} {wall:>10.1f} {pm:>23.2f} {cpu:>22.2f} {f'{fl:.2f} / {sl}':>18} {full:>14.0%}")
    if rows:
        print(f"largest controller process (controller or worker, one cell each): {max(r[8] for r in rows):.0f} MiB")
    for x in fm:
        print(f"controller CPU, one host: fixed {x['fixed_s_per_run']:.2f} s per run, marginal "
              f"{x['marginal_s_per_cell']:.3f} s per cell ({x['repo']}, via {x['via']})")
    if not rows or not all(r[2] > 0 and r[3] > 0 and r[4] > 0 and r[5] > 0 for r in rows):
        problems.append(f"figures missing or not above 0: {rows}")
    if leftovers:
        problems.append(f"left running: {leftovers}")
    _smoke.write(jpath, {"smoke": a.smoke, "repeat": a.repeat, "netns": th.netns, "via": a.via, "run_ids": run_ids,
                         "problems": problems, "fixed_marginal": fm, "rows": [{"plan": label, "cells": cells, "run_wall_s": wall, "cells_per_min": pm,
                                   "controller_cpu_per_cell_s": cpu, "mean_in_flight": fl, "all_slots_busy": full,
                                   "slots": sl, "largest_process_mib": rss}
                                  for label, cells, wall, pm, cpu, fl, full, sl, rss in rows]})
    return _smoke.status(problems, a.smoke)


if __name__ == "__main__":
    sys.exit(main())
