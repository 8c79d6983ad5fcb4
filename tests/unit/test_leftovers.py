"""harness/leftovers.py: what a resumed run stops of the run it takes over, by PID, with stand-in
processes (sleep) for the old run's controller, workers and QEMUs."""

from __future__ import annotations

import json
import os
import socket
import subprocess

import pytest

from harness import leftovers
from harness.errors import CaskitError


@pytest.fixture
def procs():
    started: list[subprocess.Popen] = []

    def spawn() -> subprocess.Popen:
        p = subprocess.Popen(["sleep", "300"])
        started.append(p)
        return p

    yield spawn
    for p in started:  # whatever a failed test left: by PID
        if p.poll() is None:
            p.kill()
        p.wait()


def record(out, role: str, pid: int, start=None, host=None) -> None:
    d = out / leftovers.PROCS_DIR
    d.mkdir(parents=True, exist_ok=True)
    (d / f"{role}.json").write_text(json.dumps({"role": role, "pid": pid, "host": host or socket.gethostname(),
                                                "start": leftovers.start_ticks(pid) if start is None else start}))


def test_register_records_this_process(tmp_path):
    leftovers.register(tmp_path, "gw0")
    (e,) = leftovers.recorded(tmp_path)
    assert e["pid"] == os.getpid() and e["start"] == leftovers.start_ticks(os.getpid())
    assert not leftovers.alive(e)  # never ourselves


def test_a_live_controller_is_never_resumed_over(tmp_path, procs):
    c = procs()
    record(tmp_path, "controller", c.pid)
    with pytest.raises(CaskitError, match=f"still running \\(controller pid {c.pid}\\)"):
        leftovers.stop_dead_run(tmp_path, "old", lambda t: [], lambda t: [])
    assert c.poll() is None


def test_orphaned_workers_then_tagged_qemus_are_stopped_and_awaited(tmp_path, procs):
    w, gone, reused, qemu = procs(), procs(), procs(), procs()
    record(tmp_path, "controller", 999999999, start=1)  # dead
    record(tmp_path, "gw0", w.pid)
    record(tmp_path, "gw1", reused.pid, start=1)  # the PID now belongs to someone else
    gone.kill()
    gone.wait()
    record(tmp_path, "gw2", gone.pid, start=0)
    order: list[str] = []

    def kill_tagged(tag):
        order.append(f"qemu {tag}")
        assert w.poll() is not None, "workers first: none may start a guest after the sweep"
        qemu.kill()
        return [qemu.pid]

    def tagged_left(tag):
        return [] if qemu.poll() is not None else [qemu.pid]

    out = leftovers.stop_dead_run(tmp_path, "old", kill_tagged, tagged_left, lambda tag: order.append("remote") or [7],
                                  log=order.append)
    assert out == {"run": "old", "workers": [w.pid], "qemu": [qemu.pid], "remote_qemu": [7]}
    assert w.returncode == -9 and reused.poll() is None
    assert order[:2] == ["qemu caskit:old:", "remote"] and "stopped by PID" in order[2]
    assert leftovers.recorded(tmp_path) == []  # the old run's records are spent


def test_start_ticks_of_a_zombie_or_missing_process_is_none(procs):
    p = procs()
    assert leftovers.start_ticks(p.pid) is not None
    p.kill()
    os.waitid(os.P_PID, p.pid, os.WEXITED | os.WNOWAIT)  # ended, not reaped: a zombie
    assert leftovers.start_ticks(p.pid) is None
    p.wait()
    assert leftovers.start_ticks(p.pid) is None
