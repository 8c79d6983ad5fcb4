"""What a killed run leaves running, found and stopped by PID when `--resume` takes over its
directory.

Every process of a run records itself in `<out>/procs/<role>.json` (the controller, and each
xdist worker) with its PID and kernel start time, so a PID the kernel gave to someone else
since is never taken for ours. A resumed run, before anything of its own starts:
1. refuses while the old controller still lives (two controllers in one directory would
   overwrite each other's cells; stop it first or resume later);
2. SIGKILLs the old run's workers that outlived their controller (a worker orphaned by a
   SIGKILL of the controller alone finishes its cell and writes into the directory the
   resumed run now owns), and waits until they are gone;
3. then stops the old run's QEMUs, found by their run tag `caskit:<run-id>:` (`-name`), here
   and on the run's SSH hosts (their own process tables), and waits until none is left.
Workers go before QEMUs so that no worker can start another guest after the sweep.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import time
from pathlib import Path
from typing import Callable

from .errors import CaskitError

PROCS_DIR = "procs"
GONE_TIMEOUT_S = 15.0  # a SIGKILLed process is gone in milliseconds; QEMU's exit flushes nothing


def start_ticks(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (/proc/PID/stat field 22); None: gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: split after its last ')'.
    fields = stat[stat.rindex(")") + 2:].split()
    if fields[0] == "Z":  # a zombie has ended; only its parent's wait() is missing
        return None
    return int(fields[19])


def register(out: Path, role: str) -> None:
    d = Path(out) / PROCS_DIR
    d.mkdir(parents=True, exist_ok=True)
    me = {"role": role, "pid": os.getpid(), "start": start_ticks(os.getpid()), "host": socket.gethostname()}
    tmp = d / f".{role}.json.tmp"
    tmp.write_text(json.dumps(me) + "\n")
    os.replace(tmp, d / f"{role}.json")


def recorded(out: Path) -> list[dict]:
    out_ = []
    for p in sorted((Path(out) / PROCS_DIR).glob("*.json")):
        try:
            out_.append(json.loads(p.read_text()))
        except (OSError, ValueError):
            continue  # half-written by a process killed at that instant: it had not started work
    return out_


def alive(entry: dict) -> bool:
    """Still the very process that registered (same machine, same PID, same start time)."""
    if entry.get("host") != socket.gethostname() or not isinstance(entry.get("pid"), int):
        return False
    return entry["pid"] != os.getpid() and start_ticks(entry["pid"]) == entry.get("start")


def wait_gone(pids: list[int], still_there: Callable[[int], bool], timeout: float = GONE_TIMEOUT_S) -> list[int]:
    """Poll until every PID has ended; returns those that have not within `timeout`. A killed
    process we are not the parent of leaves no event to wait on: the process table is the
    only witness."""
    deadline = time.monotonic() + timeout
    left = [p for p in pids if still_there(p)]
    while left and time.monotonic() < deadline:
        time.sleep(0.05)
        left = [p for p in left if still_there(p)]
    return left


def stop_dead_run(out: Path, old_run_id: str, kill_local_tagged: Callable[[str], list[int]],
                  tagged_left: Callable[[str], list[int]], kill_remote: Callable[[str], list[int]] = lambda tag: [],
                  log: Callable[[str], None] = print) -> dict:
    """Stop what the run that wrote `out` left running; see the module's doc. Returns what it
    stopped: {"run": id, "workers": [pids], "qemu": [pids], "remote_qemu": [pids]}."""
    entries = recorded(out)
    live_controller = [e for e in entries if e.get("role") == "controller" and alive(e)]
    if live_controller:
        e = live_controller[0]
        raise CaskitError(f"run {old_run_id} in {out} is still running (controller pid {e['pid']}): "
                          "stop it before resuming, or resume once it has ended")
    foreign = [e for e in entries if e.get("host") != socket.gethostname()]
    if foreign:  # an xdist worker on another machine (--tx ssh=...): its QEMUs carry the tag, it does not
        log(f"caskit: run {old_run_id} had processes on other machines ({', '.join(sorted({e['host'] for e in foreign}))}); "
            "only their QEMUs can be stopped from here")
    workers = []
    for e in entries:
        if e.get("role") != "controller" and alive(e):
            try:
                os.kill(e["pid"], signal.SIGKILL)
                workers.append(e["pid"])
            except ProcessLookupError:
                pass
    by_pid = {e["pid"]: e for e in entries}
    stuck = wait_gone(workers, lambda p: start_ticks(p) == by_pid[p].get("start"))
    if stuck:
        raise CaskitError(f"run {old_run_id}: worker(s) {stuck} still alive {GONE_TIMEOUT_S:.0f} s after SIGKILL")
    tag = f"caskit:{old_run_id}:"
    qemu = kill_local_tagged(tag)
    stuck = wait_gone(qemu, lambda p: p in tagged_left(tag))
    if stuck:
        raise CaskitError(f"run {old_run_id}: QEMU process(es) {stuck} still alive {GONE_TIMEOUT_S:.0f} s after SIGKILL")
    remote = kill_remote(tag)
    for p in (Path(out) / PROCS_DIR).glob("*.json"):
        p.unlink(missing_ok=True)
    if workers or qemu or remote:
        log(f"caskit: run {old_run_id} left processes running; stopped by PID: "
            + "; ".join(x for x in (f"workers {workers}" if workers else "", f"QEMU {qemu}" if qemu else "",
                                    f"remote QEMU {remote}" if remote else "") if x))
    return {"run": old_run_id, "workers": workers, "qemu": qemu, "remote_qemu": remote}
