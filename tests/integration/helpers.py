"""Helpers for tests that boot real guests."""

from __future__ import annotations

import os
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


def assert_no_qemu_left(run_id: str) -> None:
    left = tagged_pids(f"caskit:{run_id}:")
    assert left == [], f"QEMU processes of run {run_id} still running: {left}"


class KillWhen:
    """In a background thread: once a QEMU tagged `tag` runs and `ready()` holds, SIGKILL it by
    PID (after `delay` seconds). A context manager; `killed` lists what it killed."""

    def __init__(self, tag: str, ready, delay: float = 0.0, timeout: float = 120.0, sig: int = 9):
        import threading

        self.tag, self.ready, self.delay, self.timeout, self.sig = tag, ready, delay, timeout, sig
        self.killed: list[int] = []
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        import signal
        import time

        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            pids = tagged_pids(self.tag)
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
