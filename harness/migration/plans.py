"""Migration plans (the `migration` axis): sequences of hops, each judged by migrate.health()."""

from __future__ import annotations

import shlex
import time
from dataclasses import dataclass, field
from typing import Callable

from .. import workloads
from . import hop as migrate
from ..cell import Cell
from ..errors import InfraError
from ..cell_machines import CellMachines, Site
from ..machine import GuestMachine
from ..workloads import blk, ipi, net
from ..workloads.devices import nic_up

# The interrupt controllers a machine of each ic-mode has (and migrates). pseries machines older
# than the ic-mode property ("legacy") have XICS only.
CONTROLLERS = {"xics": {"xics"}, "xive": {"xive"}, "dual": {"xics", "xive"}, "legacy": {"xics"}}


def ic_mismatches(source_ic_mode: str, guest_mode: str) -> list[tuple[str, bool]]:
    """Destination ic-modes other than the source's for a guest that negotiated `guest_mode`, each
    with whether QEMU must refuse the stream (measured on 7.2.22 and 10.0.2, cas-rules.md
    section 7):

    - a destination without the guest's controller (a XIVE guest into ic-mode=xics), or without
      a controller whose state the source sends (dual into xics or xive): refused, "Unknown
      savevm section";
    - a destination with every controller the source has, and more (xics or xive into dual):
      nothing in the stream can tell, so QEMU takes it; the guest must then live on there (a XIVE
      guest does; a XICS guest's destination aborts, a known defect).

    Never the source's own ic-mode: that is a plain migration, not a mismatch."""
    have = CONTROLLERS.get(source_ic_mode, {"xics", "xive"})
    refused = [(m, True) for m in ("xics", "xive", "dual")
               if CONTROLLERS[m] != have and (guest_mode not in CONTROLLERS[m] or not have <= CONTROLLERS[m])]
    accepted = [(m, False) for m in ("xics", "xive", "dual")
                if guest_mode in CONTROLLERS[m] and have < CONTROLLERS[m]]
    return refused + accepted


@dataclass
class PlanContext:
    machines: CellMachines
    window: float
    timeout: float
    mode: str  # negotiated before the first hop
    max_bandwidth: int | None = None  # bytes/s; None: QEMU's default
    peer: Site | None = None  # where a cross plan's middle hop runs
    # host name -> the address it listens on for migration streams from other hosts
    addresses: dict[str, str] = field(default_factory=dict)


def start_heartbeat(m: GuestMachine, timeout: float) -> None:
    assert m.console and m.heartbeat
    r = m.console.run("ck-heartbeat", timeout)
    if not r.ok:
        raise InfraError(f"the guest could not start its heartbeat: {r.output.strip()}")
    deadline = time.monotonic() + 30  # generous: a loaded host runs a TCG guest slowly
    while not m.heartbeat.snapshot().beats:
        if time.monotonic() > deadline:
            raise InfraError("the guest's heartbeat never arrived on its second console")
        time.sleep(0.05)


def start_background_traffic(m: GuestMachine, cell: Cell, timeout: float) -> None:
    """Interrupts in flight during the hop: a ping stream and an IPI ping-pong in the background."""
    assert m.console
    names = cell.workloads
    if "virtio-net" in names:
        g = _session(m, cell, timeout)
        nic = nic_up(g, "nic")
        m.console.run(f"(ping -I {nic.iface} -i 0.05 -c 100000 {nic.spec.gateway} > /tmp/ck-bg-ping.log 2>&1 &)", timeout)
    if "ipi" in names:
        m.console.run("(ck-ipi 1000000 0 1 > /tmp/ck-bg-ipi.log 2>&1 &)", timeout)
    if "virtio-blk" in names:
        g = _session(m, cell, timeout)
        dev, _ = blk.find_disk(g)
        blk.write(g, dev)


def _session(m: GuestMachine, cell: Cell, timeout: float) -> workloads.GuestSession:
    """The workloads' view of the guest wherever it now lives (modules were loaded before the hop)."""
    assert m.console and m.qmp
    return workloads.GuestSession(cell, m.console, m.qmp, timeout, m.console.wait_ready, timeout, modules_loaded=True)


