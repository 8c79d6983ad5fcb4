"""The in-guest interrupt workloads, by name. The order here is the order they run in one boot:
reboot last, since it resets the guest."""

from __future__ import annotations

from . import affinity, blk, cpu_hotplug, hotplug, ipi, net, reboot
from .base import (GuestSession, LaunchContext, Workload, WorkloadFailed, WorkloadResult, WorkloadSkipped,
                   execute)

REGISTRY: dict[str, Workload] = {w.name: w for w in (
    ipi.WORKLOAD, net.WORKLOAD, blk.WORKLOAD, affinity.WORKLOAD, cpu_hotplug.WORKLOAD, hotplug.WORKLOAD,
    reboot.WORKLOAD,
)}


def ordered(names: tuple[str, ...] | list[str]) -> list[Workload]:
    return [w for n, w in REGISTRY.items() if n in names]


def device_args(names, ctx: LaunchContext) -> list[str]:
    """The union of the workloads' devices, each device once."""
    args: list[str] = []
    for w in ordered(names):
        new = w.devices(ctx)
        i = 0
        while i < len(new):  # argv comes in option/value pairs
            pair = new[i:i + 2]
            if not any(args[j:j + 2] == pair for j in range(0, len(args), 2)):
                args += pair
            i += 2
    return args


__all__ = ["REGISTRY", "ordered", "device_args", "execute", "GuestSession", "LaunchContext", "Workload",
           "WorkloadFailed", "WorkloadResult", "WorkloadSkipped"]
