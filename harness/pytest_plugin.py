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
        return
    try:
        p = prepare.load_plan(config.getoption("caskit_matrix"), config.getoption("caskit_hosts"),
                         config.getoption("caskit_known_issues"))
    except ConfigError as e:
        raise pytest.UsageError(str(e)) from None
    run_id = config.getoption("caskit_run_id") or prepare.new_run_id()
    out = Path(config.getoption("caskit_out") or prepare.reports_dir() / run_id).resolve()
    config.option.caskit_out = str(out)  # xdist hands the controller's options to its workers
    config.option.caskit_run_id = run_id
    tw = config.get_terminal_writer()
    try:
        run = prepare.prepare_run(p, out, run_id, log=lambda m: tw.line(m),
                              known_issues_file=config.getoption("caskit_known_issues"))
    except CaskitError as e:
        raise pytest.UsageError(f"caskit: cannot prepare the run: {e}") from None
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
    from .hosts import make_host
    from .results import RunStore
    from .prepare import kit_from_run
    from . import resume

    cell: Cell = request.param
    st = request.config.stash[KEY]
    run, store = st["run"], RunStore(st["out"])
    record = store.read_cell(cell.id) if request.config.getoption("caskit_resume") else None
    # --resume keeps a finished cell only while its kit, QEMU build and expected outcome are
    # those of this run (harness/resume.py); otherwise it runs again and says why.
    rerun = resume.rerun_because(record, resume.current(cell, run)) if record is not None else None
    if rerun:
        shutil.rmtree(store.cell_dir(cell.id), ignore_errors=True)  # no log of the old result may pass for the new
    if record is None or rerun:
        specs = load_hosts(request.config.getoption("caskit_hosts"))
        worker = getattr(request.config, "workerinput", {}).get("workerid", "main")
        from .migration import known_issues
        from .cell_machines import Site
        kit = kit_from_run(run)
        peer = None
        if cell.peer:
            peer_host, peer_build = cell.peer
            build = HostFacts.from_dict(run["hosts"][peer_host]).build(peer_build)
            assert build is not None, f"run.json has no probed build {peer_build} on {peer_host}"
            peer = Site(make_host(specs[peer_host]), build, kit,
                        HostFacts.from_dict(run["hosts"][peer_host]).guest_machine_options)
        facts = HostFacts.from_dict(run["hosts"][cell.host])
        try:
            host = make_host(specs[cell.host])
        except CaskitError as e:  # gone since the probe (an emulated host stopped, say): ERROR, recorded
            from dataclasses import replace
            facts, host = replace(facts, error=str(e)), None
        ctx = CellContext(cell, facts, host, kit,
                          store, run["id"], {**TIMEOUT_KEYS, **run["timeouts"]}, worker,
                          known_issues.load(Path(run["known_issues_file"]) if run.get("known_issues_file") else None),
                          run.get("migration_max_bandwidth"), peer,
                          {name: s.migration_address for name, s in specs.items()},
                          kit_error=run["kit"].get("error"))
        record = run_cell(ctx)
        if rerun:
            record["rerun_because"] = rerun
            store.write_cell(record)
            request.node.user_properties.append(("caskit_rerun_because", rerun))
    request.node.user_properties.append(("caskit_verdict", record["verdict"]))
    request.node.user_properties.append(("caskit_mode", str(record["observed"].get("mode"))))
    if record["verdict"] == Verdict.SKIP.value:
        pytest.skip(record["reason"])
    if record["verdict"] == Verdict.ERROR.value:
        raise CellError(f"ERROR: {record['reason']} (logs: {store.cell_dir(cell.id)})")
    return record


class CellError(InfraError):
    """Raised in the fixture so pytest counts the cell as an error, not a failure."""


def pytest_runtest_logreport(report):
    """Progress on the controller: one line per finished cell, with counts and elapsed time."""
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
    total = len(st["run"]["cell_order"])
    counts = " ".join(f"{k} {v}" for k, v in sorted(st["counts"].items()))
    cell = report.nodeid.split("[", 1)[-1].rstrip("]")
    tw = config.get_terminal_writer()
    tw.line()
    if why := dict(report.user_properties).get("caskit_rerun_because"):  # a --resume that could not keep it
        tw.line(f"caskit: rerunning {cell}: {why}")
    tw.line(f"caskit [{st['done']}/{total}] {verdict:5} {cell}  | {counts} | {time.monotonic() - st['t0']:.0f}s")


def _kill_tagged_remote(config, run: dict) -> list[int]:
    """Leftovers of this run on the SSH hosts it used (a worker that died mid-cell)."""
    from .config import load_hosts
    from .hosts import make_host

    killed: list[int] = []
    specs = load_hosts(config.getoption("caskit_hosts"))
    for name in run["hosts"]:
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
        from .hosts import emulated
        try:
            config.get_terminal_writer().line(f"caskit: stopping emulated host {name}: {emulated.down(name)}")
        except Exception as e:  # stopping must never cost the run its results
            config.get_terminal_writer().line(f"caskit: cannot stop emulated host {name}: {e!r}")
    store = RunStore(st["out"])
    results = store.assemble(run["cell_order"], {"end": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                                                "leftover_qemu_killed": killed})
    write_reports(st["out"], results)
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
