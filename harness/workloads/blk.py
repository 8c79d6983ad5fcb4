"""virtio-blk: write a pattern with direct I/O, read it back, compare; the disk's lines must grow."""

from __future__ import annotations

import re
import time

from .base import GuestSession, Workload, WorkloadFailed
from .devices import device_argv, line_delta

MIB = 4


def find_disk(g: GuestSession) -> tuple[str, str]:
    """(/dev/vdX, virtioN) of the harness's disk."""
    g.load_modules()
    out = g.sh("for b in /sys/block/vd*; do [ -e \"$b\" ] && echo \"${b##*/} $(basename $(readlink $b/device))\"; done").output
    m = re.search(r"^(vd\w+) (virtio\d+)$", out, re.M)
    if not m:
        raise WorkloadFailed("the guest shows no virtio disk", out)
    return f"/dev/{m.group(1)}", m.group(2)


def write(g: GuestSession, dev: str) -> str:
    return g.sh(f"ck-blk write {dev} {MIB}", timeout=120).output


def verify(g: GuestSession, dev: str, timeout: float = 120) -> dict:
    r = g.sh(f"ck-blk verify {dev} {MIB}", timeout=timeout, check=False)
    kv = dict(re.findall(r"(\w+)=(\S+)", r.output))
    if r.status != 0:
        raise WorkloadFailed(f"read-back differs from what was written ({kv})" if "read" in kv
                             else f"read-back failed (exit {r.status})", r.output, kv)
    return kv


def run(g: GuestSession) -> dict:
    dev, virtio = find_disk(g)
    before = g.interrupts()
    t0 = time.monotonic()
    write(g, dev)
    kv = verify(g, dev)
    seconds = time.monotonic() - t0
    after = g.interrupts()
    d = line_delta(before, after, [l for l in after.lines if l.name == virtio or l.name.startswith(virtio + "-")])
    total = sum(sum(x.values()) for x in d.values())
    metrics = {"device": dev, "mib": MIB, "sha256": kv.get("read"), "irq_deltas": d, "irq_total": total,
               "seconds": round(seconds, 2), "irqs_per_s": round(total / seconds, 1) if seconds > 0 else None}
    if total <= 0:
        raise WorkloadFailed(f"{virtio}'s interrupt lines did not grow", "", metrics)
    return metrics


WORKLOAD = Workload("virtio-blk", "direct-I/O write and read-back of a pattern on a virtio disk", run,
                    devices=lambda ctx: device_argv({"disk"}, ctx.scratch))
