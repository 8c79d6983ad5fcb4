"""ipi: cross-CPU wakeups; the IPI line must grow on every CPU involved."""

from __future__ import annotations

import re

from .base import GuestSession, Workload, WorkloadFailed

ROUNDS = 300


def ipi_line(table):
    # XIVE names it "IPI-0" on chip XIVE-IPI, XICS plain "IPI".
    return next((l for l in table.lines if l.chip and re.fullmatch(r"IPI(-\d+)?", l.name)), None)


def run(g: GuestSession, rounds: int = ROUNDS) -> dict:
    before = g.interrupts()
    line = ipi_line(before)
    if line is None:
        raise WorkloadFailed("no IPI line in /proc/interrupts", g.sh("cat /proc/interrupts").output, symptom="ipi-missing")
    timeout = max(g.command_timeout, rounds / 5 + 30)
    out = g.sh(f"ck-ipi {rounds} 0 1 {max(5, int(timeout) - 10)}", timeout=timeout, check=False)
    kv = dict(re.findall(r"(\w+)=([\d.]+)", out.output))
    if out.status != 0:
        raise WorkloadFailed(("the IPI ping-pong stalled" if "stuck" in kv else f"ck-ipi exited {out.status}")
                             + f" ({rounds} rounds)", out.output, kv, symptom="ipi-stopped")
    after = g.interrupts()
    seconds = float(kv["t1"]) - float(kv["t0"])
    grown = {cpu: after.per_cpu(after.by_label(line.label))[cpu] - before.per_cpu(line).get(cpu, 0)
             for cpu in after.cpus}
    metrics = {"line": f"{line.label}:{line.chip}:{line.name}", "rounds": rounds, "seconds": round(seconds, 2),
               "ipi_delta": grown, "ipis_per_s": round(sum(grown.values()) / seconds, 1) if seconds > 0 else None}
    cold = [cpu for cpu in (0, 1) if grown.get(cpu, 0) <= 0]
    if cold:
        raise WorkloadFailed(f"IPI line {line.name} did not grow on CPU {cold}", out.output, metrics, symptom="ipi-stopped")
    return metrics


def in_flight(g: GuestSession) -> None:
    """An IPI ping-pong in the background while the guest migrates."""
    g.sh("(ck-ipi 1000000 0 1 1000000 > /tmp/ck-bg-ipi.log 2>&1 &)")


def after_hop(g: GuestSession) -> dict:
    # IPIs are how one vCPU wakes another: checked after every hop of a guest with two or more.
    return run(g, rounds=50) if g.smp >= 2 else {"skipped": "one vCPU"}


WORKLOAD = Workload("ipi", "token ping-pong between processes pinned to CPU 0 and 1", run, needs_smp=2,
                    during_hops=in_flight, after_hop=after_hop, checked_after_every_hop=True)
