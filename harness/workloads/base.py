"""What a workload is, what it returns, and the guest session it runs in.

A workload is data plus two functions: the QEMU devices it needs (argv added at launch) and the
steps it drives in the guest. Guest-side programs live in guest_tests/; this side only runs
them and judges their output. Every wait is bounded: a guest-side `timeout` where the guest may
hang on an interrupt that never completes (FAIL, the guest said so), the console timeout where
the guest stops answering at all (ERROR, nobody left to ask).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from .. import interrupts
from ..console import CommandResult, Console
from ..cell import Cell, Verdict
from ..errors import KitError, WorkloadFailed, WorkloadSkipped
from ..hosts import Host, LocalHost
from ..qmp import QmpClient
from ..records import WorkloadResult


# Modes whose Linux driver counts some spurious interrupts by design. XIVE: xive_get_irq()
# (arch/powerpc/sysdev/xive/common.c) returns 0 when the event queue is already empty, e.g. an
# IPI or MSI whose event was consumed by the previous scan, and __do_irq() counts that in SPU.
# Measured under TCG: 1 to 22 per workload in XIVE mode, always 0 in XICS mode. In those modes
# the count is recorded, not judged.
SPURIOUS_EXPECTED = {"xive"}




@dataclass
class LaunchContext:
    """What a workload may use to add QEMU devices: the cell, a scratch dir on the host the
    machine runs on, and that host. Files there are made through `host` (it may be remote: a
    local open() would make them on the controller, where QEMU never looks)."""

    cell: Cell
    scratch: Path  # host-side directory that lives as long as the guest
    host: Host = field(default_factory=LocalHost)  # CellMachines passes the machine's own


@dataclass
class GuestSession:
    """A booted guest as workloads see it."""

    cell: Cell
    console: Console
    qmp: QmpClient
    command_timeout: float
    wait_ready: Callable[[float], dict]  # re-arm the console after a reset
    boot_timeout: float
    mode: str | None = None  # the negotiated mode, as observed
    modules_loaded: bool = False
    # Where the model says the host runs the controller of a mode (in-kernel or emulated), for
    # workloads that make the guest negotiate again (None: not judged).
    irqchip_for: Callable[[str], str | None] | None = None
    notes: list[str] = field(default_factory=list)
    # Called before every reset: the ending boot's kernel log is read while it still exists.
    before_reset: Callable[[], None] | None = None

    @property
    def smp(self) -> int:
        return int(self.cell.axis("smp"))

    def sh(self, command: str, timeout: float | None = None, check: bool = True) -> CommandResult:
        self.console.note(f"workload: {command}")
        r = self.console.run(command, timeout or self.command_timeout)
        if check and not r.ok:
            raise WorkloadFailed(f"`{command}` exited {r.status}", r.output[-1500:])
        return r

    def interrupts(self) -> interrupts.Table:
        return interrupts.parse(self.sh("cat /proc/interrupts").output)

    def reset(self) -> None:
        """QMP system_reset, after the ending boot's kernel log was read, and the next boot up to
        the kit's ready marker (its modules are then loaded again when needed)."""
        if self.before_reset is not None:
            self.before_reset()
        self.qmp.execute("system_reset")
        self.wait_ready(self.boot_timeout)
        self.modules_loaded = False

    def load_modules(self) -> None:
        """insmod the kit's modules once per boot (Debian ships no modules.dep to the kit). A module
        of the kit that does not load is the kit's breakage, not the system's: ERROR, naming it."""
        if not self.modules_loaded:
            r = self.sh("ck-modules", timeout=max(self.command_timeout, 60), check=False)
            if not r.ok:
                said = [ln.removeprefix("ck-modules: ") for ln in r.output.splitlines() if ln.startswith("ck-modules: ")]
                raise KitError(f"the kit's kernel modules did not load in the guest: "
                               f"{'; '.join(said) or f'ck-modules exited {r.status}: {r.output.strip()[-300:]}'}")
            self.modules_loaded = True


@dataclass(frozen=True)
class Workload:
    name: str
    summary: str
    run: Callable[[GuestSession], dict]  # returns metrics; raises WorkloadFailed / WorkloadSkipped
    devices: Callable[[LaunchContext], list[str]] = lambda ctx: []
    needs_smp: int = 1
    resets_guest: bool = False  # counters start again, so no before/after comparison across it
    # Around a migration hop (migration/plans.py asks, never names a workload's commands):
    # what to keep in flight during the hops, and what must still hold after each (its metrics;
    # WorkloadFailed with the symptom when not).
    during_hops: Callable[[GuestSession], None] | None = None
    after_hop: Callable[[GuestSession], dict] | None = None
    checked_after_every_hop: bool = False  # after_hop runs even when the cell does not name it
    # Its state lives in a file on the guest's host (a disk image, a hotplugged device's backing):
    # across hosts it would need shared storage, which caskit does not set up.
    host_local: bool = False


def execute(w: Workload, g: GuestSession) -> WorkloadResult:
    """Run one workload to a result. Infrastructure errors (guest gone, console timeout) propagate."""
    t0 = time.monotonic()
    g.console.note(f"workload {w.name}: start")
    try:
        if g.smp < w.needs_smp:
            raise WorkloadSkipped(f"needs at least {w.needs_smp} vCPUs, the cell has {g.smp}")
        spu_before = _spurious(g) if not w.resets_guest else None
        metrics = w.run(g)
        if spu_before is not None:
            grew = metrics["spurious_delta"] = _spurious(g) - spu_before
            if grew > 0 and g.mode not in SPURIOUS_EXPECTED:
                raise WorkloadFailed(f"the spurious-interrupt line (SPU) grew by {grew}", "", metrics)
        res = WorkloadResult(w.name, Verdict.PASS.value, "ok", metrics)
    except WorkloadFailed as e:
        res = WorkloadResult(w.name, Verdict.FAIL.value, e.reason, e.metrics, e.excerpt, symptom=e.symptom)
    except WorkloadSkipped as e:
        res = WorkloadResult(w.name, Verdict.SKIP.value, str(e))
    res.duration_s = round(time.monotonic() - t0, 3)
    g.console.note(f"workload {w.name}: {res.verdict} {res.reason}")
    return res


def _spurious(g: GuestSession) -> int:
    spu = g.interrupts().by_label("SPU")
    return spu.total if spu else 0
