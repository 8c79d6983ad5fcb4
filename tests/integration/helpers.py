"""Helpers for tests that boot real guests."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from harness.hosts import tagged_pids


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is gone for our purposes only once reaped; check its state.
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split()[2]
    except OSError:
        return False
    return state != "Z"


def booted_l1(kind: str):
    """A module fixture's body: caskit's emulated host of `kind` booted from its own image (one a
    crashed earlier run left stopped first, by its PID), yielded as (host, state), and stopped by
    PID after. CASKIT_IT_HOST_PREFIX names it other than it-KIND (two checkouts on one machine)."""
    from harness.emulated import host as emulated, image as l1image

    log = lambda m: print(m, file=sys.stderr)  # noqa: E731
    name = f"{os.environ.get('CASKIT_IT_HOST_PREFIX', 'it-')}{kind}"
    emulated.down(name, log=lambda m: None)
    h = emulated.EmulatedHost(name, kind)
    st = h.up(l1image.build(log=log, **h.kind.image_recipe), timeout=240, log=log)
    yield h, st
    h.down(log=lambda m: None)
    assert not pid_alive(st.pid), f"L1 {name} (pid {st.pid}) still running"


def assert_no_qemu_left(run_id: str) -> None:
    left = tagged_pids(f"caskit:{run_id}:")
    assert left == [], f"QEMU processes of run {run_id} still running: {left}"


def _name_of(pid: int) -> str | None:
    """The `-name` a process was started with."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return None
    return next((argv[i + 1].decode(errors="replace") for i, a in enumerate(argv[:-1]) if a == b"-name"), None)


class KillWhen:
    """In a background thread: once a QEMU tagged `tag` runs and `ready()` holds, SIGKILL it by
    PID (after `delay` seconds). A context manager; `killed` lists what it killed. `exact`: the
    tag is the whole `-name` (a cell's first machine, whose destinations' tags extend it)."""

    def __init__(self, tag: str, ready, delay: float = 0.0, timeout: float = 120.0, sig: int = 9,
                 exact: bool = False):
        import threading

        self.tag, self.ready, self.delay, self.timeout, self.sig = tag, ready, delay, timeout, sig
        self.exact = exact
        self.killed: list[int] = []
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        import signal
        import time

        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            pids = [p for p in tagged_pids(self.tag) if not self.exact or _name_of(p) == self.tag]
            if pids and self.ready():
                time.sleep(self.delay)
                os.kill(pids[0], self.sig or signal.SIGKILL)
                self.killed.append(pids[0])
                return
            time.sleep(0.02)  # polling the process table: there is no event to wait on

    def __enter__(self) -> "KillWhen":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._thread.join()


def assert_every_view_agrees(out: Path, run_id: str, db_url: str, rc: int) -> dict[str, str]:
    """`caskit report` (its exit status and its CSV export), `caskit history --run` and `caskit
    diff` of the run against itself say what the command that made the run said (its exit status
    `rc`) about every planned cell: the same verdicts, the same not-run cells, the same status;
    and its KCIDB export is valid and maps each of them (not run: MISS).
    Returns the verdicts, by cell id."""
    import csv
    import io
    import json

    from conftest import run_cli

    results = json.loads((out / "results.json").read_text())
    verdicts = {c["id"]: c["verdict"] for c in results["cells"]}
    missing = {c["id"] for c in results["cells"] if c.get("not_run")}
    assert [c["id"] for c in results["cells"]] == json.loads((out / "run.json").read_text())["cell_order"]

    rep = run_cli(["report", str(out)])
    assert rep.rc == rc, ("report", rep.rc, rc, rep.stdout[-1500:], rep.stderr[-1500:])
    rows = list(csv.DictReader(io.StringIO(run_cli(["report", str(out), "--format", "csv"]).stdout)))
    assert {r["id"]: r["verdict"] for r in rows} == verdicts

    hist = run_cli(["history", "--db", db_url, "--run", run_id, "--json"])
    assert hist.rc == rc, ("history", hist.rc, rc, hist.stdout[-1500:], hist.stderr[-1500:])
    listed = json.loads(hist.stdout)
    assert {c["id"]: c["verdict"] for c in listed} == verdicts
    assert {c["id"] for c in listed if c["not_run"]} == missing

    # Against itself the gate sees only what the run never reported: a partial run gates red.
    d = run_cli(["diff", run_id, run_id, "--db", db_url, "--json"])
    gate = json.loads(d.stdout)
    assert d.rc == (1 if missing else 0), ("diff", d.rc, d.stdout[-1500:], d.stderr[-1500:])
    assert {e["cell"] for e in gate["regressions"]} == missing
    assert gate["compared"] == len(verdicts) - len(missing)
    assert {e["cell"] for e in gate["still_failing"]} == {i for i, v in verdicts.items()
                                                          if v in ("FAIL", "ERROR") and i not in missing}

    # KCIDB: valid by KCIDB's own library, one test per planned cell, the status each verdict maps to.
    from kcidb_io.schema import LATEST

    k = run_cli(["report", str(out), "--format", "kcidb", "--origin", "caskit_tests"])
    assert k.rc == 0, k.stderr
    data = json.loads(k.stdout)
    LATEST.validate_exactly(data)
    status = {"PASS": "PASS", "XFAIL": "PASS", "FAIL": "FAIL", "FLAKY": "FAIL", "ERROR": "ERROR", "SKIP": "SKIP"}
    tests = {t["misc"]["cell"]: t["status"] for t in data["tests"] if "workload" not in t["misc"]}
    assert tests == {i: "MISS" if i in missing else status[v] for i, v in verdicts.items()}
    return verdicts
