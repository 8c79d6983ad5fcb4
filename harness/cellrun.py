"""Running one cell: lease a slot, launch the guest, observe, run workloads and migrations, read
the guest kernel's log, decide, record.

The only place where the pieces meet. It never decides a verdict itself (verdict.decide does);
every way a cell can go wrong arrives here as an exception of the one error tree
(errors.py), is resolved by the machine it happened on (machine.resolve: a timeout becomes a
hang or a silent firmware, a dead QEMU a crash or a kill), and is classified by
errors.classify, so FAIL (the system under test misbehaved) and ERROR (we could not judge) are
decided in one place.
"""

from __future__ import annotations

import contextlib
import re
import time
import traceback
from dataclasses import dataclass, field, replace
from pathlib import Path

from . import guestlog, model, observe, qemu_exit, reproduce, resume, workloads
from .cell import Cell, Expected, HostFacts, Observed, Stage, Verdict
from .cell_machines import CellMachines, Site, run_tag  # noqa: F401  (run_tag: the tag tests and cleanup look for)
from .errors import (CaskitError, GuestPanic, InfraError, KitError, Kind, PinRefused, QemuRefused, classify)
from .hosts import Host
from .kit import Kit
from .machine import GuestMachine
from .migration import hop, known_issues, plans
from .results import RunStore
from .records import CellRecord, MigrationResult, WorkloadResult
from .verdict import decide

# Panics that mean the kit cannot boot at all (a wrong init, no root): ours to fix, not the SUT's.
KIT_PANICS = re.compile(r"No working init found|Requested init \S+ failed|VFS: Unable to mount root")
# QEMU's words when the kit's kernel or initramfs is not something it can load: ours.
KIT_LOAD = re.compile(r"could not load (kernel|initial ram disk)|error loading \S+: The image is not ELF")
# QEMU's words for a refusal that happens when the guest asks for something at CAS.
CAS_REFUSAL = re.compile(r"interrupt mode|CAS|kernel_irqchip")


@dataclass(frozen=True)
class CellContext:
    cell: Cell
    facts: HostFacts
    host: Host
    kit: Kit | None
    store: RunStore
    run_id: str
    timeouts: dict[str, float]
    worker: str = "main"
    known_issues: list = field(default_factory=list)
    max_bandwidth: int | None = None
    peer: Site | None = None  # a cross plan's other member of the migration domain
    addresses: dict[str, str] = field(default_factory=dict)  # host -> address for migration streams
    kit_error: str | None = None  # the run's kit could not be built: every cell is ERROR
    pre_leased: bool = False  # the caller already holds a slot on `host` (a pool chose it by its free slot)


@dataclass
class Findings:
    """What the cell gathered besides the CAS outcome."""

    workloads: list[WorkloadResult] = field(default_factory=list)
    migration: MigrationResult | None = None


def _concrete(e: CaskitError, m: GuestMachine | None, stage: str) -> CaskitError:
    """The error as the machine explains it, with the kit's own panics set apart."""
    if m is not None:
        e = m.resolve(e, stage=stage)
    if isinstance(e, GuestPanic) and KIT_PANICS.search(e.tail):
        k = KitError(f"the guest kit cannot boot: {e.message}")
        k.stage, k.__cause__ = e.stage or stage, e
        return k
    if isinstance(e, QemuRefused) and KIT_LOAD.search(e.error_line):
        k = KitError(f"QEMU cannot load the guest kit: {e.error_line}")
        k.stage, k.__cause__ = e.stage or Stage.QEMU_START.value, e
        return k
    if isinstance(e, QemuRefused) and e.stage not in (Stage.QEMU_START.value,):
        e.stage = Stage.CAS.value if CAS_REFUSAL.search(e.error_line) else Stage.GUEST.value
    return e


def _record(o: Observed, e: CaskitError) -> None:
    stage, kind = classify(e)
    o.error_kind = type(e).__name__
    o.error = e.error_line if isinstance(e, QemuRefused) else (e.message if isinstance(e, GuestPanic) else str(e))
    o.stage = stage or Stage.GUEST.value
    o.infra = kind is Kind.ERROR
    o.exit_code = getattr(e, "exit_code", o.exit_code)
    excerpt = getattr(e, "tail", None) or getattr(e, "stderr", None)
    if excerpt:
        o.log_excerpt = excerpt[-2000:]
    o.forensics = getattr(e, "forensics", None) or o.forensics
    o.host_findings = list(getattr(e, "host_findings", None) or o.host_findings)


