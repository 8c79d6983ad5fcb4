"""device-hotplug: a virtio-net NIC added at runtime on a second PCI host bridge, configured by
the guest (drmgr), used, then removed and released cleanly.

The guest only sees a pseries hotplug event (the RAS_HOTPLUG line grows); drmgr, with the
rpaphp and rpadlpar_io modules loaded beforehand, configures the slot. The NIC is alone on its
bridge: releasing a slot with drmgr takes every device of that bridge with it.
"""

from __future__ import annotations

import time

from .base import GuestSession, Workload, WorkloadFailed
from .devices import NicSpec, Nic, device_argv
from .net import traffic

PHB_INDEX = 1
SLOT = 1
# DRC index of slot SLOT, function 0, bus 0 on bridge PHB_INDEX: (phb << 16) | (bus << 8) | devfn.
DRC = f"C{(PHB_INDEX << 16) | (SLOT << 3)}"
SPEC = NicSpec("ckhpnic", "ckhp0", "52:54:00:ca:5c:02", "10.0.5.15/24", "10.0.5.2", "msix")


def ras_hotplug(g: GuestSession) -> int:
    line = next((l for l in g.interrupts().lines if l.name == "RAS_HOTPLUG"), None)
    if line is None:
        raise WorkloadFailed("no RAS_HOTPLUG line in /proc/interrupts")
    return line.total


def wait_guest(g: GuestSession, condition: str, what: str, timeout: float = 20.0) -> None:
    """A bounded wait for a guest-side condition (a shell test), polled inside the guest."""
    r = g.sh(f"i=0; until {condition}; do i=$((i+1)); [ $i -ge {int(timeout * 5)} ] && exit 1; sleep 0.2; done",
             timeout=timeout + 15, check=False)
    if r.status != 0:
        raise WorkloadFailed(f"{what} did not happen within {timeout:.0f}s", r.output)


def run(g: GuestSession) -> dict:
    g.load_modules()  # rpaphp/rpadlpar_io must be there before the slot appears
    mac_test = f"grep -qx {SPEC.mac} /sys/class/net/*/address 2>/dev/null"
    ev0 = ras_hotplug(g)
    g.qmp.execute("netdev_add", type="user", id=SPEC.netdev, restrict=True, net="10.0.5.0/24")
    g.qmp.execute("device_add", driver="virtio-net-pci", id=SPEC.device, netdev=SPEC.netdev,
                  bus=f"phb{PHB_INDEX}.0", addr=f"0x{SLOT:x}", mac=SPEC.mac, romfile="")
    wait_guest(g, f"[ $(awk '/RAS_HOTPLUG/ {{s=0; for(i=2;i<=NF;i++) if ($i ~ /^[0-9]+$/) s+=$i; else break; print s}}' /proc/interrupts) -gt {ev0} ]",
               "the guest taking the hotplug event")
    ev1 = ras_hotplug(g)
    t0 = time.monotonic()
    add = g.sh(f"drmgr -c pci -a -s {DRC} -n", timeout=60, check=False)
    wait_guest(g, mac_test, f"an interface for the added NIC (drmgr: {add.output.strip()[-200:]})")
    add_s = round(time.monotonic() - t0, 2)
    out = g.sh(f"ck-nic {SPEC.mac} {SPEC.address}").output
    kv = dict(x.split("=", 1) for x in out.split() if "=" in x)
    nic = Nic(SPEC, kv["iface"], kv["virtio"])
    used = traffic(g, nic, 10)
    g.qmp.execute("device_del", id=SPEC.device)
    t1 = time.monotonic()
    g.sh(f"ip link set {nic.iface} down")
    rm = g.sh(f"drmgr -c pci -r -s {DRC} -n", timeout=60, check=False)
    if rm.status != 0:
        raise WorkloadFailed(f"drmgr could not release {DRC}: exit {rm.status}", rm.output)
    wait_guest(g, f"! {mac_test}", "the NIC leaving the guest")
    deadline = time.monotonic() + 20
    deleted = False
    while not deleted and time.monotonic() < deadline:
        # QEMU finishes device_del only once the guest released the slot; the device then leaves
        # /machine/peripheral (the DEVICE_DELETED event says the same, but may race the poll).
        deleted = SPEC.device not in {p["name"] for p in g.qmp.execute("qom-list", path="/machine/peripheral")}
        if not deleted:
            time.sleep(0.1)
    remove_s = round(time.monotonic() - t1, 2)
    g.qmp.execute("netdev_del", id=SPEC.netdev)
    ev2 = ras_hotplug(g)
    metrics = {"drc": DRC, "ras_hotplug": {"before": ev0, "after_add": ev1, "after_remove": ev2},
               "add_s": add_s, "remove_s": remove_s, "traffic": used, "device_deleted": deleted}
    if not deleted:
        raise WorkloadFailed("QEMU never reported DEVICE_DELETED: the guest did not let the NIC go", rm.output, metrics)
    if ev2 <= ev1:
        raise WorkloadFailed("the removal raised no hotplug event in the guest", "", metrics)
    return metrics


WORKLOAD = Workload("device-hotplug", "virtio-net added, used and removed at runtime on a second PHB", run,
                    devices=lambda ctx: device_argv({"hotplug-phb"}, ctx.scratch), host_local=True)