def progress_probe(cell: Cell, timeout: float) -> Callable[[GuestMachine], dict]:
    """After a hop: the workloads still make progress and lose nothing."""

    def probe(m: GuestMachine) -> dict:
        g = _session(m, cell, timeout)
        names = cell.workloads
        out: dict = {"problems": []}
        if g.smp >= 2:
            try:
                out["ipi"] = ipi.run(g, rounds=50)
            except workloads.WorkloadFailed as e:
                out["problems"].append(f"IPIs after the hop: {e.reason}")
        if "virtio-net" in names:
            try:
                out["net"] = net.traffic(g, nic_up(g, "nic"), 10)
            except workloads.WorkloadFailed as e:
                out["problems"].append(f"network after the hop: {e.reason}")
            log = m.console.run("tail -n 1 /tmp/ck-bg-ping.log", timeout).output if m.console else ""
            out["background_ping_last"] = log.strip()
        if "virtio-blk" in names:
            try:
                dev, _ = blk.find_disk(g)
                out["blk"] = blk.verify(g, dev, timeout)  # the pattern written before the first hop
            except workloads.WorkloadFailed as e:
                out["problems"].append(f"disk after the hop: {e.reason}")
        return out

    return probe


def _hop(pc: PlanContext, src: GuestMachine, name: str, *, axes: dict | None = None,
         pinned: tuple[str, ...] | None = None, site: Site | None = None) -> tuple[migrate.Hop, GuestMachine]:
    """One live hop to a new destination: over a unix socket on the same host, over TCP to
    another host (the destination picks a free port; QMP tells which). The caller owns both."""
    t_setup = time.monotonic()
    dst = pc.machines.machine(name, axes=axes, incoming=True, pinned=pinned, site=site)
    dst.launch()
    src_host = src.host.name
    across = dst.host.name != src_host
    source = "A" if src.files.log_dir == pc.machines.log_dir else src.files.log_dir.name
    if across:
        addr = pc.addresses.get(dst.host.name)
        if not addr:
            raise InfraError(f"host {dst.host.name}: no migration address to listen on")
        assert dst.qmp
        dst.qmp.execute("migrate-incoming", uri=f"tcp:{addr}:0")
        port = migrate.incoming_port(dst)
        uri = f"tcp:{addr}:{port}"
    else:
        uri = f"unix:{dst.files.sock_dir}/migration.sock"
    hop = migrate.Hop(name, source, name, uri)
    hop.source_host, hop.destination_host = src_host, dst.host.name
    hop.source_build, hop.destination_build = src.build, dst.build
    hop.setup_s = round(time.monotonic() - t_setup, 3)
    hop.mode_before = migrate.views(src, pc.timeout)
    hop.t_migrate = time.monotonic()
    info = migrate.migrate(src, dst, uri, max_bandwidth=pc.max_bandwidth, incoming_started=across)
    hop.qmp = migrate.qmp_account(info)
    hop.source_alive = src.alive()
    return hop, dst


