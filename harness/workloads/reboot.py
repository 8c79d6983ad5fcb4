"""reboot: QMP system_reset three times; each boot negotiates CAS again and must land in the
same mode, seen from the guest and the host, with IPIs flowing."""

from __future__ import annotations

import time

from .. import observe
from .base import GuestSession, Workload, WorkloadFailed
from .ipi import run as ipi_run

TIMES = 3


def run(g: GuestSession) -> dict:
    first = observe.guest_view(g.sh("ck-observe").output).mode
    boots = []
    for i in range(TIMES):
        t0 = time.monotonic()
        g.qmp.execute("system_reset")
        g.wait_ready(g.boot_timeout)
        g.modules_loaded = False
        seconds = round(time.monotonic() - t0, 2)
        guest = observe.guest_view(g.sh("ck-observe").output)
        host = observe.host_view(g.qmp.hmp("info pic"))
        boot = {"boot": i + 1, "seconds": seconds, "guest_mode": guest.mode, "host_mode": host.mode,
                "platform_support": guest.platform_support}
        boots.append(boot)
        if guest.mode != first or host.mode != first:
            raise WorkloadFailed(f"after reset {i + 1} the guest negotiated {guest.mode} (host: {host.mode}), "
                                 f"first boot {first}", "", {"first": first, "boots": boots})
        if g.smp >= 2:
            boot["ipis_per_s"] = ipi_run(g, rounds=50)["ipis_per_s"]
    return {"first": first, "boots": boots}


WORKLOAD = Workload("reboot", "system_reset x3: CAS again, same mode, interrupts working", run, resets_guest=True)
