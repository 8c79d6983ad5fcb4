#!/usr/bin/env python3
"""Cross-host migration: what SSH and TCP cost per hop, against the same round trip on one host.

Two real SSH hosts (tests/sshhosts.py: sshd in two network namespaces joined by a veth) run
QEMU 10.0.2 (backports); an idle one-vCPU XIVE guest goes A -> B -> A' between them
(`cross-host`, migration over TCP), and the same guest makes a local round trip (`roundtrip`,
unix sockets). Per hop: the destination's start (setup_s: QEMU launched and attached over SSH),
harness time (QMP `migrate` to the destination resumed) over QEMU's own total time, and downtime.

    .venv/bin/python bench/bench_cross_host.py [--repeat N] [--window S]

`--smoke`: the cross-host cell once (no local round trip: the same code with a local host), a
2 s window; exit 1 unless it passed with every hop timed. The figures go to
bench/results/cross-host.json (with --smoke a temporary file; --json FILE either way).
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
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT))

import _smoke  # noqa: E402
import sshhosts  # noqa: E402

MATRIX = """
name: bench-{plan}
hosts: [{host}]
{domain}
axes: {{{ic}smp: [1], firmware: [vof], qemu: [backports]}}
migration: [{plan}]
timeouts: {{liveness: {window}}}
"""


def run(tmp: Path, plan: str, host: str, hosts_file: Path | None, window: float) -> tuple[dict, int]:
    m = tmp / f"{plan}.yaml"
    # A domain pins ic-mode (dual here, like the local cell's).
    cross = plan == "cross-host"
    m.write_text(MATRIX.format(plan=plan, host=host, window=window, domain="domain: pair" if cross else "",
                               ic="" if cross else "ic_mode: [dual], "))
    out = tmp / f"out-{plan}"
    argv = [sys.executable, "-m", "harness.cli", "run", str(m), "--out", str(out), "--db", "off"]
    if hosts_file:
        argv += ["--hosts", str(hosts_file)]
    p = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True)
    print(f"{plan}: caskit exit {p.returncode}", file=sys.stderr)
    if p.returncode == 2:
        sys.exit(f"caskit refused the bench matrix: {p.stderr.strip()}")
    try:
        return json.loads((out / "results.json").read_text()), p.returncode
    except (OSError, ValueError):
        raise SystemExit(f"{plan}: no results.json (caskit exit {p.returncode}): "
                         f"{p.stdout[-1500:]}{p.stderr[-1500:]}") from None


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--window", type=float, default=3.0)
    _smoke.add_args(ap, "cross-host")
    a = ap.parse_args()
    plans = (("cross-host", "hosta", True), ("roundtrip", "local", False))
    if a.smoke:
        a.repeat, a.window, plans = 1, 2.0, plans[:1]
    jpath = _smoke.json_path(a.json, a.smoke, "cross-host")
    _smoke.sigterm_unwinds()
    from harness.qemu_builds import suite_build

    binary, fw, _ = suite_build("bookworm-backports")
    rows: dict[str, dict[str, list]] = {}
    problems: list[str] = []
    run_ids: list[str] = []
    leftovers: list[str] = []
    with tempfile.TemporaryDirectory(prefix="caskit-benchxh-") as t:
        tmp = Path(t)
        pair = sshhosts.start(tmp / "hosts")
        try:
            inv = pair.write_inventory(tmp / "hosts.yaml", qemu={"backports": {"binary": str(binary),
                                                                             "firmware_dir": str(fw)}})
            for i in range(a.repeat):
                for plan, host, remote in plans:
                    (tmp / f"r{i}").mkdir(exist_ok=True)
                    res, rc = run(tmp / f"r{i}", plan, host, inv if remote else None, a.window)
                    run_ids.append(res["run"]["id"])
                    if a.smoke and rc != 0:
                        problems.append(f"{plan}: caskit exit {rc}")
                    for c in res["cells"]:
                        if a.smoke and c["verdict"] != "PASS":
                            problems.append(f"{plan}: {c['id']}: {c['verdict']}: {c.get('reason')}")
                        r = rows.setdefault(plan, {k: [] for k in ("setup_s", "harness_s", "qemu_s", "ratio",
                                                                   "downtime_ms", "verdicts")})
                        r["verdicts"].append(c["verdict"])
                        for h in (c.get("migration") or {}).get("hops", []):
                            total = h["qmp"].get("total_time_ms")
                            if total and h.get("harness_s"):
                                r["harness_s"].append(h["harness_s"])
                                r["qemu_s"].append(total / 1000)
                                r["ratio"].append(h["harness_s"] / (total / 1000))
                            if h.get("setup_s") is not None:
                                r["setup_s"].append(h["setup_s"])
                            if h["qmp"].get("downtime_ms") is not None:
                                r["downtime_ms"].append(h["qmp"]["downtime_ms"])
        finally:
            pair.close()
            # What is still there (sshds, namespaces, mounts), what close() had to kill, our QEMUs.
            leftovers = pair.leftovers() + [f"killed by close(): {x}" for x in pair.stragglers]
            leftovers += [f"pid {p} (QEMU)" for p in _smoke.qemu_left([f"caskit:{r}:" for r in run_ids])]
    print(f"{'plan':<12} {'verdicts':<22} {'dest start s':>12} {'harness s':>10} {'QEMU s':>8} {'ratio':>6} {'downtime ms':>12}")
    for plan, r in rows.items():
        med = lambda xs: statistics.median(xs) if xs else float("nan")  # noqa: E731
        print(f"{plan:<12} {','.join(sorted(set(r['verdicts']))):<22} {med(r['setup_s']):>12.2f} "
              f"{med(r['harness_s']):>10.3f} {med(r['qemu_s']):>8.3f} {med(r['ratio']):>6.2f} "
              f"{med(r['downtime_ms']):>12.0f}")
    for plan, r in rows.items():
        if not (r["ratio"] and r["setup_s"] and r["downtime_ms"]):
            problems.append(f"{plan}: no hop with the destination's start, the harness and QEMU times and a downtime")
    if not rows:
        problems.append("no cell ran")
    if leftovers:
        problems.append(f"left running: {leftovers}")
    _smoke.write(jpath, {"smoke": a.smoke, "repeat": a.repeat, "window_s": a.window, "netns": pair.netns,
                         "run_ids": run_ids, "rows": rows, "problems": problems})
    return _smoke.status(problems, a.smoke)


if __name__ == "__main__":
    sys.exit(main())
