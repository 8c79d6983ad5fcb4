"""Running one cell: lease a slot, launch the guest, observe, decide, record.

The only place where the pieces meet. It never decides a verdict itself (verdict.decide does)
and it turns every way a cell can go wrong into an Observed with `infra` set or not, so FAIL
(the system under test misbehaved) and ERROR (we could not judge) are never confused.
"""

from __future__ import annotations

import contextlib
import re
import time
import traceback
from dataclasses import dataclass, field, replace
from pathlib import Path

from . import model, observe, workloads
from .migration import known_issues, plans
from .console import GuestPanic
from .cell import Cell, Expected, HostFacts, Observed, Stage
from .errors import GuestTimeout, InfraError, LaunchFailure, QemuDied
from .hosts import Host
from .interrupts import InterruptsFormatError
from .kit import Kit
from .machine import GuestMachine
from .cell_machines import CellMachines, Site, run_tag  # noqa: F401  (run_tag: the tag tests and cleanup look for)
from .qmp import QmpCommandError, QmpLost
from .results import RunStore
from .verdict import combine, combine_migration, decide

# Panics that mean the kit cannot boot at all (a wrong init, no root): ours to fix, not the SUT's.
KIT_PANICS = re.compile(r"No working init found|Requested init \S+ failed|VFS: Unable to mount root")
QEMU_ERROR_LINE = re.compile(r"^qemu-system-\w+: (?!warning:)(.+)$", re.M)


@dataclass(frozen=True)
class CellContext:
    cell: Cell
    facts: HostFacts
    host: Host
    kit: Kit
    store: RunStore
    run_id: str
    timeouts: dict[str, float]
    worker: str = "main"
    known_issues: list = field(default_factory=list)
    max_bandwidth: int | None = None
    peer: Site | None = None  # a cross plan's other member of the migration domain
    addresses: dict[str, str] = field(default_factory=dict)  # host -> address for migration streams


def qemu_error(stderr: str) -> str | None:
    """QEMU's own error line(s), without its warnings."""
    lines = QEMU_ERROR_LINE.findall(stderr)
    return "; ".join(l.strip() for l in lines) if lines else None


def _observe_launch_failure(o: Observed, e: LaunchFailure) -> None:
    o.exit_code = e.exit_code
    msg = qemu_error(e.stderr)
    if e.exit_code == 1 and msg:  # QEMU refused the configuration: an outcome, not an accident
        o.error, o.stage = msg, Stage.QEMU_START.value
    else:
        o.error, o.stage, o.infra = f"QEMU failed to start: {e}", Stage.QEMU_START.value, True
    o.log_excerpt = e.stderr[-2000:]


def _observe_guest(m: GuestMachine, ctx: CellContext, o: Observed) -> None:
    assert m.qmp is not None and m.console is not None
    configured = m.qmp.execute("qom-get", path="/machine", property="ic-mode")
    m.cont()
    m.console.wait_ready(ctx.timeouts["boot"])
    r = m.console.run("ck-observe", ctx.timeouts["command"])
    if not r.ok:
        raise observe.ObserveError(f"ck-observe exited {r.status}: {r.output[-500:]}")
    o.guest = observe.guest_view(r.output)
    o.host = observe.host_view(m.qmp.hmp("info pic"), str(configured))
    o.platform_support = o.guest.platform_support
    o.mode = o.guest.mode if o.guest.mode == o.host.mode else None


def _observe_qemu_gone(m: GuestMachine, o: Observed, e: Exception) -> None:
    code = m.shutdown()
    o.exit_code = code
    stderr = m.stderr_text()
    msg = qemu_error(stderr)
    o.log_excerpt = (stderr[-1000:] + "\n--- console ---\n" + (m.console.tail() if m.console else "")).strip()
    if code == 1 and msg:  # QEMU stopped on an error of its own, e.g. at CAS
        o.error = msg
        o.stage = Stage.CAS.value if re.search(r"interrupt mode|CAS|kernel_irqchip", msg) else Stage.GUEST.value
    else:  # killed or crashed: the cell cannot be judged
        o.error, o.stage, o.infra = f"QEMU went away (exit code {code}): {msg or e}", Stage.GUEST.value, True