def _resume_and_check(pc: PlanContext, hop: migrate.Hop, dst: GuestMachine, src: GuestMachine | None = None) -> None:
    assert dst.qmp
    if hop.qmp.get("status") != "completed":
        code = dst.proc.wait(2.0) if dst.proc else None
        if code is not None and code < 0:
            # The destination was killed (or crashed on a signal): the host failed, not the guest.
            hop.infra.append(f"destination QEMU died (signal {-code}) during the migration")
            hop.destination_alive = False
            hop.qmp["destination_exit"] = code
        else:
            # The source often says only "failed"; the destination says why it refused the stream.
            if dst.proc:
                dst.proc.wait(5.0)
            hop.qmp["destination_error"] = migrate.error_lines(dst.stderr_text())
            why = hop.qmp.get("error") or hop.qmp["destination_error"] or "no reason given"
            if hop.qmp.get("error") and hop.qmp["destination_error"]:
                why += f" (destination: {hop.qmp['destination_error']})"
            hop.problems.append(f"migration {hop.qmp.get('status')}: {why}")
            hop.symptoms.append("migration-failed")
        hop.source_alive = src.alive() if src is not None else None
        if src is not None and not hop.source_alive:
            hop.problems.append("the source QEMU died when the migration failed")
        migrate.judge(hop)
        return
    try:
        dst.qmp.execute("cont")
    except Exception as e:  # the destination may already be gone: health() will say so
        hop.problems.append(f"cont on the destination failed: {e}")
    since = time.monotonic()
    hop.harness_s = round(since - hop.t_migrate, 3) if hop.t_migrate else None
    migrate.health(hop, dst, window=pc.window, timeout=pc.timeout, since=since,
                   probe_progress=progress_probe(pc.machines.cell, pc.timeout))
    migrate.judge(hop)


def _source_lives_on(pc: PlanContext, hop: migrate.Hop, src: GuestMachine) -> None:
    """A refused migration must leave the guest running where it was: the same health check as
    after a hop, on the source. If it did not survive, that is a failure of its own, which no
    known issue about the refusal covers (symptom source-lost)."""
    check = migrate.Hop(f"{hop.name}-source", hop.source, hop.source, hop.uri)
    check.mode_before = hop.mode_before
    migrate.health(check, src, window=pc.window, timeout=pc.timeout, since=time.monotonic(),
                   probe_progress=progress_probe(pc.machines.cell, pc.timeout))
    migrate.judge(check)
    hop.source_after = {"verdict": check.verdict, "problems": check.problems, "liveness": check.liveness,
                        "mode": check.mode_after}
    if check.verdict != "PASS":
        hop.problems.append("the source guest did not survive the refused migration: " + "; ".join(check.problems))
        hop.symptoms.append("source-lost")
        migrate.judge(hop)


def roundtrip(pc: PlanContext, a: GuestMachine) -> tuple[list[migrate.Hop], GuestMachine]:
    """A -> B -> A'. Returns the hops and the machine the guest lives in at the end."""
    return _there_and_back(pc, a, None)


def cross(pc: PlanContext, a: GuestMachine) -> tuple[list[migrate.Hop], GuestMachine]:
    """A -> B on the peer (another host or QEMU build of the domain) -> a fresh A' at home."""
    if pc.peer is None:
        raise InfraError("a cross plan without a peer in its migration domain")
    return _there_and_back(pc, a, pc.peer)


def _there_and_back(pc: PlanContext, a: GuestMachine, away: Site | None) -> tuple[list[migrate.Hop], GuestMachine]:
    hops = []
    current = a
    for name, site in (("B", away), ("A2", None)):
        hop, dst = _hop(pc, current, name, site=site)
        hops.append(hop)
        _resume_and_check(pc, hop, dst, current)
        if hop.qmp.get("status") != "completed":
            if not hop.infra:
                _source_lives_on(pc, hop, current)
            break  # the guest is still on the source; the launcher stops every machine at the end
        current.shutdown()  # the source's job ends with a completed hop
        current = dst
        if hop.verdict != "PASS":
            break
    return hops, current


