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
