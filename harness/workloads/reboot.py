"""reboot: QMP system_reset three times; each boot negotiates CAS again and must land in the
same mode, seen from the guest and the host, with IPIs flowing. On a dual machine it then
switches the mode at runtime (XIVE to XICS and back) through the next boot's command line."""

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
        g.reset()
        seconds = round(time.monotonic() - t0, 2)
        guest = observe.guest_view(g.sh("ck-observe").output)
        host = observe.host_view(g.qmp.hmp("info pic"))
        boot = {"boot": i + 1, "seconds": seconds, "guest_mode": guest.mode, "host_mode": host.mode,
                "host_irqchip": host.irqchip, "platform_support": guest.platform_support}
        boots.append(boot)
        if guest.mode != first or host.mode != first:
            raise WorkloadFailed(f"after reset {i + 1} the guest negotiated {guest.mode} (host: {host.mode}), "
                                 f"first boot {first}", "", {"first": first, "boots": boots}, symptom="mode-changed")
        _check_irqchip(g, host.mode, host.irqchip, f"after reset {i + 1}", {"boots": boots})
        if g.smp >= 2:
            boot["ipis_per_s"] = ipi_run(g, rounds=50)["ipis_per_s"]
    return {"first": first, "boots": boots, "switches": switch_modes(g, first)}


def _check_irqchip(g: GuestSession, mode: str | None, irqchip: str | None, when: str, metrics: dict) -> None:
    """Under KVM the controller of each CAS is created anew (the KVM device is destroyed at
    reset and made for the negotiated mode): the host must show it where the model says, in the
    kernel or in QEMU, at every boot."""
    want = g.irqchip_for(mode) if g.irqchip_for and mode else None
    if want and irqchip != want:
        raise WorkloadFailed(f"{when}: {mode} is {irqchip}, expected {want}", "", metrics, symptom="irqchip-changed")


def _reset_and_observe(g: GuestSession) -> tuple[str | None, str | None, str | None]:
    g.reset()
    host = observe.host_view(g.qmp.hmp("info pic"))
    return observe.guest_view(g.sh("ck-observe").output).mode, host.mode, host.irqchip


def switch_modes(g: GuestSession, first: str | None) -> list[dict]:
    """On a dual machine, switch the mode at runtime and back: the next boot's command line gets
    (or loses) xive=off, CAS runs again, and QEMU swaps the active interrupt controller (under
    KVM: destroys and re-creates the KVM device) after the machine started. kexec cannot do
    this: the new kernel reuses the first boot's device tree and makes no CAS call (measured)."""
    if g.qmp.execute("qom-get", path="/machine", property="ic-mode") != "dual":
        return []
    original = str(g.qmp.execute("qom-get", path="/machine", property="append"))
    flipped = (" ".join(w for w in original.split() if w != "xive=off") if "xive=off" in original.split()
               else f"{original} xive=off")
    out = []
    try:
        for cmdline in (flipped, original):
            g.qmp.execute("qom-set", path="/machine", property="append", value=cmdline)
            want = "xics" if "xive=off" in cmdline.split() else "xive"
            guest, host, irqchip = _reset_and_observe(g)
            out.append({"xive_off": want == "xics", "guest_mode": guest, "host_mode": host, "host_irqchip": irqchip})
            if guest != want or host != want:
                raise WorkloadFailed(f"after a reset with{'' if want == 'xics' else 'out'} xive=off the guest "
                                     f"negotiated {guest} (host: {host}), expected {want}", "", {"switches": out},
                                     symptom="mode-changed")
            _check_irqchip(g, host, irqchip, f"after the switch to {want}", {"switches": out})
    finally:
        g.qmp.execute("qom-set", path="/machine", property="append", value=original)
    if out and out[-1]["guest_mode"] != first:
        raise WorkloadFailed(f"switched back to {out[-1]['guest_mode']}, first boot was {first}", "", {"switches": out})
    return out


WORKLOAD = Workload("reboot", "system_reset x3: CAS again, same mode, interrupts working", run, resets_guest=True)