def _pinned_refusal(e: QemuRefused, cell: Cell, expected: Expected) -> CaskitError:
    """A refusal at start of options caskit composed (a migration domain's pin) is caskit's
    error, not the system's, unless the model predicted exactly this refusal."""
    if not cell.pinned or model.matches_error(expected, e.error_line):
        return e
    words = e.error_line.lower()
    named = [opt for opt in cell.pinned[1:] if opt.split("=")[0].removeprefix("cap-").lower() in words]
    which = ", ".join(named) if named else "-machine " + ",".join(cell.pinned)
    out = PinRefused(f"QEMU refused the options caskit pinned for the cell's migration domain ({which}): "
                     f"{e.error_line}")
    out.stage, out.__cause__ = Stage.QEMU_START.value, e
    return out


def _observe_guest(m: GuestMachine, ctx: CellContext, o: Observed) -> None:
    assert m.qmp is not None and m.console is not None
    configured = m.qmp.execute("qom-get", path="/machine", property="ic-mode")
    m.cont()
    m.wait_ready(ctx.timeouts["boot"])
    r = m.console.run("ck-observe", ctx.timeouts["command"])
    if not r.ok:
        raise observe.ObserveError(f"ck-observe exited {r.status}: {r.output[-500:]}")
    o.guest = observe.guest_view(r.output)
    o.host = observe.host_view(m.qmp.hmp("info pic"), str(configured))
    o.platform_support = o.guest.platform_support
    o.mode = o.guest.mode if o.guest.mode == o.host.mode else None
    # Read after CAS: QEMU warns when it activates the negotiated controller (a KVM fallback).
    o.qemu_warnings = qemu_exit.warning_lines(m.stderr_text())


def kernel_log(m: GuestMachine, timeout: float) -> tuple[list[dict], list[str]]:
    """The guest kernel's findings and warnings: its whole log plus whatever its heartbeat
    console relayed (kept even when the log buffer turned over). Where this console saw the boot,
    the log is the boot's lines as the console showed them and the rest from the guest
    (`ck-kmsg`); otherwise (a migrated guest, messages the console dropped) all of `dmesg`."""
    assert m.console is not None
    boot = m.console.boot_text
    rest = m.console.run("ck-kmsg", timeout) if boot is not None and "printk messages dropped" not in boot else None
    if rest is not None and rest.ok:
        lines = boot.replace("\r", "").splitlines() + rest.output.splitlines()
    else:  # an initramfs of the user's without ck-kmsg, or a console that missed some of the boot
        lines = m.console.run("dmesg", timeout).output.splitlines()
    if m.heartbeat is not None:
        lines += [text for _, text in m.heartbeat.snapshot().kmsg]
    return guestlog.findings(lines), guestlog.warnings(lines)


def _add_kernel(o: Observed, found: tuple[list[dict], list[str]]) -> None:
    o.kernel_findings = guestlog.unique(o.kernel_findings + found[0])
    o.kernel_warnings = guestlog.unique(o.kernel_warnings + found[1])


def _run_workloads(m: GuestMachine, ctx: CellContext, o: Observed, out: list[WorkloadResult]) -> bool:
    """Every workload of the cell in this one boot. Returns False when the guest was lost on
    the way (the rest are recorded as not run, and the cell goes no further)."""
    assert m.console is not None and m.qmp is not None
    mode = o.guest.mode if o.guest else None
    def irqchip_for(negotiated: str) -> str | None:
        # The model's answer for this cell with the guest asking for `negotiated`.
        c = replace(ctx.cell, axes=tuple((k, ("off" if negotiated == "xics" else "default") if k == "guest_xive" else v)
                                         for k, v in ctx.cell.axes))
        return model.predict(c, ctx.facts).irqchip

    g = workloads.GuestSession(ctx.cell, m.console, m.qmp, ctx.timeouts["command"], m.wait_ready,
                               ctx.timeouts["boot"], mode=mode, irqchip_for=irqchip_for,
                               # the log of a boot is gone after a reset: read at every one
                               before_reset=lambda: _add_kernel(o, kernel_log(m, ctx.timeouts["command"])))
    todo = workloads.ordered(ctx.cell.workloads)
    for i, w in enumerate(todo):
        try:
            out.append(workloads.execute(w, g))
        except CaskitError as e:
            e = _concrete(e, m, "workload")
            _, kind = classify(e)
            out.append(WorkloadResult(w.name, kind.value, f"{type(e).__name__}: {e}", excerpt=getattr(e, "tail", None)))
            out += [WorkloadResult(x.name, "ERROR", f"not run: {w.name} lost the guest") for x in todo[i + 1:]]
            return False
    return True


