"""The caskit pytest plugin: one test per matrix cell, so `caskit run -n 2` and
`pytest -n 2 --caskit-matrix FILE` share one runner, with pytest-xdist for the parallelism.

Hooks and one fixture, nothing else: the run itself is harness/run.py's. The controller begins
the run (run.json) in pytest_configure and finishes it in pytest_sessionfinish; every process
(controller or xdist worker) keeps its `run.Run` in config.stash, and the fixture hands each cell
to `run.run_one`. Progress is one line on the controller.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from . import prepare, run as runmod, shard as shardmod
from .cell import Cell, Verdict
from .errors import CaskitError, ConfigError, InfraError
from .leftovers import register as register_process
from .patch import Patch
from .results import reports_dir, run_exit_status

CELLTEST = str(Path(__file__).with_name("celltest.py"))
RUN = pytest.StashKey[runmod.Run]()


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
    g.addoption("--caskit-shard", default=None, metavar="K/N",
                help="run shard K of N of the matrix (a stable split by cell; `caskit report --merge` joins them)")
    g.addoption("--caskit-rerun-failures", type=int, default=0, metavar="N",
                help="run a FAIL or ERROR cell up to N more times; FLAKY if it then passes")
    for opt, what in (("kernel", "guest kernel under test (vmlinux or linux-image .deb)"),
                      ("initrd", "initramfs to go with --caskit-kernel"),
                      ("modules", "the kernel's modules (lib/modules/RELEASE tree, a directory or .deb holding one)"),
                      ("qemu", "QEMU binary under test in place of the cells' builds")):
        g.addoption(f"--caskit-{opt}", default=None, metavar="PATH", help=what)


def _options(config, out: Path, worker: str, history_url: str | None) -> runmod.Options:
    return runmod.Options(out, config.getoption("caskit_hosts"), bool(config.getoption("caskit_resume")),
                          config.getoption("caskit_rerun_failures") or 0, history_url, worker)


@pytest.hookimpl(trylast=True)  # after the terminal reporter exists, before xdist starts workers
def pytest_configure(config):
    if not config.getoption("caskit_matrix"):
        return
    if getattr(config.option, "dist", "no") in ("loadscope", "loadfile", "loadgroup"):
        # Every cell is a test of one module: grouping by module would put them all on one worker.
        config.option.dist = "load"
    config.args[:] = [CELLTEST]  # collect the cells, not the project's own tests (xdist hands workers ours)
    if hasattr(config, "workerinput"):  # an xdist worker: the controller's run, from run.json
        wi = config.workerinput
        config.stash[RUN] = runmod.Run.load(_options(config, Path(config.getoption("caskit_out")), wi["workerid"],
                                                     wi.get("caskit_db")))
        register_process(Path(config.getoption("caskit_out")), wi["workerid"])  # a resumed run finds us by PID
        return
    patch = Patch(*(config.getoption(f"caskit_{o}") for o in ("kernel", "initrd", "modules", "qemu")))
    try:
        shard = shardmod.parse(config.getoption("caskit_shard")) if config.getoption("caskit_shard") else None
        plan = prepare.load_plan(config.getoption("caskit_matrix"), config.getoption("caskit_hosts"),
                                 config.getoption("caskit_known_issues"), patch, shard)
    except ConfigError as e:
        raise pytest.UsageError(str(e)) from None
    run_id = config.getoption("caskit_run_id") or prepare.new_run_id()
    out = Path(config.getoption("caskit_out") or reports_dir() / run_id).resolve()
    config.option.caskit_out = str(out)  # xdist hands the controller's options to its workers
    config.option.caskit_run_id = run_id
    tw = config.get_terminal_writer()
    try:
        run = runmod.begin(plan, _options(config, out, "main", None), run_id, log=tw.line,
                           known_issues_file=config.getoption("caskit_known_issues"), patch=patch,
                           db=config.getoption("caskit_db"))
    except ConfigError as e:  # bad input found while preparing (a kernel under test lacking a module)
        raise pytest.UsageError(f"caskit: config error: {e}") from None
    except CaskitError as e:
        raise pytest.UsageError(f"caskit: cannot {'resume' if config.getoption('caskit_resume') else 'prepare'} "
                                f"the run: {e}") from None
    config.stash[RUN] = run
    config.pluginmanager.register(Progress(config, len(run.record["cells"])), "caskit-progress")
    tw.line(f"caskit: run {run_id}: {len(run.record['cells'])} cells -> {out}")


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node):
    """xdist: a worker parses the original command line again, so what the controller resolved
    (the history URL, from --db, $CASKIT_DB or the default) must be handed over explicitly."""
    run = node.config.stash.get(RUN, None)
    if run is not None and run.opts.history_url:
        node.workerinput["caskit_db"] = run.opts.history_url


def pytest_generate_tests(metafunc):
    if "caskit_cell" not in metafunc.fixturenames:
        return
    run = metafunc.config.stash.get(RUN, None)
    if run is None:
        raise pytest.UsageError("caskit cells need --caskit-matrix")
    cells = run.cells()
    metafunc.parametrize("caskit_cell", cells, ids=[c.id for c in cells], indirect=True)


class CellError(InfraError):
    """Raised in the fixture so pytest counts the cell as an error, not a failure."""


@pytest.fixture
def caskit_cell(request):
    run = request.config.stash[RUN]
    cell: Cell = request.param
    record = runmod.run_one(run, cell)
    request.node.user_properties.append(("caskit_verdict", record["verdict"]))
    if record.get("rerun_because") and record.get("run_id") == run.id:  # a --resume that could not keep it
        request.node.user_properties.append(("caskit_rerun_because", record["rerun_because"]))
    request.node.user_properties.append(("caskit_mode", str(record["observed"].get("mode"))))
    if record["verdict"] == Verdict.SKIP.value:
        pytest.skip(record["reason"])
    if record["verdict"] == Verdict.ERROR.value:
        raise CellError(f"ERROR: {record['reason']} (logs: {run.store.cell_dir(cell.id)})")
    return record


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


class Progress:
    """The controller's one progress line. On a terminal it rewrites itself (FAIL and ERROR
    cells keep a line of their own above it); in a CI log (not a TTY) it is a plain line per
    finished cell. Cells report through it, not through pytest's "." and "x"."""

    def __init__(self, config, total: int):
        self.config, self.total = config, total
        self.t0, self.done, self.counts = time.monotonic(), 0, {}

    @pytest.hookimpl(wrapper=True)
    def pytest_report_teststatus(self, report, config):
        res = yield
        if res and "test_cell[" in report.nodeid:
            return res[0], "", ""  # the category is kept (pytest's closing counts), the letter goes
        return res

    def pytest_runtest_logreport(self, report):
        props = dict(report.user_properties)
        verdict = props.get("caskit_verdict")
        if report.when != "teardown" or verdict is None:
            return
        self.done += 1
        self.counts[verdict] = self.counts.get(verdict, 0) + 1
        cell = report.nodeid.split("[", 1)[-1].rstrip("]")
        line = progress_line(self.done, self.total, self.counts, time.monotonic() - self.t0, verdict, cell)
        tw = self.config.get_terminal_writer()
        notes = [f"caskit: rerunning {cell}: {why}"] if (why := props.get("caskit_rerun_because")) else []
        reporter = self.config.pluginmanager.get_plugin("terminalreporter")
        if not (reporter is not None and bool(reporter.isatty)):
            for n in notes + [line]:
                tw.line(n)
            return
        if verdict in ("FAIL", "ERROR"):
            notes.append(f"caskit: {verdict} {cell}")
        for n in notes:
            tw.write("\r\x1b[K" + n + "\n")
        tw.write("\r\x1b[K" + line[:max(20, tw.fullwidth - 1)], flush=True)


def pytest_sessionfinish(session, exitstatus):
    config = session.config
    run = config.stash.get(RUN, None)
    if run is None or hasattr(config, "workerinput"):
        return
    tw = config.get_terminal_writer()
    results = runmod.finish(run, log=tw.line)
    if exitstatus not in (pytest.ExitCode.INTERRUPTED, pytest.ExitCode.INTERNAL_ERROR, pytest.ExitCode.USAGE_ERROR):
        # `pytest --caskit-matrix` ends with caskit's own exit status (results.run_exit_status),
        # the one `caskit run`, `caskit report` and `caskit history --run` give for the same run.
        session.exitstatus = run_exit_status(results)
    tw.line()
    tw.line("caskit: " + ", ".join(f"{k} {v}" for k, v in results["summary"].items() if v)
            + f" -> {run.opts.out}/report.html", bold=True)
