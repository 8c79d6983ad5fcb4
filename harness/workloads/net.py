"""virtio-net: traffic to QEMU's user-network gateway through a MSI-X NIC and an INTx (LSI) NIC.

LSI takes a different path in XIVE (a level-sensitive source), so both are exercised.
"""

from __future__ import annotations

import time

from .base import GuestSession, Workload, WorkloadFailed
from .devices import Nic, device_argv, line_delta, nic_lines, nic_up, ping

PINGS = 40


def traffic(g: GuestSession, nic: Nic, count: int = PINGS) -> dict:
    """Ping with zero loss and the NIC's interrupt lines growing; FAIL otherwise."""
    before = g.interrupts()
    t0 = time.monotonic()
    sent, received = ping(g, nic, count)
    seconds = time.monotonic() - t0
    after = g.interrupts()
    lines = nic_lines(after, nic)
    deltas = line_delta(before, after, lines)
    total = sum(sum(d.values()) for d in deltas.values())
    m = {"iface": nic.iface, "kind": nic.spec.kind, "sent": sent, "received": received,
         "irq_deltas": deltas, "irq_total": total, "seconds": round(seconds, 2),
         "irqs_per_s": round(total / seconds, 1) if seconds > 0 else None,
         "triggers": sorted({l.trigger for l in lines if l.trigger}), "chips": sorted({l.chip for l in lines if l.chip})}
    if not lines:
        raise WorkloadFailed(f"no interrupt line for {nic.virtio} in /proc/interrupts", "", m, symptom="nic-irq-missing")
    if sent == 0 or received != sent:
        raise WorkloadFailed(f"{nic.spec.kind} NIC {nic.iface}: {received}/{sent} echo replies", "", m, symptom="pings-lost")
    if total <= 0:
        raise WorkloadFailed(f"{nic.spec.kind} NIC {nic.iface}: its interrupt lines did not grow", "", m, symptom="nic-irq-silent")
    want = "Level" if nic.spec.kind == "lsi" else "Edge"  # INTx is level-sensitive, MSI-X edge
    if m["triggers"] != [want]:
        raise WorkloadFailed(f"{nic.spec.kind} NIC {nic.iface}: trigger {m['triggers']}, expected {want}", "", m,
                             symptom="irq-trigger-wrong")
    return m


def run(g: GuestSession) -> dict:
    return {kind: traffic(g, nic_up(g, which)) for kind, which in (("msix", "nic"), ("lsi", "nic-lsi"))}


def in_flight(g: GuestSession) -> None:
    """A ping stream through the MSI-X NIC in the background while the guest migrates."""
    nic = nic_up(g, "nic")
    g.sh(f"(ping -I {nic.iface} -i 0.05 -c 100000 {nic.spec.gateway} > /tmp/ck-bg-ping.log 2>&1 &)")


def after_hop(g: GuestSession) -> dict:
    m = traffic(g, nic_up(g, "nic"), 10)
    m["background_ping_last"] = g.sh("tail -n 1 /tmp/ck-bg-ping.log", check=False).output.strip()
    return m


WORKLOAD = Workload("virtio-net", "ping through a MSI-X and an INTx virtio-net NIC", run,
                    devices=lambda ctx: device_argv({"nic", "nic-lsi"}, ctx.scratch),
                    during_hops=in_flight, after_hop=after_hop)