def _run_migration(machines: CellMachines, m: GuestMachine, ctx: CellContext,
                   mode: str) -> tuple[MigrationResult, GuestMachine]:
    """The cell's migration plan; returns its record and the machine the guest lives in after it."""
    cell = ctx.cell
    build = ctx.facts.build(str(cell.axis("qemu")))
    pc = plans.PlanContext(machines, ctx.timeouts["liveness"], ctx.timeouts["command"], mode, ctx.max_bandwidth,
                           ctx.peer, dict(ctx.addresses))
    rec = MigrationResult(cell.migration, pc.window, build=f"{build.name} {build.version}" if build else None,
                          peer={"host": ctx.peer.host.name, "qemu": ctx.peer.build.name,
                                "version": ctx.peer.build.version} if ctx.peer is not None else None)
    try:
        # The source's, explained by it: a QEMU that crashes as the load for the hops starts
        # (QEMU 7.2's h_confer under PR KVM, seen in CI) is QemuCrashed, a FAIL, not the console
        # it closed (ERROR). The hops explain their own steps (hop.explained_by).
        with hop.explained_by(m):
            plans.start_heartbeat(m, pc.timeout)
            plans.start_background_traffic(m, cell, pc.timeout)
        hops, final = plans.PLANS[cell.migration].run(pc, m)
    except CaskitError as e:
        e = _concrete(e, None, "migration")
        stage, kind = classify(e)
        rec.verdict, rec.reason = Verdict(kind.value), f"the migration could not be carried out: {type(e).__name__}: {e}"
        return rec, m
    rec.hops = [h.to_dict() for h in hops]
    facts = known_issues.CellFacts(str(cell.axis("accel")), cell.migration,
                                   "workload" if cell.workloads else "idle", int(cell.axis("smp")), mode)
    judged = known_issues.classify(ctx.known_issues, facts, rec.hops)
    rec.verdict, rec.known_issues = Verdict(judged["verdict"]), judged["known_issues"]
    rec.no_longer_reproduces = judged["no_longer_reproduces"]
    bad = [h for h in rec.hops if h["verdict"] != "PASS"]
    rec.reason = "; ".join(f"hop {h['name']}: {'; '.join(h['problems'] or h['infra'])}"
                              + (f" [known issue {h['known_issue']}]" if h.get("known_issue") else "")
                              + (f" [not explained by any known issue: {', '.join(h['unexplained'])}]"
                                 if h.get("unexplained") and not h.get("known_issue") else "")
                              for h in bad) or f"{len(hops)} hop(s) healthy"
    return rec, final


@contextlib.contextmanager
def lease_all(hosts: list[Host], timeout: float = 3600.0):
    """A slot on each host, taken in host-name order (a global order: no two cells can each
    hold what the other waits for), released in reverse."""
    by_name = {h.name: h for h in hosts}
    with contextlib.ExitStack() as leases:
        for name in sorted(by_name):
            leases.enter_context(by_name[name].lease(timeout))
        yield


def execute(ctx: CellContext, expected: Expected, log_dir: Path, found: Findings) -> Observed:
    o = Observed()
    cell, build = ctx.cell, ctx.facts.build(str(ctx.cell.axis("qemu")))
    assert build is not None and ctx.kit is not None
    # A peer on another host holds a slot there too, for the cell's whole life: its guest may
    # live there for a while. Slots are taken in host-name order, so two cells crossing between
    # the same hosts in opposite directions never each hold one and wait for the other.
    with lease_all(([] if ctx.pre_leased else [ctx.host]) + ([ctx.peer.host] if ctx.peer else [])):
        # The kit as each host sees it: sent once per host and content key (a no-op locally).
        kit = ctx.host.stage_kit(ctx.kit)
        if ctx.peer is not None:
            ctx = replace(ctx, peer=replace(ctx.peer, kit=ctx.peer.host.stage_kit(ctx.peer.kit)))
        with CellMachines(ctx.host, cell, build, kit, ctx.run_id, log_dir, ctx.timeouts["shutdown"],
                          heartbeat=cell.migration != "none",
                          machine_options=ctx.facts.guest_machine_options,
                          guest_append=ctx.facts.guest_append) as machines:
            m = machines.machine()
            current: GuestMachine | None = m  # where the guest lives; errors are resolved there
            try:
                try:
                    m.launch()
                except QemuRefused as e:
                    raise _pinned_refusal(e, cell, expected)
                _observe_guest(m, ctx, o)
                alive = True
                if cell.workloads:
                    alive = _run_workloads(m, ctx, o, found.workloads)
                if alive and cell.migration != "none" and o.guest is not None and o.guest.mode:
                    # The log of the boot and the workloads, read while the guest surely answers:
                    # whatever the hops come to, it is judged (an XFAIL hop must not hide an Oops).
                    _add_kernel(o, kernel_log(m, ctx.timeouts["command"]))
                    current = None  # a plan resolves its own machines' troubles
                    found.migration, current = _run_migration(machines, m, ctx, o.guest.mode)
                    # From the first hop on, the kernel's findings are the hops' evidence (their
                    # known issues may explain them, never anything else): after a hop that did
                    # not pass, the guest may not answer, and its hop already judged them.
                    alive = found.migration.verdict == Verdict.PASS and current.alive()
                if alive and current is not None:
                    _add_kernel(o, kernel_log(current, ctx.timeouts["command"]))
            except CaskitError as e:
                _record(o, _concrete(e, current, Stage.GUEST.value))
            o.exit_code = o.exit_code if o.exit_code is not None else m.shutdown()
    return o


