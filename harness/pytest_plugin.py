"""The caskit pytest plugin: one test per matrix cell, so `caskit run -n 2` and
`pytest -n 2 --caskit-matrix FILE` share one runner, with pytest-xdist for the parallelism.

The controller validates, probes, builds the kit and writes run.json in pytest_configure;
workers read run.json. Each cell's record is written by the worker that ran it; the controller
assembles results.json and the reports at the end, and stops any QEMU the run left behind.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest

from .config import TIMEOUT_KEYS
from .cell import Cell, HostFacts, Verdict
from .errors import CaskitError, ConfigError, InfraError

CELLTEST = str(Path(__file__).with_name("celltest.py"))
KEY = pytest.StashKey[dict]()
_CONFIG: dict = {}  # the controller's config, for hooks that are not handed it


def pytest_addoption(parser):
    g = parser.getgroup("caskit", "caskit matrix runs")
    g.addoption("--caskit-matrix", action="append", default=[], metavar="FILE",
                help="matrix file (or name under configs/matrices); repeatable")
    g.addoption("--caskit-hosts", default=None, metavar="FILE", help="host inventory (default configs/hosts.yaml)")
    g.addoption("--caskit-out", default=None, metavar="DIR", help="output directory (default reports/<run-id>)")
    g.addoption("--caskit-run-id", default=None, help="run id (default: time and a random suffix)")
    g.addoption("--caskit-known-issues", default=None, metavar="FILE",
                help="known-issues file (default configs/known-issues.yaml)")
    g.addoption("--caskit-resume", action="store_true", help="reuse finished cells' results found in --caskit-out")
    g.addoption("--caskit-db", default=None, metavar="URL",
                help="results history: sqlite:///PATH or postgresql://... (default $CASKIT_DB, else "
                     "history.sqlite beside the run directory; off: none)")
    g.addoption("--caskit-rerun-failures", type=int, default=0, metavar="N",
                help="run a FAIL or ERROR cell up to N more times; FLAKY if it then passes")
    for opt, what in (("kernel", "guest kernel under test (vmlinux or linux-image .deb)"),
                      ("initrd", "initramfs to go with --caskit-kernel"),
                      ("modules", "the kernel's modules (lib/modules/RELEASE tree, a directory or .deb holding one)"),
                      ("qemu", "QEMU binary under test in place of the cells' builds")):
        g.addoption(f"--caskit-{opt}", default=None, metavar="PATH", help=what)


def _is_worker(config) -> bool:
    return hasattr(config, "workerinput")


@pytest.hookimpl(trylast=True)  # after the terminal reporter exists, before xdist starts workers
def pytest_configure(config):
    if not config.getoption("caskit_matrix"):
        return
    from . import prepare

    if getattr(config.option, "dist", "no") in ("loadscope", "loadfile", "loadgroup"):
        # Every cell is a test of one module: grouping by module would put them all on one worker.
        config.option.dist = "load"
    if _is_worker(config):
        out = Path(config.getoption("caskit_out"))
        from .results import RunStore
        run = RunStore(out).read_run()
        config.stash[KEY] = {"run": run, "out": out}
        config.args[:] = [CELLTEST]  # xdist hands workers the original arguments, not ours
        from . import leftovers
        leftovers.register(out, config.workerinput["workerid"])  # a resumed run finds us by PID
        return
    try:
        from .patch import Patch
        patch = Patch(*(config.getoption(f"caskit_{o}") for o in ("kernel", "initrd", "modules", "qemu")))
        p = prepare.load_plan(config.getoption("caskit_matrix"), config.getoption("caskit_hosts"),
                              config.getoption("caskit_known_issues"), patch)
    except ConfigError as e:
        raise pytest.UsageError(str(e)) from None
    run_id = config.getoption("caskit_run_id") or prepare.new_run_id()
    out = Path(config.getoption("caskit_out") or prepare.reports_dir() / run_id).resolve()
    config.option.caskit_out = str(out)  # xdist hands the controller's options to its workers
    config.option.caskit_run_id = run_id
    tw = config.get_terminal_writer()
    old_run = _stop_dead_run(config, out, tw) if config.getoption("caskit_resume") else None
    try:
        run = prepare.prepare_run(p, out, run_id, log=lambda m: tw.line(m),
                                  known_issues_file=config.getoption("caskit_known_issues"), patch=patch)
    except ConfigError as e:  # bad input found while preparing (a kernel under test lacking a module)
        raise pytest.UsageError(f"caskit: config error: {e}") from None
    except CaskitError as e:
        raise pytest.UsageError(f"caskit: cannot prepare the run: {e}") from None
    from . import leftovers
    leftovers.register(out, "controller")
    if old_run is not None:
        run = _continue_run(run, old_run, out)
    config.option.caskit_db = _start_history(config, run, out, tw)  # resolved once: workers get it (configure_node)
    config.stash[KEY] = {"run": run, "out": out, "t0": time.monotonic(), "counts": {}, "done": 0}
    _CONFIG["config"] = config
    # Collect the cells, not the project's own tests.
    config.args[:] = [CELLTEST]
    tw.line(f"caskit: run {run_id}: {len(run['cells'])} cells -> {out}")


def pytest_generate_tests(metafunc):
    if "caskit_cell" not in metafunc.fixturenames:
        return
    st = metafunc.config.stash.get(KEY, None)
    if st is None:
        raise pytest.UsageError("caskit cells need --caskit-matrix")
    # The controller wrote the final cells (domain-pinned where asked) to run.json: every worker
    # collects exactly those.
    cells = [Cell.from_dict(d) for d in st["run"]["cells"]]
    metafunc.parametrize("caskit_cell", cells, ids=[c.id for c in cells], indirect=True)


@pytest.fixture
def caskit_cell(request):
    from .cellrun import CellContext, run_cell
    from .config import load_hosts
    from .connect import make_host
    from .results import RunStore
    from .prepare import kit_from_run
    from . import flaky, resume

    from .migration import known_issues

    cell: Cell = request.param
    st = request.config.stash[KEY]
    run, store = st["run"], RunStore(st["out"])
    issues = known_issues.load(Path(run["known_issues_file"]) if run.get("known_issues_file") else None)
    record = store.read_cell(cell.id) if request.config.getoption("caskit_resume") else None
    # --resume keeps a finished cell only while its kit, QEMU build and expected outcome are
    # those of this run (harness/resume.py); otherwise it runs again and says why.
    now = resume.current(cell, run, issues)
    rerun = resume.rerun_because(record, now) if record is not None else None
    reruns = request.config.getoption("caskit_rerun_failures") or 0
    prior = None
    if (record is not None and flaky.unfinished(record, reruns)
            and not resume.rerun_because({**record, "verdict": Verdict.FAIL.value}, now)):
        # A failure with attempts still due (its run died between two, or this run allows more):
        # the next attempt follows the stored ones instead of starting over.
        prior, rerun = flaky.resume_prior(store, record), None
    if rerun or (record is None and request.config.getoption("caskit_resume")):
        # No log of the old result may pass for the new; nor may the partial logs of a cell that
        # a killed run was in (QEMU's logs are opened for appending).
        shutil.rmtree(store.cell_dir(cell.id), ignore_errors=True)
    if record is None or rerun or prior is not None:
        specs = load_hosts(request.config.getoption("caskit_hosts"))
        worker = getattr(request.config, "workerinput", {}).get("workerid", "main")
        from .cell_machines import Site
        kit = kit_from_run(run)
        peer = None
        if cell.peer:
            peer_host, peer_build = cell.peer
            build = HostFacts.from_dict(run["hosts"][peer_host]).build(peer_build)
            assert build is not None, f"run.json has no probed build {peer_build} on {peer_host}"
            peer = Site(make_host(specs[peer_host]), build, kit,
                        HostFacts.from_dict(run["hosts"][peer_host]).guest_machine_options)
        def make_ctx(facts, host, pre_leased=False):
            return CellContext(cell, facts, host, kit, store, run["id"], {**TIMEOUT_KEYS, **run["timeouts"]}, worker,
                               issues, run.get("migration_max_bandwidth"), peer,
                               {name: s.migration_address for name, s in specs.items()},
                               kit_error=run["kit"].get("error"), pre_leased=pre_leased)

        from . import pools

        def attempt() -> dict:
            if pools.is_pool(cell.host):
                return _pool_cell(cell, run, st["out"], specs, make_ctx, worker)
            facts = HostFacts.from_dict(run["hosts"][cell.host])
            try:
                host = make_host(specs[cell.host])
            except CaskitError as e:  # gone since the probe (an emulated host stopped, say): ERROR, recorded
                from dataclasses import replace
                facts, host = replace(facts, error=str(e)), None
            return run_cell(make_ctx(facts, host))

        # --rerun-failures N: a FAIL or ERROR cell runs again, every attempt kept (harness/flaky.py).
        record = flaky.run_attempts(attempt, store, cell.id, reruns, prior)
        if rerun:
            record["rerun_because"] = rerun
            store.write_cell(record)
            request.node.user_properties.append(("caskit_rerun_because", rerun))
    _commit_cell(request.config, run["id"], record, st["out"])
    request.node.user_properties.append(("caskit_verdict", record["verdict"]))
    request.node.user_properties.append(("caskit_mode", str(record["observed"].get("mode"))))
    if record["verdict"] == Verdict.SKIP.value:
        pytest.skip(record["reason"])
    if record["verdict"] == Verdict.ERROR.value:
        raise CellError(f"ERROR: {record['reason']} (logs: {store.cell_dir(cell.id)})")
    return record


def _pool_cell(cell: Cell, run: dict, out: Path, specs: dict, make_ctx, worker: str) -> dict:
    """A cell of a pool: on the first healthy member that can offer it and has a free slot."""
    from dataclasses import replace

    from . import pools
    from .cellrun import run_cell
    from .errors import SlotsBusy
    from .connect import make_host

    name = pools.pool_name(cell.host)
    members = list(run["pools"][name]["hosts"])
    facts = {m: HostFacts.from_dict(run["hosts"][m]) for m in members}

    def try_run(m: str):
        host = make_host(specs[m])  # a HostError here sets the member aside
        lease = host.lease(0)  # without waiting: another member may have a slot free now
        try:
            lease.__enter__()
        except SlotsBusy:
            return None
        try:
            rec = run_cell(make_ctx(facts[m], host, pre_leased=True))
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

    offset = int("".join(ch for ch in worker if ch.isdigit()) or 0)
    rec = pools.choose_and_run(cell, name, members, facts, out, try_run, offset)
    if rec is not None:
        from .results import RunStore
        RunStore(out).write_cell(rec)  # with the member that ran it (`ran_on`)
        return rec
    aside = pools.set_aside_members(out, name)
    healthy = [m for m in members if m not in aside and not facts[m].error]
    if healthy:  # healthy members, none of which can offer the cell by its facts: SKIP with the reason
        return run_cell(make_ctx(facts[healthy[0]], None))
    why = "; ".join(f"{m}: {aside.get(m) or facts[m].error}" for m in members)
    return run_cell(make_ctx(replace(facts[members[0]], error=f"pool {name} has no healthy member ({why})"), None))


_HISTORY: dict = {}  # this process's open history, by URL (one connection per worker)


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node):
    """xdist: a worker parses the original command line again, so what the controller resolved
    (the history URL, from --db, $CASKIT_DB or the default) must be handed over explicitly."""
    url = getattr(node.config.option, "caskit_db", None)
    if url:
        node.workerinput["caskit_db"] = url


def _history_url(config) -> str | None:
    return getattr(config, "workerinput", {}).get("caskit_db") or config.getoption("caskit_db")


def _history_db(url: str | None):
    from . import history

    if not url or url == "off":
        return None
    if url not in _HISTORY:
        _HISTORY[url] = history.connect(url)
    return _HISTORY[url]


def _start_history(config, run: dict, out: Path, tw) -> str:
    """The history URL for this run's processes ("off": none), the run's row recorded. A history
    that cannot be reached costs no result: the run goes on, says so, and its cells go in at the
    end if the database is back by then (or later: caskit history --import DIR)."""
    from . import history

    try:
        url = history.resolve_url(config.getoption("caskit_db"), out)
    except ConfigError as e:
        raise pytest.UsageError(f"caskit: config error: {e}") from None
    if url is None:
        return "off"
    try:
        history.parse_url(url)
        history.record_run(_history_db(url), run, out)
    except ConfigError as e:
        raise pytest.UsageError(f"caskit: config error: {e}") from None
    except history.HistoryError as e:
        tw.line(f"caskit: warning: results history unavailable, the run goes on without it: {e}", yellow=True)
    return url


def _commit_cell(config, run_id: str, record: dict, out: Path) -> None:
    """The cell into the history the moment it ends, from the process that ran it."""
    from . import history

    url = _history_url(config)
    try:
        db = _history_db(url)
        if db is not None:
            history.commit_cell(db, run_id, record)
    except Exception as e:  # the history must never cost a cell its result; the end of the run retries
        _HISTORY.pop(url, None)
        with open(Path(out) / "history-errors.txt", "a") as f:
            f.write(f"{record.get('id')}: {type(e).__name__}: {e}\n")


def _finish_history(config, results: dict, out: Path) -> None:
    """Every cell of results.json again (idempotent): what a worker could not commit goes in now."""
    from . import history

    url = config.getoption("caskit_db")
    tw = config.get_terminal_writer()
    try:
        db = _history_db(url)
        if db is None:
            return
        history.commit_results(db, results, out)
        tw.line()
        tw.line(f"caskit: history: run {results['run']['id']} in {history.redact(url)}")
    except Exception as e:
        tw.line(f"caskit: warning: results history not updated ({e}); later: caskit history --import {out}",
                yellow=True)


def _stop_dead_run(config, out: Path, tw) -> dict | None:
    """--resume: the run that wrote `out` before (its run.json), with whatever it left running
    stopped by PID (harness/leftovers.py). None when there was no earlier run there."""
    from . import leftovers
    from .hosts import kill_tagged, tagged_pids
    from .results import RunStore

    try:
        old = RunStore(out).read_run()
    except (OSError, ValueError):
        return None
    try:
        stopped = leftovers.stop_dead_run(out, old["id"], kill_tagged, tagged_pids,
                                          lambda tag: _kill_tagged_remote(config, old), log=tw.line)
    except CaskitError as e:
        raise pytest.UsageError(f"caskit: cannot resume: {e}") from None
    return {**old, "_stopped": stopped}


def _continue_run(run: dict, old: dict, out: Path) -> dict:
    """This run's record as the continuation of `old`: which run it resumes, what that one left
    running, and the emulated hosts it booted (still up: this run stops them at its end)."""
    run = {**run, "resumed_from": old["id"], "stopped_at_resume": old.get("_stopped"),
           "booted_hosts": sorted(set(run.get("booted_hosts", [])) | set(old.get("booted_hosts", [])))}
    from .results import RunStore
    RunStore(out).write_run(run)
    return run


class CellError(InfraError):
    """Raised in the fixture so pytest counts the cell as an error, not a failure."""


def _duration(s: float) -> str:
    s = int(round(s))
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else (f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{s}s")


def progress_line(done: int, total: int, counts: dict[str, int], elapsed: float, verdict: str = "",
                  cell: str = "") -> str:
    """caskit [5/12] PASS 4 XFAIL 1 | 35s, ~50s left | PASS <cell>: the run's one progress line.
    What is left is estimated from the pace so far (cells done per second of the whole run,
    so -n N workers are counted in)."""
    tally = " ".join(f"{k} {v}" for k, v in sorted(counts.items()) if v) or "-"
    left = f", ~{_duration(elapsed / done * (total - done))} left" if 0 < done < total else ""
    last = f" | {verdict} {cell}" if cell else ""
    return f"caskit [{done}/{total}] {tally} | {_duration(elapsed)}{left}{last}"


@pytest.hookimpl(wrapper=True)
def pytest_report_teststatus(report, config):
    """Cells report through caskit's progress line, not pytest's "." and "x": the category is
    kept (pytest's closing counts), the letter and word go."""
    res = yield
    st = config.stash.get(KEY, None)
    if res and st is not None and "counts" in st and "test_cell[" in report.nodeid:
        return res[0], "", ""
    return res


def pytest_runtest_logreport(report):
    """Progress on the controller, one line for the whole run. On a terminal it rewrites itself
    (FAIL and ERROR cells keep a line of their own above it); in a CI log (not a TTY) it is a
    plain line per finished cell."""
    config = _CONFIG.get("config")
    if config is None or report.when != "teardown":
        return
    st = config.stash.get(KEY, None)
    if st is None or "counts" not in st:
        return
    verdict = dict(report.user_properties).get("caskit_verdict")
    if verdict is None:
        return
    st["done"] += 1
    st["counts"][verdict] = st["counts"].get(verdict, 0) + 1
    total = len(st["run"]["cells"])  # the tests; cell_order also plans the pools' health checks
    cell = report.nodeid.split("[", 1)[-1].rstrip("]")
    line = progress_line(st["done"], total, st["counts"], time.monotonic() - st["t0"], verdict, cell)
    tw = config.get_terminal_writer()
    notes = []
    if why := dict(report.user_properties).get("caskit_rerun_because"):  # a --resume that could not keep it
        notes.append(f"caskit: rerunning {cell}: {why}")
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    if not (reporter is not None and bool(reporter.isatty)):
        for n in notes:
            tw.line(n)
        tw.line(line)
        return
    if verdict in ("FAIL", "ERROR"):
        notes.append(f"caskit: {verdict} {cell}")
    for n in notes:
        tw.write("\r\x1b[K" + n + "\n")
    tw.write("\r\x1b[K" + line[:max(20, tw.fullwidth - 1)], flush=True)


def _kill_tagged_remote(config, run: dict) -> list[int]:
    """Leftovers of this run on the SSH hosts it used (a worker that died mid-cell)."""
    from .config import load_hosts
    from .connect import make_host

    killed: list[int] = []
    specs = load_hosts(config.getoption("caskit_hosts"))
    for name, facts in run["hosts"].items():
        if (facts or {}).get("error"):
            continue  # unreachable when the run began: nothing of this run was started there
        if name in specs and specs[name].kind == "ssh":
            try:
                killed += make_host(specs[name]).kill_tagged(f"caskit:{run['id']}:")
            except Exception as e:  # cleanup must never cost the run its results
                config.get_terminal_writer().line(f"caskit: cannot check {name} for leftover QEMUs: {e!r}")
    return killed


def pytest_sessionfinish(session, exitstatus):
    config = session.config
    st = config.stash.get(KEY, None)
    if st is None or _is_worker(config):
        return
    from .hosts import kill_tagged
    from .report import write_reports
    from .results import RunStore

    run = st["run"]
    killed = kill_tagged(f"caskit:{run['id']}:")
    killed += _kill_tagged_remote(config, run)
    for name in run.get("booted_hosts", []):  # emulated hosts this run booted: stopped by PID
        from .emulated import host as emulated
        try:
            config.get_terminal_writer().line(f"caskit: stopping emulated host {name}: {emulated.down(name)}")
        except Exception as e:  # stopping must never cost the run its results
            config.get_terminal_writer().line(f"caskit: cannot stop emulated host {name}: {e!r}")
    store = RunStore(st["out"])
    results = store.assemble(run["cell_order"], {"end": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                                                "leftover_qemu_killed": killed})
    write_reports(st["out"], results)
    _finish_history(config, results, st["out"])
    from .prepare import reports_dir

    latest = reports_dir() / "latest"
    if Path(st["out"]).parent == latest.parent.resolve():
        try:
            if latest.is_symlink() or latest.exists():
                latest.unlink()
            latest.symlink_to(Path(st["out"]).name)
        except OSError:
            pass
    s = results["summary"]
    tw = config.get_terminal_writer()
    tw.line()
    tw.line("caskit: " + ", ".join(f"{k} {v}" for k, v in s.items() if v) + f" -> {st['out']}/report.html",
            bold=True)
