"""How long a guest takes to reach caskit's ready marker when the machine is loaded: the figure
the default boot timeout must stay well above (a busy farm host must never read as a hang).

N guests (smp 2, 1 GiB, the kit's kernel and initramfs) start at once on this host, each on raw
QEMU with its console on a pipe; the time from spawn to `CASKIT-READY` is taken per guest. Run
with several N (2 guests per core is a heavily loaded host) and both firmwares.

    .venv/bin/python bench/bench_boot_under_load.py --guests 2 4 6 --firmware vof slof

`--smoke`: one guest, VOF, one repeat; exit 1 unless it reached the ready marker. The figures go
to bench/results/boot-under-load.json (with --smoke a temporary file; --json FILE either way).
"""

from __future__ import annotations

import argparse
import os
import selectors
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import _smoke  # noqa: E402
from harness import kit as kitmod  # noqa: E402

READY = b"CASKIT-READY"
TAG = f"caskit-bench-boot:{os.getpid()}"  # this process's guests, for the check that none is left


def argv(k, firmware: str, smp: int) -> list[str]:
    machine = "pseries,x-vof=on" if firmware == "vof" else "pseries"
    return ["qemu-system-ppc64", "-M", machine, "-accel", "tcg", "-cpu", "POWER9", "-smp", str(smp), "-m", "1024",
            "-nodefaults", "-display", "none", "-serial", "stdio", "-kernel", str(k.kernel),
            "-initrd", str(k.initrd), "-append", "console=hvc0", "-name", f"{TAG}:{firmware}"]


def boot_many(k, n: int, firmware: str, smp: int, limit: float) -> list[float | None]:
    sel = selectors.DefaultSelector()
    procs, seen, done = [], {}, {}
    t0 = time.monotonic()
    try:
        for i in range(n):
            p = subprocess.Popen(argv(k, firmware, smp), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                 stderr=subprocess.DEVNULL)
            os.set_blocking(p.stdout.fileno(), False)
            sel.register(p.stdout, selectors.EVENT_READ, i)
            procs.append(p)
            seen[i] = b""
        while sel.get_map() and time.monotonic() - t0 < limit:
            for key, _ in sel.select(timeout=1.0):
                i = key.data
                chunk = key.fileobj.read()
                if chunk == b"":  # EOF: this QEMU exited without the marker
                    sel.unregister(key.fileobj)
                    continue
                seen[i] = (seen[i] + (chunk or b""))[-4096:]
                if i not in done and READY in seen[i]:
                    done[i] = time.monotonic() - t0
                    sel.unregister(key.fileobj)
    finally:
        for p in procs:  # stopped by PID, every one
            p.kill()
            p.wait()
    return [done.get(i) for i in range(n)]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--guests", type=int, nargs="+", default=[1, 2, 4, 6])
    ap.add_argument("--firmware", nargs="+", default=["vof", "slof"])
    ap.add_argument("--smp", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--limit", type=float, default=300.0)
    _smoke.add_args(ap, "boot-under-load")
    a = ap.parse_args()
    if a.smoke:
        a.guests, a.firmware, a.repeat, a.limit = [1], ["vof"], 1, 120.0
    out = _smoke.json_path(a.json, a.smoke, "boot-under-load")
    _smoke.sigterm_unwinds()
    k = kitmod.build(log=lambda m: print(m, file=sys.stderr))
    print(f"cores: {os.cpu_count()}, smp {a.smp}, kit {k.key}")
    print(f"{'firmware':8} {'guests':>6} {'median s':>9} {'max s':>7} {'not ready':>9}")
    rows, problems = [], []
    for fw in a.firmware:
        for n in a.guests:
            times: list[float | None] = []
            for _ in range(a.repeat):
                times += boot_many(k, n, fw, a.smp, a.limit)
            ok = [t for t in times if t is not None]
            rows.append({"firmware": fw, "guests": n, "smp": a.smp, "to_ready_s": times,
                         "median_s": statistics.median(ok) if ok else None, "max_s": max(ok) if ok else None,
                         "not_ready": len(times) - len(ok)})
            if len(ok) < len(times):
                problems.append(f"{fw}, {n} guests: {len(times) - len(ok)} never reached the ready marker "
                                f"(limit {a.limit:g} s)")
            print(f"{fw:8} {n:>6} {statistics.median(ok) if ok else float('nan'):>9.1f} "
                  f"{max(ok) if ok else float('nan'):>7.1f} {len(times) - len(ok):>9}")
    left = _smoke.qemu_left([TAG])
    if left:
        problems.append(f"QEMU left running: {left}")
    _smoke.write(out, {"smoke": a.smoke, "kit": k.key, "cores": os.cpu_count(), "qemu_tags": [TAG], "rows": rows,
                       "problems": problems})
    return _smoke.status(problems, a.smoke)


if __name__ == "__main__":
    sys.exit(main())
