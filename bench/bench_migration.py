#!/usr/bin/env python3
"""Migration: harness time per hop versus QEMU's own total migration time, and downtime per
mode and QEMU build, in one run on one host.

The harness time of a hop runs from QMP `migrate` to the destination resumed (`cont` answered);
starting the destination QEMU before it and the liveness window after it are reported apart.
Cells: dual machine, guest XIVE and XICS (xive=off), one vCPU, idle, round trip, on every build
given (default: system and backports).

    .venv/bin/python bench/bench_migration.py [--builds system backports] [--repeat N] [--window S]

`--smoke`: one cell (the backports build, guest XIVE), one run, a 2 s window, `-n 1`; exit 1
unless it passed with every hop timed. The figures go to bench/results/migration.json (with
--smoke a temporary file; --json FILE either way).
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


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--builds", nargs="+", default=["system", "backports"])
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--window", type=float, default=3.0)
    _smoke.add_args(ap, "migration")
    a = ap.parse_args()
    guest_xive = "[default, 'off']"
    if a.smoke:
        a.builds, a.repeat, a.window, guest_xive = ["backports"], 1, 2.0, "[default]"
    jpath = _smoke.json_path(a.json, a.smoke, "migration")
    _smoke.sigterm_unwinds()
    rows: dict[tuple[str, str], dict[str, list]] = {}
    problems: list[str] = []
    run_ids: list[str] = []
    for i in range(a.repeat):
        with tempfile.TemporaryDirectory(prefix="caskit-benchmig-") as tmp:
            m = Path(tmp) / "m.yaml"
            m.write_text(
                "name: bench-migration\n"
                f"axes: {{ic_mode: [dual], guest_xive: {guest_xive}, smp: [1], firmware: [vof], qemu: [{', '.join(a.builds)}]}}\n"
                f"migration: [roundtrip]\ntimeouts: {{liveness: {a.window}}}\n")
            out = Path(tmp) / "run"
            res = _smoke.caskit_run(str(m), out, a.smoke, f"run {i + 1}/{a.repeat}", problems)
        if res is None:
            continue
        run_ids.append(res["run"]["id"])
        for c in res["cells"]:
            if a.smoke and c["verdict"] != "PASS":
                problems.append(f"{c['id']}: {c['verdict']}: {c.get('reason')}")
            key = (c["axes"]["qemu"] + " " + (c.get("qemu_version") or ""), c["observed"].get("mode") or "-")
            r = rows.setdefault(key, {"ratio": [], "harness_s": [], "qemu_s": [], "downtime_ms": [], "setup_s": [],
                                      "first_beat_s": [], "verdicts": []})
            r["verdicts"].append(c["verdict"])
            for h in (c.get("migration") or {}).get("hops", []):
                total = h["qmp"].get("total_time_ms")
                if total and h.get("harness_s"):
                    r["ratio"].append(h["harness_s"] / (total / 1000))
                    r["harness_s"].append(h["harness_s"])
                    r["qemu_s"].append(total / 1000)
                if h["qmp"].get("downtime_ms") is not None:
                    r["downtime_ms"].append(h["qmp"]["downtime_ms"])
                if h.get("setup_s") is not None:
                    r["setup_s"].append(h["setup_s"])
                if h["liveness"].get("first_beat_s") is not None:
                    r["first_beat_s"].append(h["liveness"]["first_beat_s"])

    def med(x):
        return f"{statistics.median(x):.3f}" if x else "-"

    print(f"{'build':28} {'mode':5} {'hops':>4} {'harness s':>10} {'QEMU s':>8} {'ratio':>6} {'downtime ms':>12} "
          f"{'dest start s':>12} {'1st beat s':>10}  verdicts")
    summary = []
    for (build, mode), r in sorted(rows.items()):
        print(f"{build:28} {mode or '-':5} {len(r['ratio']):>4} {med(r['harness_s']):>10} {med(r['qemu_s']):>8} "
              f"{med(r['ratio']):>6} {med(r['downtime_ms']):>12} {med(r['setup_s']):>12} {med(r['first_beat_s']):>10}  "
              f"{','.join(sorted(set(r['verdicts'])))}")
        summary.append({"build": build, "mode": mode, **r})
    if not any(r["ratio"] and r["downtime_ms"] for r in rows.values()):
        problems.append("no hop with QEMU's total time, the harness time and a downtime")
    left = _smoke.qemu_left([f"caskit:{r}:" for r in run_ids])
    if left:
        problems.append(f"QEMU left running: {left}")
    _smoke.write(jpath, {"smoke": a.smoke, "builds": a.builds, "window_s": a.window, "run_ids": run_ids,
                         "rows": summary, "problems": problems})
    return _smoke.status(problems, a.smoke)


if __name__ == "__main__":
    sys.exit(main())
