"""Migration hops, judged by the guest itself.

A hop: destination started with -incoming defer, stream over a unix socket or a file (`exec:`),
QMP's own account recorded (status, total time, downtime, bytes). Then the health check:
1. a liveness window in which the harness only watches the destination's heartbeat console:
   no console input, no QMP command;
2. the guest kernel's log from the hop on (relayed on the heartbeat console, the main console,
   and dmesg afterwards): panics, Oopses, BUG, lockups, RCU stalls;
3. then it talks to the guest: the mode in both views unchanged, IPIs and device interrupts
   still flowing, nothing lost;
4. the destination process alive, and the source where the plan expects it.
QMP saying "completed" and "running" decides nothing.
"""

from __future__ import annotations

import contextlib
import time
from typing import Callable, Iterator

from .. import guestlog, heartbeat, observe, qemu_exit
from ..errors import (CaskitError, GuestHang, Kind, MigrationStuck, QemuCrashed, QemuDied, QemuHung, QemuRefused,
                      classify)
from ..heartbeat import Beat
from ..machine import GuestMachine
from ..records import HopResult

MIGRATE_TIMEOUT = 120.0
STALL_S = 3.0  # 15 heartbeat periods of silence once beats have resumed
DRAIN_S = 2.0  # a dead destination's console: its socket is at EOF at once, or soon after


# The hop's record is typed in records.py (HopResult); here it is what a hop fills in.
Hop = HopResult


# What the machine's view of an ended or stuck QEMU means for a hop.
def _symptom(e: CaskitError) -> str:
    if isinstance(e, QemuCrashed):
        return "destination-crashed"
    if isinstance(e, QemuHung):
        return "qemu-hung"
    if isinstance(e, GuestHang):
        return "unresponsive"
    if isinstance(e, QemuRefused):
        return "destination-exited"
    return "destination-exited"


def record_failure(hop: Hop, m: GuestMachine, e: CaskitError, what: str) -> None:
    """An exception met while checking a hop: the system's fault flags a symptom, ours is infra."""
    e = m.resolve(e, stage="migration")
    _, kind = classify(e)
    if kind is Kind.ERROR:
        hop.infra.append(f"{what}: {e}")
    else:
        hop.flag(_symptom(e), f"{what}: {e}")


@contextlib.contextmanager
def explained_by(m: GuestMachine) -> Iterator[None]:
    """What goes wrong in this block is m's, explained by it (GuestMachine.resolve): a source
    QEMU that crashes while it streams (QEMU 7.2's h_confer under PR KVM) is QemuCrashed, a
    FAIL, not the QMP connection it took with it (ERROR). Each QMP step of a hop runs under the
    machine whose monitor it talks to, so the error is never laid at the other one's door."""
    try:
        yield
    except CaskitError as e:
        r = m.resolve(e, stage="migration")
        if r is e:
            raise
        raise r from e


def views(m: GuestMachine, timeout: float) -> dict:
    assert m.console and m.qmp
    g = observe.guest_view(m.console.run("ck-observe", timeout).output)
    h = observe.host_view(m.qmp.hmp("info pic"))
    return {"guest": g.mode, "host": h.mode, "platform_support": g.platform_support,
            "spurious": g.spurious, "irqchip": h.irqchip}


def migrate(src: GuestMachine, dst: GuestMachine, uri: str, *, incoming_uri: str | None = None,
            timeout: float = MIGRATE_TIMEOUT, on_active=None, max_bandwidth: int | None = None,
            incoming_started: bool = False) -> dict:
    """Run one migration to its end as QMP tells it; returns the final query-migrate.
    `incoming_started`: the caller already sent migrate-incoming (to learn a TCP port)."""
    assert src.qmp and dst.qmp
    with explained_by(src):
        if max_bandwidth:
            src.qmp.execute("migrate-set-parameters", **{"max-bandwidth": int(max_bandwidth)})
    if not incoming_started:
        with explained_by(dst):
            dst.qmp.execute("migrate-incoming", uri=incoming_uri or uri)
    deadline = time.monotonic() + timeout
    with explained_by(src):
        src.qmp.execute("migrate", uri=uri)
        while True:
            info = src.qmp.execute("query-migrate")
            status = info.get("status")
            if status == "active" and on_active is not None:
                on_active()
                on_active = None
            if status in ("completed", "failed", "cancelled"):
                return info
            if time.monotonic() > deadline:
                src.qmp.execute("migrate_cancel")
                raise MigrationStuck(f"migration still {status} after {timeout:.0f}s")
            time.sleep(0.05)  # QMP has no blocking wait for a status; MIGRATION events race the poll


def incoming_port(dst: GuestMachine) -> int:
    """The TCP port a destination listening on port 0 was given (query-migrate's socket-address)."""
    assert dst.qmp
    with explained_by(dst):
        addresses = dst.qmp.execute("query-migrate").get("socket-address") or []
    for a in addresses:
        if a.get("type") == "inet" and str(a.get("port", "0")) != "0":
            return int(a["port"])
    raise QemuHung(f"the destination on {dst.host.name} reports no listening TCP port for the migration")


