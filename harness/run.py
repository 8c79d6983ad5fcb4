"""The run controller: one place where a run decides what happens to each of its cells.

A `Run` is run.json loaded (what prepare.prepare_run wrote: the planned cells, the hosts' facts,
the kit, the builds, the known-issues file, the timeouts) plus the options this process runs it
with. `run_one(run, cell)` owns everything between "this cell is due" and "its record is stored":
whether a stored result may stand (--resume, resume.rerun_because), the attempts
(--rerun-failures, flaky.run_attempts), placement on a pool's members, the slot leases, and the
record's way into the results history. `begin` and `finish` are the run's two ends on the
controller. The pytest plugin only calls these; nothing here knows pytest.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path

from . import flaky, history, leftovers, pools, prepare, resume
from .cell import Cell, HostFacts, Verdict
from .cell_machines import Site
from .cellrun import CellContext, run_cell
from .config import load_hosts
from .specs import HostSpec, matrix_settings
from .connect import make_host
from .emulated import host as emulated
from .errors import CaskitError, ConfigError, SlotsBusy
from .hosts import kill_tagged, tagged_pids
from .migration import known_issues
from .prepare import kit_from_run
from .report import write_reports
from .results import RunStore, reports_dir


@dataclass(frozen=True)
class Options:
    """How this process runs the cells: the same on the controller and every worker."""

    out: Path
    hosts_file: str | None = None
    resume: bool = False
    reruns: int = 0
    history_url: str | None = None  # resolved once by the controller; "off" or None: no history
    worker: str = "main"


class History:
    """This process's connection to the results history, opened on first use. A history that
    fails never costs a cell its result: the failure is noted in the run directory and the run's
    end commits every cell again."""

    def __init__(self, url: str | None, out: Path):
        self.url = None if not url or url == "off" else url
        self.out = Path(out)
        self._db = None

    def db(self):
        if self.url is None:
            return None
        if self._db is None:
            self._db = history.connect(self.url)
        return self._db

    def commit(self, run_id: str, record: dict) -> None:
        try:
            db = self.db()
            if db is not None:
                history.commit_cell(db, run_id, record)
        except Exception as e:  # noqa: BLE001 -- the end of the run retries
            self._db = None
            with open(self.out / "history-errors.txt", "a") as f:
                f.write(f"{record.get('id')}: {type(e).__name__}: {e}\n")


@dataclass
class Run:
    """A run as every process sees it: run.json, and this process's options."""

    record: dict
    opts: Options
    history: History = field(init=False)

    def __post_init__(self) -> None:
        self.history = History(self.opts.history_url, self.opts.out)

    @classmethod
    def load(cls, opts: Options) -> "Run":
        return cls(RunStore(opts.out).read_run(), opts)

    @property
    def id(self) -> str:
        return self.record["id"]

    @property
    def store(self) -> RunStore:
        return RunStore(self.opts.out)

    def cells(self) -> list[Cell]:
        """The planned cells (run.json's final cells, domain-pinned where asked)."""
        return [Cell.from_dict(d) for d in self.record["cells"]]

    @cached_property
    def specs(self) -> dict[str, HostSpec]:
        return load_hosts(self.opts.hosts_file)

    @cached_property
    def known_issues(self) -> list:
        f = self.record.get("known_issues_file")
        return known_issues.load(Path(f) if f else None)

    def facts(self, host: str) -> HostFacts:
        return HostFacts.from_dict(self.record["hosts"][host])

    def context(self, cell: Cell, facts: HostFacts, host, pre_leased: bool = False) -> CellContext:
        kit = kit_from_run(self.record)
        peer = None
        if cell.peer:
            peer_host, peer_build = cell.peer
            build = self.facts(peer_host).build(peer_build)
            if build is None:
                raise ConfigError(str(self.store.run_file), "hosts", f"no probed build {peer_build} on {peer_host}")
            peer = Site(make_host(self.specs[peer_host]), build, kit, self.facts(peer_host).guest_machine_options,
                        self.facts(peer_host).guest_append)
        timeouts, bandwidth = matrix_settings(self.record, cell.matrix)
        return CellContext(cell, facts, host, kit, self.store, self.id, timeouts,
                           self.opts.worker, self.known_issues, bandwidth, peer,
                           {name: s.migration_address for name, s in self.specs.items()},
                           kit_error=self.record["kit"].get("error"), pre_leased=pre_leased)


