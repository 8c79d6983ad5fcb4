#!/usr/bin/env python3
"""Cross-host migration: what SSH and TCP cost per hop, against the same round trip on one host.

Two real SSH hosts (tests/sshhosts.py: sshd in two network namespaces joined by a veth) run
QEMU 10.0.2 (backports); an idle one-vCPU XIVE guest goes A -> B -> A' between them
(`cross-host`, migration over TCP), and the same guest makes a local round trip (`roundtrip`,
unix sockets). Per hop: the destination's start (setup_s: QEMU launched and attached over SSH),
harness time (QMP `migrate` to the destination resumed) over QEMU's own total time, and downtime.

    .venv/bin/python bench/bench_cross_host.py [--repeat N] [--window S]
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

import sshhosts  # noqa: E402

MATRIX = """
name: bench-{plan}
hosts: [{host}]
{domain}
axes: {{{ic}smp: [1], firmware: [vof], qemu: [backports]}}
migration: [{plan}]
timeouts: {{liveness: {window}}}
"""


def run(tmp: Path, plan: str, host: str, hosts_file: Path | None, window: float) -> dict:
    m = tmp / f"{plan}.yaml"
    # A domain pins ic-mode (dual here, like the local cell's).
    cross = plan == "cross-host"
    m.write_text(MATRIX.format(plan=plan, host=host, window=window, domain="domain: pair" if cross else "",
                               ic="" if cross else "ic_mode: [dual], "))
    out = tmp / f"out-{plan}"
    argv = [sys.executable, "-m", "harness.cli", "run", str(m), "--out", str(out)]
    if hosts_file:
        argv += ["--hosts", str(hosts_file)]
    p = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True)
    print(f"{plan}: caskit exit {p.returncode}", file=sys.stderr)
    if p.returncode == 2:
        sys.exit(f"caskit refused the bench matrix: {p.stderr.strip()}")
    return json.loads((out / "results.json").read_text())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--window", type=float, default=3.0)
    a = ap.parse_args()
    from harness.qemu_builds import suite_build

    binary, fw, _ = suite_build("bookworm-backports")
    rows: dict[str, dict[str, list]] = {}
    with tempfile.TemporaryDirectory(prefix="caskit-benchxh-") as t:
        tmp = Path(t)
        pair = sshhosts.start(tmp / "hosts")
        try:
            inv = pair.write_inventory(tmp / "hosts.yaml", qemu={"backports": {"binary": str(binary),
                                                                             "firmware_dir": str(fw)}})
            for i in range(a.repeat):
                for plan, host, hosts_file in (("cross-host", "hosta", inv), ("roundtrip", "local", None)):
                    (tmp / f"r{i}").mkdir(exist_ok=True)
                    res = run(tmp / f"r{i}", plan, host, hosts_file, a.window)
                    for c in res["cells"]:
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
    print(f"{'plan':<12} {'verdicts':<22} {'dest start s':>12} {'harness s':>10} {'QEMU s':>8} {'ratio':>6} {'downtime ms':>12}")
    for plan, r in rows.items():
        med = lambda xs: statistics.median(xs) if xs else float("nan")  # noqa: E731
        print(f"{plan:<12} {','.join(sorted(set(r['verdicts']))):<22} {med(r['setup_s']):>12.2f} "
              f"{med(r['harness_s']):>10.3f} {med(r['qemu_s']):>8.3f} {med(r['ratio']):>6.2f} "
              f"{med(r['downtime_ms']):>12.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