def qmp_account(info: dict) -> dict:
    ram = info.get("ram") or {}
    return {"status": info.get("status"), "total_time_ms": info.get("total-time"),
            "downtime_ms": info.get("downtime"), "setup_time_ms": info.get("setup-time"),
            "transferred_bytes": ram.get("transferred"), "error": info.get("error-desc")}


def watch(m: GuestMachine, window: float) -> tuple[float, float]:
    """The liveness window: only watch. Returns (start, end) in host monotonic time."""
    start = time.monotonic()
    if m.console:
        m.console.note(f"liveness window of {window:.0f}s starts: watching only")
    deadline = start + window
    while time.monotonic() < deadline:
        if not m.alive():
            break
        time.sleep(min(0.1, max(0.0, deadline - time.monotonic())))  # the window is a duration, not a wait for a condition
    return start, time.monotonic()


def kernel_lines(m: GuestMachine, since: float) -> list[str]:
    """Kernel log lines seen since `since` on the heartbeat relay, plus the console's tail."""
    lines: list[str] = []
    if m.heartbeat:
        s = m.heartbeat.snapshot()
        lines += [t for when, t in s.kmsg if when >= since]
    if m.console:
        lines += m.console.tail(8000).splitlines()
    return lines


def health(hop: Hop, dst: GuestMachine, *, window: float, timeout: float, since: float,
           source_last: Callable[[], Beat | None] | None = None, probe_progress=None) -> None:
    """Steps 1-4 of the module doc on the destination `dst`; fills in the hop. `source_last`
    gives the guest's last beat before the hop (asked after the window, when the paused source's
    stream has been read to its end): the destination must carry on from it."""
    wall0 = time.time()
    w0, w1 = watch(dst, window)
    hop.window_s = round(w1 - w0, 3)
    hop.window_wall = [round(wall0, 3), round(wall0 + (w1 - w0), 3)]
    beats = dst.heartbeat.snapshot().beats if dst.heartbeat else []
    hop.liveness = heartbeat.liveness(beats, since, w1, source_last() if source_last else None)
    hop.destination_alive = dst.alive()
    if not hop.destination_alive:
        # A destination that ended explains its silence: its end is the one signal to judge.
        if not hop.infra and not any(x.startswith(("destination-", "qemu-")) for x in hop.symptoms):
            record_failure(hop, dst, QemuDied("the destination QEMU exited", None, ""), "after the hop")
    elif hop.liveness["beats"] == 0:
        hop.flag("no-heartbeat", f"no heartbeat within {window:.0f}s of the hop")
    else:
        cont = hop.liveness.get("continuity")
        if cont:
            hop.flag("heartbeat-restarted" if "restarted" in cont or "went back" in cont else "heartbeat-gap", cont)
        if hop.liveness["seq_gaps"]:
            hop.flag("heartbeat-gap", f"heartbeat sequence gaps {hop.liveness['seq_gaps'][:5]}")
        if hop.liveness["max_silence_after_first_s"] > STALL_S:
            hop.flag("heartbeat-stall", f"heartbeat stalled: {hop.liveness['max_silence_after_first_s']:.1f}s "
                                        f"without a beat after the guest resumed")
    if hop.destination_alive and {"no-heartbeat", "heartbeat-stall"} & set(hop.symptoms):
        # The guest stopped with its QEMU alive: a hang, with the same forensics as one at boot
        # (the 7.2 defect is told by the destination's DECR in `info registers`).
        hop.forensics = str(dst.save_forensics(f"hop {hop.name}: the guest stopped after the hop "
                                               f"({'; '.join(hop.problems)})"))
    if not hop.destination_alive and dst.console:
        dst.console.drain(DRAIN_S)  # its guest's last words are still in the socket: read them
    hop.kernel_log = guestlog.findings(kernel_lines(dst, since))
    for f in hop.kernel_log:
        hop.flag(f"kernel:{f['kind']}", f"guest kernel log: {f['line']}")
    if not hop.destination_alive or hop.liveness["beats"] == 0:
        return  # nobody to talk to
    try:
        assert dst.qmp
        hop.destination_status = dst.qmp.execute("query-status").get("status")
        hop.mode_after = views(dst, timeout)
        if probe_progress:
            hop.progress = probe_progress(dst)
        dmesg = dst.console.run("dmesg", timeout).output.splitlines() if dst.console else []
        for f in guestlog.findings(dmesg):
            if f not in hop.kernel_log:
                hop.kernel_log.append(f)
                hop.flag(f"kernel:{f['kind']}", f"guest kernel log (dmesg): {f['line']}")
    except CaskitError as e:
        record_failure(hop, dst, e, "the guest after the hop")
        return
    for side in ("guest", "host"):
        if hop.mode_after.get(side) != hop.mode_before.get(side):
            hop.flag("mode-changed", f"{side} view: mode {hop.mode_before.get(side)} before the hop, "
                                     f"{hop.mode_after.get(side)} after")
    for symptom, problem in hop.progress.get("problems", []):
        hop.flag(symptom, problem)


def judge(hop: Hop) -> None:
    # Infrastructure trouble wins: a guest on a killed QEMU cannot be judged.
    hop.verdict = "ERROR" if hop.infra else ("FAIL" if hop.problems else "PASS")


def error_lines(stderr: str) -> str | None:
    return qemu_exit.error_lines(stderr)
