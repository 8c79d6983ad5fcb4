"""Migration plans (the `migration` axis): sequences of hops, each judged by migrate.health()."""

from __future__ import annotations

import shlex
import time
from dataclasses import dataclass, field
from typing import Callable

from .. import workloads
from . import hop as migrate
from ..cell import Cell
from ..errors import CaskitError, HostError, InfraError, Kind, NoPeer, PinRefused, QemuDied, QemuRefused, WorkloadFailed, classify
from ..heartbeat import Beat
from ..model import ic_mismatches
from ..cell_machines import CellMachines, Site
from ..machine import GuestMachine

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
        if m.proc is not None and m.proc.poll() is not None:  # for the caller's machine to explain
            raise QemuDied("QEMU exited while the guest started its heartbeat", m.proc.poll(), m.stderr_text())
        if time.monotonic() > deadline:
            raise InfraError("the guest's heartbeat never arrived on its second console")
        time.sleep(0.05)


def _hop_workloads(cell: Cell) -> list[workloads.Workload]:
    return [w for w in workloads.REGISTRY.values() if w.name in cell.workloads or w.checked_after_every_hop]


def start_background_traffic(m: GuestMachine, cell: Cell, timeout: float) -> None:
    """Interrupts in flight during the hops: what each of the cell's workloads keeps running."""
    g = _session(m, cell, timeout)
    for w in workloads.ordered(cell.workloads):
        if w.during_hops is not None:
            w.during_hops(g)


def _session(m: GuestMachine, cell: Cell, timeout: float) -> workloads.GuestSession:
    """The workloads' view of the guest wherever it now lives (modules were loaded before the hop)."""
    assert m.console and m.qmp
    return workloads.GuestSession(cell, m.console, m.qmp, timeout, m.console.wait_ready, timeout, modules_loaded=True)


def progress_probe(cell: Cell, timeout: float) -> Callable[[GuestMachine], dict]:
    """After a hop: the workloads still make progress and lose nothing, as each of them says
    (Workload.after_hop). Each problem comes with the symptom that names what was seen
    (ipi-stopped, pings-lost, disk-read-stuck, ...)."""

    def probe(m: GuestMachine) -> dict:
        g = _session(m, cell, timeout)
        out: dict = {"problems": []}
        for w in _hop_workloads(cell):
            if w.after_hop is None:
                continue
            try:
                out[w.name] = w.after_hop(g)
            except WorkloadFailed as e:
                out["problems"].append((e.symptom, f"{w.name} after the hop: {e.reason}"))
        return out

    return probe


def _hop(pc: PlanContext, src: GuestMachine, name: str, *, axes: dict | None = None,
         pinned: tuple[str, ...] | None = None, site: Site | None = None) -> tuple[migrate.Hop, GuestMachine]:
    """One live hop to a new destination: over a unix socket on the same host, over TCP to
    another host (the destination picks a free port; QMP tells which). The caller owns both."""
    t_setup = time.monotonic()
    dst = pc.machines.machine(name, axes=axes, incoming=True, pinned=pinned, site=site)
    try:
        dst.launch()
    except QemuRefused as e:
        # Every option of a destination is caskit's own composition (a mismatch, a domain pin).
        raise PinRefused(f"QEMU refused to start destination {name} that caskit composed "
                         f"({dst.build}; {' '.join(dst.argv[dst.argv.index('-machine') + 1:][:1])}): {e}") from e
    src_host = src.host.name
    across = dst.host.name != src_host
    source = "A" if src.files.log_dir == pc.machines.log_dir else src.files.log_dir.name
    if across:
        addr = pc.addresses.get(dst.host.name)
        if not addr:
            raise HostError(f"host {dst.host.name}: no migration address to listen on")
        assert dst.qmp
        with migrate.explained_by(dst):
            dst.qmp.execute("migrate-incoming", uri=f"tcp:{addr}:0")
        port = migrate.incoming_port(dst)
        uri = f"tcp:{addr}:{port}"
    else:
        uri = f"unix:{dst.files.sock('migration.sock')}"
    hop = migrate.Hop(name, source, name, uri)
    hop.source_host, hop.destination_host = src_host, dst.host.name
    hop.source_build, hop.destination_build = src.build, dst.build
    hop.setup_s = round(time.monotonic() - t_setup, 3)
    hop.mode_before = _source_views(src, pc.timeout)
    hop.t_migrate = time.monotonic()
    info = migrate.migrate(src, dst, uri, max_bandwidth=pc.max_bandwidth, incoming_started=across)
    hop.qmp = migrate.qmp_account(info)
    hop.source_alive = src.alive()
    return hop, dst


