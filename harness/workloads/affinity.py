"""affinity: steer the NIC's receive-queue interrupt to each online CPU in turn; its count must
grow on that CPU only."""

from __future__ import annotations

from .base import GuestSession, Workload, WorkloadFailed
from .devices import Nic, device_argv, nic_up, ping


def input_line(g: GuestSession, nic: Nic):
    t = g.interrupts()
    line = next((l for l in t.lines if l.name == f"{nic.virtio}-input.0"), None)
    if line is None:
        raise WorkloadFailed(f"no {nic.virtio}-input.0 line in /proc/interrupts")
    return line


def online_cpus(g: GuestSession) -> list[int]:
    text = g.sh("cat /sys/devices/system/cpu/online").output.strip()
    cpus: list[int] = []
    for part in text.split(","):
        lo, _, hi = part.partition("-")
        cpus += list(range(int(lo), int(hi or lo) + 1))
    return cpus


def set_affinity(g: GuestSession, irq: str, cpu: int) -> None:
    """Steer one IRQ to one CPU; FAIL with the kernel's words if it refuses."""
    r = g.sh(f"echo {1 << cpu:x} > /proc/irq/{irq}/smp_affinity", check=False)
    if r.status != 0:
        raise WorkloadFailed(f"the guest refused IRQ {irq} affinity to CPU {cpu}: {r.output.strip()}", r.output)


def steer_and_count(g: GuestSession, nic: Nic, irq: str, cpu: int, pings: int = 20) -> dict[int, int]:
    set_affinity(g, irq, cpu)
    before = g.interrupts()
    sent, received = ping(g, nic, pings)
    after = g.interrupts()
    if received != sent or sent == 0:
        raise WorkloadFailed(f"{received}/{sent} echo replies with IRQ {irq} on CPU {cpu}")
    b = before.per_cpu(before.by_label(irq))
    return {c: n - b.get(c, 0) for c, n in after.per_cpu(after.by_label(irq)).items()}


def run(g: GuestSession) -> dict:
    nic = nic_up(g, "nic")
    irq = input_line(g, nic).label
    per_target: dict[int, dict[int, int]] = {}
    for cpu in online_cpus(g):
        d = steer_and_count(g, nic, irq, cpu)
        per_target[cpu] = d
        elsewhere = {c: n for c, n in d.items() if c != cpu and n > 0}
        if d.get(cpu, 0) <= 0 or elsewhere:
            raise WorkloadFailed(f"IRQ {irq} steered to CPU {cpu} fired on {d}", "", {"irq": irq, "deltas": per_target})
    return {"irq": irq, "deltas": per_target}


WORKLOAD = Workload("affinity", "the NIC's RX interrupt steered to each online CPU", run,
                    devices=lambda ctx: device_argv({"nic"}, ctx.scratch), needs_smp=2)
