"""Raw QEMU on an emulated host, for comparing with a caskit run of the same cells.

Takes a caskit run directory whose cells ran on an emulated host that is up now, stages that
run's guest kit on it (sent only if it is not there already, checked by hash), then for each cell
(in the run's order) starts the QEMU argv caskit recorded, with the console on stdio instead of a
socket and no QMP (`-S` dropped), over one SSH connection, and stops it by PID at the guest's
ready marker or at QEMU's own exit. Prints each cell's seconds, the total, and the caskit run's
cell phase beside it.

    .venv/bin/caskit hosts up nested-hv
    .venv/bin/caskit run MATRIX --out /tmp/run          # cells on nested-hv
    .venv/bin/python bench/bench_emulated_raw.py /tmp/run nested-hv

`--smoke [RUN_DIR] HOST`: one cell only, the run's first PASS cell on HOST; without RUN_DIR a
one-cell caskit run (accel kvm, ic-mode xics, smp 1) on HOST is made first, in a temporary
directory. HOST must be up either way (it is neither booted nor stopped here). The figures go to
a temporary file unless --json says where; exit 1 unless the raw QEMU reached the ready marker
(and, for its own run, the cell passed) and no QEMU of it is left on HOST.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import _smoke  # noqa: E402
from harness.emulated.host import EmulatedHost, L1State, is_up  # noqa: E402
from harness.errors import HostError  # noqa: E402
from harness.hosts.ssh import SshHost  # noqa: E402
from harness.kit import load_cached  # noqa: E402

# Options whose value is one of caskit's sockets: replaced by the console on stdio.
SOCKET_OPTIONS = ("-chardev", "-qmp", "-serial")
READY = b"CASKIT-READY"

SMOKE_MATRIX = """
name: raw-smoke
hosts: [{host}]
axes: {{accel: [kvm], ic_mode: [xics], smp: [1], firmware: [vof]}}
timeouts: {{boot: 180}}
"""


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


def caskit_run(host: str, kind: str, tmp: Path) -> tuple[Path, int, str]:
    """A one-cell caskit run on the (up) emulated host: (run dir, exit status, output tail)."""
    (tmp / "hosts.yaml").write_text(f"hosts:\n  {host}: {{kind: emulated, emulated_kind: {kind}}}\n")
    (tmp / "m.yaml").write_text(SMOKE_MATRIX.format(host=host))
    out = tmp / "run"
    p = subprocess.run([sys.executable, "-m", "harness.cli", "run", str(tmp / "m.yaml"), "--hosts",
                        str(tmp / "hosts.yaml"), "--out", str(out), "--db", "off"], cwd=REPO, capture_output=True,
                       text=True, timeout=900)
    return out, p.returncode, p.stdout[-1500:] + p.stderr[-1500:]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("run_dir", type=Path, nargs="?", help="the caskit run (with --smoke: optional)")
    ap.add_argument("host", help="the emulated host the run's cells ran on (it must be up)")
    ap.add_argument("--limit", type=float, default=300.0, help="seconds a raw guest may take to the ready marker")
    _smoke.add_args(ap, "emulated-raw")
    a = ap.parse_args()
    if a.run_dir is None and not a.smoke:
        ap.error("run_dir is required (only --smoke makes a run of its own)")
    state = L1State.load(a.host)
    if state is None or not is_up(a.host):
        raise SystemExit(f"{a.host} is not up: caskit hosts up {a.host}")
    jpath = _smoke.json_path(a.json, a.smoke, "emulated-raw")
    _smoke.sigterm_unwinds()
    problems: list[str] = []
    report: dict = {"smoke": a.smoke, "host": a.host, "kind": state.kind, "problems": problems}
    with tempfile.TemporaryDirectory(prefix="caskit-raw-") as tmp_s:
        tmp = Path(tmp_s)
        run_dir = a.run_dir
        if run_dir is None:
            t0 = time.monotonic()
            run_dir, rc, tail = caskit_run(a.host, state.kind, tmp)
            report["caskit_run"] = {"exit": rc, "wall_s": round(time.monotonic() - t0, 2)}
            if rc != 0:
                problems.append(f"the caskit run on {a.host} exited {rc}: {tail}")
        try:
            results = json.loads((run_dir / "results.json").read_text())
        except (OSError, ValueError) as e:
            raise SystemExit(f"no results in {run_dir}: {e}") from None
        report["run_dir"], report["run_id"] = str(run_dir), results["run"]["id"]
        cells = sorted((c for c in results["cells"] if c["host"] == a.host), key=lambda c: c["started_s"])
        if a.smoke:
            cells = [c for c in cells if c["verdict"] == "PASS"][:1]
        if not cells:
            problems.append(f"no {'PASS ' if a.smoke else ''}cell of {a.host} in {run_dir}")
            _smoke.write(jpath, report)
            return _smoke.status(problems, a.smoke) or 1
        h = SshHost(EmulatedHost(a.host, state.kind).up_spec())
        rows = []
        try:
            kit = load_cached(cells[0]["kit"])
            if kit is None:
                raise SystemExit(f"the run's kit {cells[0]['kit']} is not in the cache")
            t0 = time.monotonic()
            h.stage_kit(kit)
            report["stage_kit_s"] = round(time.monotonic() - t0, 2)
            total = 0.0
            for c in cells:
                argv = (run_dir / c["logs"]["argv"]).read_text().splitlines()
                log = tmp / "console.log"
                log.unlink(missing_ok=True)
                t0 = time.monotonic()
                p = h.spawn(raw_argv(argv), log, tmp / "stderr.log")
                ready = False
                try:
                    while p.poll() is None and time.monotonic() - t0 < a.limit:
                        if READY in log.read_bytes():
                            ready = True
                            break
                        time.sleep(0.02)  # the console goes to a file: nothing to wait on
                finally:
                    p.kill()
                    p.wait(10)
                dt = time.monotonic() - t0
                total += dt
                rows.append({"id": c["id"], "verdict": c["verdict"], "raw_s": round(dt, 3), "ready": ready,
                             "caskit_duration_s": c["duration_s"]})
                if c["verdict"] == "PASS" and not ready:
                    problems.append(f"{c['id']}: raw QEMU never reached {READY.decode()} (a PASS cell in caskit): "
                                    f"{(tmp / 'stderr.log').read_text(errors='replace')[-500:]}")
                print(f"{dt:6.2f} s  {c['verdict']:5}  {c['id']}", flush=True)
            phase = max(c["started_s"] + c["duration_s"] for c in cells) - min(c["started_s"] for c in cells)
            # caskit's first cell sends the kit to the host inside its cell phase; here it was staged
            # before the cells (the same transfer: the host booted afresh holds no kit), so the
            # like-for-like ratio counts it on both sides.
            with_kit = total + report["stage_kit_s"]
            print(f"raw: {total:.1f} s for {len(cells)} cells; caskit's cell phase: {phase:.1f} s "
                  f"(ratio {phase / total:.2f}; {phase / with_kit:.2f} with the kit's transfer on both sides)")
            report.update({"cells": rows, "raw_total_s": round(total, 3), "caskit_phase_s": round(phase, 3),
                           "ratio": round(phase / total, 3) if total else None,
                           "ratio_kit_both": round(phase / with_kit, 3) if with_kit else None})
        finally:
            try:
                left = h.kill_tagged(f"caskit:{results['run']['id']}:")  # by PID on the host; none, normally
            except HostError as e:
                left = [f"cannot look: {e}"]
            if left:
                problems.append(f"QEMU of run {results['run']['id']} left running on {a.host} (killed): {left}")
            h.close()
    _smoke.write(jpath, report)
    return _smoke.status(problems, a.smoke)


if __name__ == "__main__":
    raise SystemExit(main())