def _source_views(src: GuestMachine, timeout: float) -> dict:
    """The guest's and QEMU's view before a hop: what goes wrong here is the source's."""
    with migrate.explained_by(src):
        return migrate.views(src, timeout)


def _destination_outcome(hop: migrate.Hop, dst: GuestMachine) -> CaskitError | None:
    """What the destination of a failed migration did: refused the stream (QemuRefused: exit 1
    and its own error line), crashed, was killed, or None while it still waits. Its words are
    recorded either way: the source often says only "failed"."""
    if dst.proc:
        dst.proc.wait(5.0)  # a refusing destination exits at once; one that waits on is the answer too
    hop.qmp["destination_error"] = migrate.error_lines(dst.stderr_text())
    hop.qmp["destination_exit"] = dst.proc.poll() if dst.proc else None
    if dst.alive():
        return None
    hop.destination_alive = False
    return dst.resolve(QemuDied("the destination QEMU exited", None, ""), stage="migration")


def _why(hop: migrate.Hop) -> str:
    why = hop.qmp.get("error") or hop.qmp.get("destination_error") or "no reason given"
    if hop.qmp.get("error") and hop.qmp.get("destination_error"):
        why += f" (destination: {hop.qmp['destination_error']})"
    return f"migration {hop.qmp.get('status')}: {why}"


def _failed_migration(hop: migrate.Hop, dst: GuestMachine, src: GuestMachine | None) -> None:
    """A migration that did not complete: judged by the destination's own end, then the source."""
    out = _destination_outcome(hop, dst)
    if out is None:
        hop.flag("migration-failed", _why(hop) + "; the destination still waits for a stream")
    elif classify(out)[1] is Kind.ERROR:
        hop.infra.append(f"the destination: {out}")
    elif isinstance(out, QemuRefused):
        hop.flag("migration-failed", _why(hop))
    else:
        hop.flag("destination-crashed", f"{_why(hop)}; the destination {out}")
    if src is not None:
        hop.source_alive = src.alive()
        if not hop.source_alive:
            gone = src.resolve(QemuDied("the source QEMU exited", None, ""), stage="migration")
            if classify(gone)[1] is Kind.ERROR:
                hop.infra.append(f"the source: {gone}")
            else:
                hop.flag("source-lost", f"the source QEMU ended when the migration failed: {gone}")


def _resume_and_check(pc: PlanContext, hop: migrate.Hop, dst: GuestMachine, src: GuestMachine | None = None,
                      source_last: Beat | None = None) -> None:
    assert dst.qmp
    if hop.qmp.get("status") != "completed":
        _failed_migration(hop, dst, src)
        migrate.judge(hop)
        return
    try:
        dst.qmp.execute("cont")
    except CaskitError as e:  # the destination may be gone already; health() says how
        migrate.record_failure(hop, dst, e, "cont on the destination")
    since = time.monotonic()
    hop.harness_s = round(since - hop.t_migrate, 3) if hop.t_migrate else None
    # The source is paused: its last beat is final, read after the window (its reader has
    # drained by then) unless the caller kept it already.
    last = (lambda: source_last) if source_last is not None else (src.last_beat if src is not None else None)
    migrate.health(hop, dst, window=pc.window, timeout=pc.timeout, since=since, source_last=last,
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
                        "mode": check.mode_after, "progress": check.progress, "kernel_log": check.kernel_log}
    hop.infra += check.infra
    if check.problems:
        hop.flag("source-lost", "the source guest did not survive the refused migration: " + "; ".join(check.problems))
    migrate.judge(hop)


def roundtrip(pc: PlanContext, a: GuestMachine) -> tuple[list[migrate.Hop], GuestMachine]:
    """A -> B -> A'. Returns the hops and the machine the guest lives in at the end."""
    return _there_and_back(pc, a, None)


def cross(pc: PlanContext, a: GuestMachine) -> tuple[list[migrate.Hop], GuestMachine]:
    """A -> B on the peer (another host or QEMU build of the domain) -> a fresh A' at home."""
    if pc.peer is None:
        raise NoPeer("a cross plan without a peer in its migration domain")
    return _there_and_back(pc, a, pc.peer)