def _run_workloads(m: GuestMachine, ctx: CellContext, mode: str | None) -> list[dict]:
    """Every workload of the cell in this one boot; infrastructure failures end the series."""
    assert m.console is not None and m.qmp is not None
    g = workloads.GuestSession(ctx.cell, m.console, m.qmp, ctx.timeouts["command"], m.console.wait_ready,
                               ctx.timeouts["boot"], mode=mode)
    out: list[dict] = []
    todo = workloads.ordered(ctx.cell.workloads)
    for i, w in enumerate(todo):
        try:
            out.append(workloads.execute(w, g).to_dict())
        except (GuestTimeout, QemuDied, QmpLost, GuestPanic, InterruptsFormatError) as e:
            verdict = "FAIL" if isinstance(e, GuestPanic) and not KIT_PANICS.search(e.tail) else "ERROR"
            out.append(workloads.WorkloadResult(w.name, verdict, f"{type(e).__name__}: {e}",
                                                excerpt=getattr(e, "tail", None)).to_dict())
            out += [workloads.WorkloadResult(x.name, "ERROR", f"not run: {w.name} lost the guest").to_dict()
                    for x in todo[i + 1:]]
            break
    return out


def _run_migration(machines: CellMachines, m: GuestMachine, ctx: CellContext, mode: str) -> dict:
    cell = ctx.cell
    build = ctx.facts.build(str(cell.axis("qemu")))
    pc = plans.PlanContext(machines, ctx.timeouts["liveness"], ctx.timeouts["command"], mode, ctx.max_bandwidth,
                           ctx.peer, dict(ctx.addresses))
    rec: dict = {"plan": cell.migration, "window_s": pc.window, "hops": []}
    if ctx.peer is not None:
        rec["peer"] = {"host": ctx.peer.host.name, "qemu": ctx.peer.build.name, "version": ctx.peer.build.version}
    try:
        plans.start_heartbeat(m, pc.timeout)
        plans.start_background_traffic(m, cell, pc.timeout)
        hops, _final = plans.PLANS[cell.migration](pc, m)
    except (InfraError, LaunchFailure, QmpLost, QmpCommandError, GuestTimeout, observe.ObserveError,
            workloads.WorkloadFailed) as e:
        rec.update(verdict="ERROR", reason=f"migration could not be carried out: {e}")
        return rec
    rec["hops"] = [h.to_dict() for h in hops]
    facts = known_issues.CellFacts(build.version if build else "", str(cell.axis("accel")), cell.migration,
                                   "workload" if cell.workloads else "idle", int(cell.axis("smp")), mode,
                                   ctx.peer.build.version if ctx.peer else "")
    rec.update(known_issues.classify(ctx.known_issues, facts, rec["hops"]))
    bad = [h for h in rec["hops"] if h["verdict"] != "PASS"]
    rec["reason"] = "; ".join(f"hop {h['name']}: {'; '.join(h['problems'] or h['infra'])}"
                              + (f" [known issue {h['known_issue']}]" if h.get("known_issue") else "")
                              for h in bad) or f"{len(hops)} hop(s) healthy"
    return rec


@contextlib.contextmanager
def lease_all(hosts: list[Host], timeout: float = 3600.0):
    """A slot on each host, taken in host-name order (a global order: no two cells can each
    hold what the other waits for), released in reverse."""
    by_name = {h.name: h for h in hosts}
    with contextlib.ExitStack() as leases:
        for name in sorted(by_name):
            leases.enter_context(by_name[name].lease(timeout))
        yield


