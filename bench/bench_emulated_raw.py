"""Raw QEMU on an emulated host, for comparing with a caskit run of the same cells.

Takes a caskit run directory whose cells ran on an emulated host that is up now, stages that
run's guest kit on it, then for each cell (in the run's order) starts the QEMU argv caskit
recorded, with the console on stdio instead of a socket and no QMP (`-S` dropped), over one SSH
connection, and stops it by PID at the guest's ready marker or at QEMU's own exit. Prints each
cell's seconds, the total, and the caskit run's cell phase beside it.

    .venv/bin/caskit hosts up nested-hv
    .venv/bin/caskit run MATRIX --out /tmp/run          # cells on nested-hv
    .venv/bin/python bench/bench_emulated_raw.py /tmp/run nested-hv
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from harness.emulated.host import EmulatedHost, L1State, is_up  # noqa: E402
from harness.hosts.ssh import SshHost  # noqa: E402
from harness.kit import cache_root  # noqa: E402

# Options whose value is one of caskit's sockets: replaced by the console on stdio.
SOCKET_OPTIONS = ("-chardev", "-qmp", "-serial")


def raw_argv(argv: list[str]) -> list[str]:
    out, skip = [], False
    for x in argv:
        if skip:
            skip = False
        elif x in SOCKET_OPTIONS:
            skip = True
        elif x != "-S":
            out.append(x)
    return out + ["-serial", "stdio"]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("host", help="the emulated host the run's cells ran on (it must be up)")
    a = ap.parse_args()
    state = L1State.load(a.host)
    if state is None or not is_up(a.host):
        raise SystemExit(f"{a.host} is not up: caskit hosts up {a.host}")
    results = json.loads((a.run_dir / "results.json").read_text())
    cells = sorted((c for c in results["cells"] if c["host"] == a.host), key=lambda c: c["started_s"])
    h = SshHost(EmulatedHost(a.host, state.kind).up_spec())
    try:
        key = cells[0]["kit"]
        d = f"/var/tmp/caskit/kits/{key}"
        h.run(["mkdir", "-p", d], check=True)
        sftp = h.transport().open_sftp_client()
        for name in ("vmlinux", "initrd.gz"):
            sftp.put(str(cache_root() / "kits" / key / name), f"{d}/{name}")
        sftp.close()
        total = 0.0
        with tempfile.TemporaryDirectory(prefix="caskit-raw-") as tmp:
            for c in cells:
                argv = (a.run_dir / c["logs"]["argv"]).read_text().splitlines()
                log = Path(tmp) / "console.log"
                log.unlink(missing_ok=True)
                t0 = time.monotonic()
                p = h.spawn(raw_argv(argv), log, Path(tmp) / "stderr.log")
                try:
                    while b"CASKIT-READY" not in log.read_bytes() and p.poll() is None:
                        time.sleep(0.02)
                finally:
                    p.kill()
                    p.wait(10)
                dt = time.monotonic() - t0
                total += dt
                print(f"{dt:6.2f} s  {c['verdict']:5}  {c['id']}", flush=True)
        phase = max(c["started_s"] + c["duration_s"] for c in cells) - min(c["started_s"] for c in cells)
        print(f"raw: {total:.1f} s for {len(cells)} cells; caskit's cell phase: {phase:.1f} s "
              f"(ratio {phase / total:.2f})")
    finally:
        h.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