def _there_and_back(pc: PlanContext, a: GuestMachine, away: Site | None) -> tuple[list[migrate.Hop], GuestMachine]:
    hops = []
    current = a
    for name, site in (("B", away), ("A2", None)):
        hop, dst = _hop(pc, current, name, site=site)
        hops.append(hop)
        _resume_and_check(pc, hop, dst, current)
        if hop.qmp.get("status") != "completed":
            if not hop.infra and current.alive():
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
    hop.mode_before = _source_views(a, pc.timeout)
    hop.t_migrate = time.monotonic()
    assert a.qmp
    deadline = time.monotonic() + migrate.MIGRATE_TIMEOUT
    with migrate.explained_by(a):
        a.qmp.execute("migrate", uri=uri_out)
        while (info := a.qmp.execute("query-migrate")).get("status") not in ("completed", "failed", "cancelled"):
            if time.monotonic() > deadline:
                raise migrate.MigrationStuck("migration to file did not end")
            time.sleep(0.05)
    hop.qmp = migrate.qmp_account(info)
    hop.qmp["file_bytes"] = a.host.file_size(path)  # written by the source's QEMU, on its host
    hop.source_alive = a.alive()
    a.shutdown()
    source_last = a.last_beat()  # read to the end of its stream now that the source has stopped
    dst = pc.machines.machine("restore", incoming=True)
    hop.source_build, hop.destination_build = a.build, dst.build
    hop.source_host = hop.destination_host = a.host.name
    dst.launch()
    assert dst.qmp
    with migrate.explained_by(dst):
        dst.qmp.execute("migrate-incoming", uri="exec:cat " + shlex.quote(str(path)))
        while dst.qmp.execute("query-status").get("status") == "inmigrate":
            if time.monotonic() > deadline or not dst.alive():
                break
            time.sleep(0.05)
    _resume_and_check(pc, hop, dst, source_last=source_last)
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
    """Into destinations configured unlike the source, each hop judged against the model's
    prediction (`ic_mismatches`, `mismatch_cases`):

    - predicted refused: the migration must fail *because the destination refused the stream*
      (it exits with an error line of its own); a destination that crashes, hangs or is killed
      did not refuse anything. Then the source must keep running with working interrupts.
      A refused stream that "completes" is FAIL, and the guest is judged where it went.
    - predicted accepted: the hop is judged like any other; the guest must live on there, and a
      refusal is FAIL (the model says QEMU takes this stream).

    Once the guest has moved, the remaining cases are skipped."""
    hops: list[migrate.Hop] = []
    for label, case in mismatch_cases(pc):
        override = {k: v for k, v in case.items() if k != "refused"}
        hop, dst = _hop(pc, a, f"B-{label}", axes=override.get("axes"), pinned=override.get("pinned"))
        hop.qmp["destination"] = override
        hop.expected = hop.qmp["expected"] = "refused" if case["refused"] else "accepted"
        hops.append(hop)
        if hop.qmp.get("status") == "completed":
            if case["refused"]:  # QEMU let through what it must refuse
                hop.flag("mismatch-accepted", f"the migration into {override} completed; it should have been refused")
            _resume_and_check(pc, hop, dst, a)  # judge the guest where it now is
            a.shutdown()
            return hops, dst
        out = _destination_outcome(hop, dst)
        if out is not None and classify(out)[1] is Kind.ERROR:
            hop.infra.append(f"the destination: {out}")
        elif not case["refused"]:
            hop.flag("migration-failed", f"the model predicts QEMU takes this stream, but {_why(hop)}")
        elif isinstance(out, QemuRefused):
            hop.refusal = out.error_line  # refused, as it should be, in the destination's own words
        elif out is None:
            hop.flag("refusal-silent", f"{_why(hop)}; the destination neither took the stream nor refused it "
                                       "(it still runs, with no error of its own)")
        else:
            hop.flag("destination-crashed", f"{_why(hop)}; the destination did not refuse the stream, it {out}")
        dst.shutdown()
        if not hop.infra:
            _source_lives_on(pc, hop, a)
        hop.source_alive = a.alive()
        hop.destination_alive = False
        migrate.judge(hop)
        if hop.verdict != "PASS":
            break
    return hops, a


@dataclass(frozen=True)
class Plan:
    """A migration plan as matrices name it: what it does, in one line, and how it runs."""

    name: str
    summary: str
    run: Callable[[PlanContext, GuestMachine], tuple[list[migrate.Hop], GuestMachine]] | None
    needs_domain: bool = False  # its middle hop runs elsewhere in a migration domain (`domain:`)


# The one list of plans: matrix and known-issue files are checked against it.
PLANS: dict[str, Plan] = {p.name: p for p in (
    Plan("none", "no migration", None),
    Plan("roundtrip", "A -> B -> fresh A', judged by the guest after each hop", roundtrip),
    Plan("file", "to a file (exec:), source stopped, restored into a new QEMU", to_file),
    Plan("mismatch", "into a destination that cannot take the state; must fail, source must live on", mismatch),
    Plan("cross-build", "A -> B on another QEMU build of the domain, same host -> fresh A' (needs `domain:`)", cross,
         needs_domain=True),
    Plan("cross-host", "A -> B on another host of the domain, over TCP -> fresh A' (needs `domain:`)", cross,
         needs_domain=True),
)}