def run_one(run: Run, cell: Cell) -> dict:
    """The cell's record: its stored one where that still stands for it (--resume), else the
    record of running it (every attempt kept), stored and committed to the history."""
    store = run.store
    stored = store.read_cell(cell.id) if run.opts.resume else None
    now = resume.current(cell, run.record, run.known_issues) if stored is not None else None
    rerun = resume.rerun_because(stored, now) if stored is not None else None
    prior = None
    if (stored is not None and now is not None and flaky.unfinished(stored, run.opts.reruns)
            and not resume.rerun_because({**stored, "verdict": Verdict.FAIL.value}, now)):
        # A failure with attempts still due (its run died between two, or this run allows
        # more): the next attempt follows the stored ones instead of starting over.
        prior, rerun = flaky.resume_prior(store, stored), None
    if rerun or (stored is None and run.opts.resume):
        # No log of the old result may pass for the new; nor may the partial logs of a cell
        # that a killed run was in (QEMU's logs are opened for appending).
        shutil.rmtree(store.cell_dir(cell.id), ignore_errors=True)
    record = stored
    if stored is None or rerun or prior is not None:
        record = flaky.run_attempts(lambda: _attempt(run, cell), store, cell.id, run.opts.reruns, prior)
        if rerun:
            record["rerun_because"] = rerun
            store.write_cell(record)
    run.history.commit(run.id, record)
    return record


def _attempt(run: Run, cell: Cell) -> dict:
    if pools.is_pool(cell.host):
        return _pool_attempt(run, cell)
    facts = run.facts(cell.host)
    try:
        host = make_host(run.specs[cell.host])
    except CaskitError as e:  # gone since the probe (an emulated host stopped, say): ERROR, recorded
        facts, host = replace(facts, error=str(e)), None
    return run_cell(run.context(cell, facts, host))


def _pool_attempt(run: Run, cell: Cell) -> dict:
    """A cell of a pool: on the first member not set aside that can offer it and has a free slot."""
    name = pools.pool_name(cell.host)
    members = list(run.record["pools"][name]["hosts"])
    facts = {m: run.facts(m) for m in members}
    out = run.opts.out

    def try_run(m: str):
        host = make_host(run.specs[m])  # a HostError here sets the member aside
        lease = host.lease(0)  # without waiting: another member may have a slot free now
        try:
            lease.__enter__()
        except SlotsBusy:
            return None
        try:
            rec = run_cell(run.context(cell, facts[m], host, pre_leased=True))
        finally:
            lease.__exit__(None, None, None)
        if rec["verdict"] == Verdict.ERROR.value and rec["observed"].get("error_kind") in pools.HOST_LOST:
            # Keep what the dropped attempt logged, outside the cells the run reports.
            d = Path(out) / "cells" / cell.id
            if d.exists():
                dest = Path(out) / "pools" / name / f"dropped-{cell.id}-{m}-{time.time_ns()}"
                dest.parent.mkdir(parents=True, exist_ok=True)
                d.rename(dest)
        return rec

    offset = int("".join(ch for ch in run.opts.worker if ch.isdigit()) or 0)
    rec = pools.choose_and_run(cell, name, members, facts, out, try_run, offset)
    if rec is not None:
        run.store.write_cell(rec)  # with the member that ran it (`ran_on`)
        return rec
    aside = pools.set_aside_members(out, name)
    usable = [m for m in members if m not in aside and not facts[m].error]
    if usable:  # members, none of which can offer the cell by its facts: SKIP with the reason
        return run_cell(run.context(cell, facts[usable[0]], None))
    why = "; ".join(f"{m}: {aside.get(m) or facts[m].error}" for m in members)
    return run_cell(run.context(cell, replace(facts[members[0]], error=f"pool {name} has no healthy member ({why})"), None))


# -- the run's two ends, on the controller ------------------------------------------------------

