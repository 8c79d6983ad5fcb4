"""cpu-hotplug: take CPU 1 offline while traffic flows; its interrupts must move and traffic go
on; bring it back and it must take interrupts again."""

from __future__ import annotations

import re

from .affinity import input_line, steer_and_count
from .base import GuestSession, Workload, WorkloadFailed
from .devices import device_argv, nic_up

CPU = 1


def run(g: GuestSession) -> dict:
    nic = nic_up(g, "nic")
    irq = input_line(g, nic).label
    on_cpu1 = steer_and_count(g, nic, irq, CPU)
    # Background traffic across the offline/online transitions; its own count proves continuity.
    g.sh(f"(ping -I {nic.iface} -c 300 -i 0.05 -W 2 {nic.spec.gateway} > /tmp/ck-bg.log 2>&1 &)")
    r = g.sh(f"echo 0 > /sys/devices/system/cpu/cpu{CPU}/online", check=False)
    if r.status != 0:
        raise WorkloadFailed(f"CPU {CPU} could not be taken offline: {r.output.strip()}", r.output)
    table = g.interrupts()
    if CPU in table.cpus:
        raise WorkloadFailed(f"CPU {CPU} still has a /proc/interrupts column after going offline")
    moved = steer_and_count(g, nic, irq, 0)  # traffic flows, interrupts land on CPU 0
    refused = g.sh(f"echo {1 << CPU:x} > /proc/irq/{irq}/smp_affinity", check=False)
    if refused.status == 0:
        raise WorkloadFailed(f"the guest accepted IRQ {irq} affinity to offline CPU {CPU}")
    g.sh(f"echo 1 > /sys/devices/system/cpu/cpu{CPU}/online")
    back = steer_and_count(g, nic, irq, CPU)
    if back.get(CPU, 0) <= 0:
        raise WorkloadFailed(f"CPU {CPU} took no interrupt of IRQ {irq} after coming back", "", {"back": back})
    bg = g.sh("while pidof ping >/dev/null; do sleep 0.2; done; tail -n 2 /tmp/ck-bg.log", timeout=60).output
    m = re.search(r"(\d+) packets transmitted, (\d+) packets received", bg)
    sent, received = (int(m.group(1)), int(m.group(2))) if m else (0, 0)
    metrics = {"irq": irq, "before": on_cpu1, "while_offline": moved, "after_online": back,
               "offline_affinity_error": refused.output.strip(), "background_sent": sent,
               "background_received": received}
    if sent == 0 or received < sent:
        raise WorkloadFailed(f"background traffic lost packets across the hotplug: {received}/{sent}", bg, metrics)
    return metrics


WORKLOAD = Workload("cpu-hotplug", "CPU 1 offline and back under traffic", run,
                    devices=lambda ctx: device_argv({"nic"}, ctx.scratch), needs_smp=2)