def _unjudgeable(cell: Cell, ctx: CellContext) -> Observed | None:
    """Why the cell cannot run at all on this host: host down, a named build that cannot run,
    no kit. Never SKIP: the host or caskit failed, and the run says so (ERROR)."""
    if ctx.facts.error:
        what = "cannot run cells" if ctx.facts.kvm_mode and ctx.facts.arch else "unreachable"
        return Observed(error=f"host {cell.host} {what}: {ctx.facts.error}", infra=True, error_kind="host-unreachable")
    if ctx.kit_error or ctx.kit is None:
        return Observed(error=f"the guest kit could not be built: {ctx.kit_error}", infra=True)
    return None


def run_cell(ctx: CellContext) -> dict:
    """Run one cell to a result record (also written to the store). Never raises for a cell."""
    cell = ctx.cell
    started = time.time()
    t0 = time.monotonic()
    log_dir = ctx.store.cell_dir(cell.id)
    log_dir.mkdir(parents=True, exist_ok=True)
    found = Findings()
    observed = _unjudgeable(cell, ctx)
    if observed is not None:
        # Nothing can be predicted or observed: ERROR with the reason, never SKIP.
        expected = Expected(None, "cell-runnable", "the host and build probes and the kit at the start of the run")
    elif (expected := model.predict(cell, ctx.facts)).blocked:
        observed = Observed(error=expected.blocked, stage=Stage.QEMU_START.value, infra=True)
    elif expected.skip:
        observed = Observed()
    else:
        try:
            observed = execute(ctx, expected, log_dir, found)
        except CaskitError as e:  # leasing, staging the kit: the host's trouble
            observed = Observed()
            _record(observed, e)
        except Exception as e:  # a harness bug must not take the run down; it is an ERROR with its trace
            (log_dir / "harness-error.txt").write_text(traceback.format_exc())
            observed = Observed(error=f"harness error: {e!r} (see harness-error.txt)", infra=True)
    build = ctx.facts.build(str(cell.axis("qemu")))
    known_boot = None
    if observed.error and not observed.infra and expected.error is None:
        k, _ = known_issues.explain_boot(ctx.known_issues, accel=str(cell.axis("accel")), smp=int(cell.axis("smp")),
                                                kvm_mode=ctx.facts.kvm_mode, build_version=build.version if build else None,
                                                observed=observed.to_dict(), l0_patches=ctx.facts.l0_patches)
        if k is not None:
            observed.known_issue = known_boot = k.id
    verdict, reason = decide(expected, observed, found.workloads, found.migration, asked=cell.workloads,
                             plan=cell.migration, known_boot=known_boot)
    logs = {name: str(p.relative_to(ctx.store.out)) for name, p in (
        ("console", log_dir / "console.log"), ("qemu_stderr", log_dir / "qemu-stderr.log"),
        ("qmp", log_dir / "qmp.jsonl"), ("argv", log_dir / "qemu-argv.txt"),
        ("forensics", log_dir / "forensics.txt"),
        ("harness_error", log_dir / "harness-error.txt")) if p.exists()}
    record = CellRecord(cell.to_dict(), expected.to_dict(), observed.to_dict(), verdict, reason,
                        time.monotonic() - t0, started, build.version if build else None,
                        ctx.kit.key if ctx.kit else None, ctx.worker, ctx.run_id, logs, found.workloads,
                        found.migration).to_dict()
    record["provenance"] = resume.provenance(
        cell, ctx.facts, ctx.peer.build.sha256 if ctx.peer is not None else None, ctx.known_issues,
        list(found.migration.known_issues if found.migration else ()) + ([observed.known_issue] if observed.known_issue else []))
    reproduce.write_for(ctx, record)  # a standalone reproducer beside the logs, named in record["logs"]
    ctx.store.write_cell(record)
    return record


__all__ = ["CellContext", "run_cell", "execute", "kernel_log", "lease_all", "run_tag", "InfraError"]