def begin(plan: prepare.RunPlan, opts: Options, run_id: str, log=print, known_issues_file: str | None = None,
          patch=None, db: str | None = None) -> Run:
    """Prepare the run (probe, kit, run.json); with --resume, stop what the run that wrote `out`
    left running and continue it; record the run in the history. Returns the Run, whose
    options carry the history URL resolved once for every worker."""
    old = stop_dead_run(opts.out, opts.hosts_file, log) if opts.resume else None
    record = prepare.prepare_run(plan, opts.out, run_id, log=log, known_issues_file=known_issues_file, patch=patch)
    leftovers.register(opts.out, "controller")
    if old is not None:
        record = {**record, "resumed_from": old["id"], "stopped_at_resume": old.get("_stopped"),
                  "booted_hosts": sorted(set(record.get("booted_hosts", [])) | set(old.get("booted_hosts", [])))}
        RunStore(opts.out).write_run(record)
    url = start_history(db, record, opts.out, log)
    return Run(record, replace(opts, history_url=url))


def start_history(db: str | None, record: dict, out: Path, log=print) -> str:
    """The history URL for this run's processes ("off": none), the run's row recorded. A history
    that cannot be reached costs no result: the run goes on, says so, and its cells go in at the
    end if the database is back by then (or later: caskit history --import DIR). ConfigError for
    a URL that cannot be one."""
    url = history.resolve_url(db, out)
    if url is None:
        return "off"
    history.parse_url(url)
    try:
        history.record_run(History(url, out).db(), record, out)
    except history.HistoryError as e:
        log(f"caskit: warning: results history unavailable, the run goes on without it: {e}")
    return url


def stop_dead_run(out: Path, hosts_file: str | None, log=print) -> dict | None:
    """--resume: the run that wrote `out` before (its run.json), with whatever it left running
    stopped by PID (harness/leftovers.py). None when there was no earlier run there."""
    try:
        old = RunStore(out).read_run()
    except (OSError, ValueError):
        return None
    stopped = leftovers.stop_dead_run(out, old["id"], kill_tagged, tagged_pids,
                                      lambda tag: kill_tagged_remote(old, hosts_file, log), log=log)
    return {**old, "_stopped": stopped}


def kill_tagged_remote(record: dict, hosts_file: str | None, log=print) -> list[int]:
    """Leftovers of a run on the SSH hosts it used (a worker that died mid-cell)."""
    killed: list[int] = []
    specs = load_hosts(hosts_file)
    for name, facts in record["hosts"].items():
        if (facts or {}).get("error"):
            continue  # unreachable when the run began: nothing of this run was started there
        if name in specs and specs[name].kind == "ssh":
            try:
                killed += make_host(specs[name]).kill_tagged(f"caskit:{record['id']}:")
            except Exception as e:  # noqa: BLE001 -- cleanup must never cost the run its results
                log(f"caskit: cannot check {name} for leftover QEMUs: {e!r}")
    return killed


def finish(run: Run, log=print) -> dict:
    """The run's end on the controller: nothing of it left running (by tag and PID), the emulated
    hosts it booted stopped, results.json from the planned cells, the reports, the history, and
    reports/latest. Returns the results."""
    killed = kill_tagged(f"caskit:{run.id}:") + kill_tagged_remote(run.record, run.opts.hosts_file, log)
    for name in run.record.get("booted_hosts", []):  # emulated hosts this run booted: stopped by PID
        try:
            log(f"caskit: stopping emulated host {name}: {emulated.down(name)}")
        except Exception as e:  # noqa: BLE001 -- stopping must never cost the run its results
            log(f"caskit: cannot stop emulated host {name}: {e!r}")
    results = run.store.assemble(run.record["cell_order"], {"end": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                                                            "leftover_qemu_killed": killed})
    write_reports(run.opts.out, results)
    _finish_history(run, results, log)
    latest = reports_dir() / "latest"
    if Path(run.opts.out).parent == latest.parent.resolve():
        try:
            if latest.is_symlink() or latest.exists():
                latest.unlink()
            latest.symlink_to(Path(run.opts.out).name)
        except OSError:
            pass
    return results


def _finish_history(run: Run, results: dict, log) -> None:
    """Every cell of results.json again (idempotent): what a worker could not commit goes in now."""
    try:
        db = run.history.db()
        if db is None:
            return
        history.commit_results(db, results, run.opts.out)
        log(f"caskit: history: run {run.id} in {history.redact(run.history.url)}")
    except Exception as e:  # noqa: BLE001
        log(f"caskit: warning: results history not updated ({e}); later: caskit history --import {run.opts.out}")
