"""The guest devices workloads share, and the guest-side steps to use them."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from .. import interrupts
from ..templating import render_lines
from .base import GuestSession, LaunchContext, WorkloadFailed

NIC_MAC = "52:54:00:ca:5c:00"
NIC_LSI_MAC = "52:54:00:ca:5c:01"
DISK_MIB = 64
DISK_FILE = "disk.raw"  # in the cell's scratch dir; the argv template names it too


@dataclass(frozen=True)
class NicSpec:
    device: str  # QEMU device id (for set_link, device_del)
    netdev: str
    mac: str
    address: str
    gateway: str
    kind: str  # "msix" | "lsi"


NICS = {
    "nic": NicSpec("cknic0", "cknet0", NIC_MAC, "10.0.2.15/24", "10.0.2.2", "msix"),
    "nic-lsi": NicSpec("cknic1", "cknet1", NIC_LSI_MAC, "10.0.3.15/24", "10.0.3.2", "lsi"),
}


@dataclass(frozen=True)
class Nic:
    spec: NicSpec
    iface: str
    virtio: str  # "virtio0": its interrupt lines are named after it


def make_disk(ctx: LaunchContext) -> None:
    """The cell's disk image, made on the host QEMU runs on (through the host: it may be remote).
    Sparse, one per cell (no state leaks between cells); a migration destination of the same cell
    finds it and shares it with its contents, as hosts of a migration domain share storage."""
    ctx.host.make_sparse(ctx.scratch / DISK_FILE, DISK_MIB << 20)


def device_argv(names: set[str], scratch: Path) -> list[str]:
    """QEMU's argv for the devices; it only names files (the disk: make_disk() makes it)."""
    return render_lines("workload-devices.argv.j2", devices=sorted(names), scratch=scratch,
                        nic_mac=NIC_MAC, nic_lsi_mac=NIC_LSI_MAC)


def _kv(text: str) -> dict[str, str]:
    return dict(re.findall(r"(\w+)=(\S+)", text))


def nic_up(g: GuestSession, which: str) -> Nic:
    g.load_modules()
    spec = NICS[which]
    out = g.sh(f"ck-nic {spec.mac} {spec.address}").output
    kv = _kv(out)
    if "iface" not in kv:
        raise WorkloadFailed(f"the guest shows no interface for {spec.device}", out)
    return Nic(spec, kv["iface"], kv["virtio"])


def nic_lines(table: interrupts.Table, nic: Nic) -> list[interrupts.Line]:
    """A virtio device's lines: virtioN-config/-input.Q/-output.Q with MSI-X, virtioN with INTx."""
    return [l for l in table.lines if l.name == nic.virtio or l.name.startswith(nic.virtio + "-")]


def ping(g: GuestSession, nic: Nic, count: int = 40) -> tuple[int, int]:
    out = g.sh(f"ck-ping {nic.iface} {nic.spec.gateway} {count}", timeout=count / 5 + 30).output
    kv = _kv(out)
    return int(kv.get("sent", 0)), int(kv.get("received", 0))


def line_delta(before: interrupts.Table, after: interrupts.Table, lines: list[interrupts.Line]) -> dict[str, dict[int, int]]:
    d = interrupts.delta(before, after)
    return {f"{l.label}:{l.name}": d.get(l.label, {}) for l in lines}