def to_file(pc: PlanContext, a: GuestMachine) -> tuple[list[migrate.Hop], GuestMachine]:
    """Save to a file with exec:, stop the source, restore into a new QEMU from the file."""
    path = pc.machines.scratch / "state.bin"
    uri_out = "exec:cat > " + shlex.quote(str(path))
    hop = migrate.Hop("file", "A", "restore", uri_out)
    hop.mode_before = migrate.views(a, pc.timeout)
    hop.t_migrate = time.monotonic()
    assert a.qmp
    a.qmp.execute("migrate", uri=uri_out)
    deadline = time.monotonic() + migrate.MIGRATE_TIMEOUT
    while (info := a.qmp.execute("query-migrate")).get("status") not in ("completed", "failed", "cancelled"):
        if time.monotonic() > deadline:
            raise InfraError("migration to file did not end")
        time.sleep(0.05)
    hop.qmp = migrate.qmp_account(info)
    hop.qmp["file_bytes"] = path.stat().st_size if path.exists() else None
    hop.source_alive = a.alive()
    a.shutdown()
    dst = pc.machines.machine("restore", incoming=True)
    hop.source_build, hop.destination_build = a.build, dst.build
    hop.source_host = hop.destination_host = a.host.name
    dst.launch()
    assert dst.qmp
    dst.qmp.execute("migrate-incoming", uri="exec:cat " + shlex.quote(str(path)))
    while dst.qmp.execute("query-status").get("status") == "inmigrate":
        if time.monotonic() > deadline or not dst.alive():
            break
        time.sleep(0.05)
    _resume_and_check(pc, hop, dst)
    return [hop], dst


def mismatch_cases(pc: PlanContext) -> list[tuple[str, dict]]:
    """Destinations that cannot take this guest's state: another interrupt controller, and
    (where the build has one) an older machine version."""
    b = pc.machines.build
    configured = str(pc.machines.cell.axis("ic_mode"))
    source = b.default_ic_mode if configured == "default" else configured
    cases = [(f"ic_mode-{m}", {"axes": {"ic_mode": m}, "refused": refused})
             for m, refused in ic_mismatches(source or "dual", pc.mode)]
    mine = pc.machines.cell.pinned[0] if pc.machines.cell.pinned else b.machine
    older = [m for m in b.machines if mine in b.machines and b.machines.index(m) < b.machines.index(mine)]
    if older:
        rest = pc.machines.cell.pinned[1:] if pc.machines.cell.pinned else ()
        cases.append((older[-1], {"pinned": (older[-1], *rest), "refused": True}))
    return cases


def mismatch(pc: PlanContext, a: GuestMachine) -> tuple[list[migrate.Hop], GuestMachine]:
    """Into destinations configured unlike the source. Where the model says QEMU must refuse the
    stream, the migration must fail and the source must keep running with working interrupts
    (checked after every attempt); a refused mismatch that "succeeds" is FAIL, judged on the
    destination too. Where QEMU cannot tell (a superset of controllers), the hop is judged like
    any other: the guest must live on there. Once the guest has moved, the remaining cases are
    skipped."""
    hops: list[migrate.Hop] = []
    for label, case in mismatch_cases(pc):
        override = {k: v for k, v in case.items() if k != "refused"}
        hop, dst = _hop(pc, a, f"B-{label}", axes=override.get("axes"), pinned=override.get("pinned"))
        hop.qmp["destination"] = override
        hop.qmp["expected"] = "refused" if case["refused"] else "accepted"
        hops.append(hop)
        if hop.qmp.get("status") == "completed":
            if case["refused"]:  # QEMU let through what it must refuse
                hop.problems.append(f"the migration into {override} completed; it should have been refused")
                hop.symptoms.append("mismatch-accepted")
            _resume_and_check(pc, hop, dst, a)  # judge the guest where it now is
            if case["refused"] and hop.verdict != "ERROR":
                hop.verdict = "FAIL"
            a.shutdown()
            return hops, dst
        # Refused, as it should be: record both sides' words, then the source must live on.
        if dst.proc:
            dst.proc.wait(5.0)
        hop.qmp["destination_error"] = migrate.error_lines(dst.stderr_text())
        hop.qmp["destination_exit"] = dst.proc.poll() if dst.proc else None
        dst.shutdown()
        migrate.health(hop, a, window=pc.window, timeout=pc.timeout, since=time.monotonic(),
                       probe_progress=progress_probe(pc.machines.cell, pc.timeout))
        hop.source_alive = a.alive()
        hop.destination_alive = False
        migrate.judge(hop)
        if hop.verdict != "PASS":
            break
    return hops, a


PLANS = {"roundtrip": roundtrip, "file": to_file, "mismatch": mismatch, "cross-build": cross, "cross-host": cross}
