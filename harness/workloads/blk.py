"""virtio-blk: write a pattern with direct I/O, read it back, compare; the disk's lines must grow."""

from __future__ import annotations

import re
import time

from .base import GuestSession, LaunchContext, Workload, WorkloadFailed
from .devices import device_argv, line_delta, make_disk

MIB = 4


def find_disk(g: GuestSession) -> tuple[str, str]:
    """(/dev/vdX, virtioN) of the harness's disk."""
    g.load_modules()
    out = g.sh("for b in /sys/block/vd*; do [ -e \"$b\" ] && echo \"${b##*/} $(basename $(readlink $b/device))\"; done").output
    m = re.search(r"^(vd\w+) (virtio\d+)$", out, re.M)
    if not m:
        raise WorkloadFailed("the guest shows no virtio disk", out)
    return f"/dev/{m.group(1)}", m.group(2)


def _guest_seconds(timeout: float) -> int:
    """The guest's own watch on dd ends well before the console gives up on the command."""
    return max(5, int(timeout) - 10)


def write(g: GuestSession, dev: str, timeout: float = 120) -> str:
    r = g.sh(f"ck-blk write {dev} {MIB} {_guest_seconds(timeout)}", timeout=timeout, check=False)
    if r.status != 0:
        kv = dict(re.findall(r"(\w+)=(\S+)", r.output))
        raise WorkloadFailed(f"disk write {'stuck' if 'stuck' in kv else 'failed'} (exit {r.status})", r.output, kv,
                             symptom="disk-write-stuck" if "stuck" in kv else "disk-io-error")
    return r.output


def verify(g: GuestSession, dev: str, timeout: float = 120) -> dict:
    r = g.sh(f"ck-blk verify {dev} {MIB} {_guest_seconds(timeout)}", timeout=timeout, check=False)
    kv = dict(re.findall(r"(\w+)=(\S+)", r.output))
    if r.status == 0:
        return kv
    if "stuck" in kv:
        raise WorkloadFailed(f"disk read-back stuck: no completion in {kv.get('seconds')}s", r.output, kv,
                             symptom="disk-read-stuck")
    if "read" in kv:
        raise WorkloadFailed(f"read-back differs from what was written ({kv})", r.output, kv, symptom="disk-data-corrupt")
    raise WorkloadFailed(f"read-back failed (exit {r.status})", r.output, kv, symptom="disk-io-error")


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


def devices(ctx: LaunchContext) -> list[str]:
    make_disk(ctx)
    return device_argv({"disk"}, ctx.scratch)


def in_flight(g: GuestSession) -> None:
    """The pattern written before the first hop, read back after each."""
    write(g, find_disk(g)[0])


def after_hop(g: GuestSession) -> dict:
    return verify(g, find_disk(g)[0], g.command_timeout)


WORKLOAD = Workload("virtio-blk", "direct-I/O write and read-back of a pattern on a virtio disk", run,
                    during_hops=in_flight, after_hop=after_hop,
                    devices=devices, host_local=True)