def execute(ctx: CellContext, expected: Expected, log_dir: Path, wl_results: list[dict],
            mig: dict) -> Observed:
    o = Observed()
    cell, build = ctx.cell, ctx.facts.build(str(ctx.cell.axis("qemu")))
    assert build is not None
    # A peer on another host holds a slot there too, for the cell's whole life: its guest may
    # live there for a while. Slots are taken in host-name order, so two cells crossing between
    # the same hosts in opposite directions never each hold one and wait for the other.
    with lease_all([ctx.host] + ([ctx.peer.host] if ctx.peer else [])):
        # The kit as each host sees it: sent once per host and content key (a no-op locally).
        kit = ctx.host.stage_kit(ctx.kit)
        if ctx.peer is not None:
            ctx = replace(ctx, peer=replace(ctx.peer, kit=ctx.peer.host.stage_kit(ctx.peer.kit)))
        scratch = ctx.host.tempdir("ck-s-")
        machines = CellMachines(ctx.host, cell, build, kit, ctx.run_id, log_dir, scratch,
                            ctx.timeouts["shutdown"], heartbeat=cell.migration != "none")
        m = machines.machine()
        try:
            m.launch()
        except LaunchFailure as e:
            _observe_launch_failure(o, e)
            return o
        try:
            _observe_guest(m, ctx, o)
            if cell.workloads and o.guest is not None:
                wl_results.extend(_run_workloads(m, ctx, o.guest.mode))
            if cell.migration != "none" and o.guest is not None and o.guest.mode:
                mig.update(_run_migration(machines, m, ctx, o.guest.mode))
        except GuestPanic as e:
            o.error, o.stage, o.log_excerpt = e.message, Stage.GUEST.value, e.tail
            o.infra = bool(KIT_PANICS.search(e.tail))
        except GuestTimeout as e:
            o.error, o.stage, o.infra, o.log_excerpt = str(e), Stage.GUEST.value, True, e.tail
        except (QemuDied, QmpLost) as e:
            _observe_qemu_gone(m, o, e)
        except (observe.ObserveError, QmpCommandError) as e:
            o.error, o.stage, o.infra = f"cannot judge the guest: {e}", Stage.GUEST.value, True
        finally:
            code = m.shutdown()
            o.exit_code = o.exit_code if o.exit_code is not None else code
            machines.shutdown_all()
            ctx.host.remove_tree(scratch)
    return o


def run_cell(ctx: CellContext) -> dict:
    """Run one cell to a result record (also written to the store). Never raises for a cell."""
    cell = ctx.cell
    started = time.time()
    t0 = time.monotonic()
    log_dir = ctx.store.cell_dir(cell.id)
    log_dir.mkdir(parents=True, exist_ok=True)
    wl_results: list[dict] = []
    mig: dict = {}
    if ctx.facts.error:
        # Nothing can be predicted or observed on a host we cannot reach: ERROR, never SKIP.
        expected = Expected(None, "host-unreachable", "the host probe at the start of the run")
        observed = Observed(error=f"host {cell.host} unreachable: {ctx.facts.error}", infra=True)
    elif (expected := model.predict(cell, ctx.facts)).skip:
        observed = Observed()
    else:
        try:
            observed = execute(ctx, expected, log_dir, wl_results, mig)
        except InfraError as e:
            observed = Observed(error=str(e), infra=True)
        except Exception as e:  # a harness bug must not take the run down; it is an ERROR with its trace
            (log_dir / "harness-error.txt").write_text(traceback.format_exc())
            observed = Observed(error=f"harness error: {e!r} (see harness-error.txt)", infra=True)
    verdict, reason = combine(decide(expected, observed), wl_results, cell.workloads)
    verdict, reason = combine_migration((verdict, reason), mig, cell.migration)
    build = ctx.facts.build(str(cell.axis("qemu")))
    logs = {name: str(p.relative_to(ctx.store.out)) for name, p in (
        ("console", log_dir / "console.log"), ("qemu_stderr", log_dir / "qemu-stderr.log"),
        ("qmp", log_dir / "qmp.jsonl"), ("argv", log_dir / "qemu-argv.txt"),
        ("harness_error", log_dir / "harness-error.txt")) if p.exists()}
    record = {
        **cell.to_dict(),
        "expected": expected.to_dict(),
        "observed": observed.to_dict(),
        "verdict": verdict.value,
        "reason": reason,
        "duration_s": round(time.monotonic() - t0, 3),
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        "qemu_version": build.version if build else None,
        "kit": ctx.kit.key,
        "worker": ctx.worker,
        "logs": logs,
        "workloads": wl_results,
        "migration": mig or None,
    }
    ctx.store.write_cell(record)
    return record
