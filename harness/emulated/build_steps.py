"""The steps the kernel and QEMU builds share: a command with its output in a log file, and a
long compile with a progress line every PROGRESS_EVERY_S seconds. Both raise KitError with the
log's tail: a build that cannot be made is the kit's error, never a verdict."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Callable

from ..errors import KitError

PROGRESS_EVERY_S = 30.0


def run_logged(argv: list[str], log_file: Path, what: str, cwd: Path | None = None) -> None:
    """argv, its output appended to log_file (several patches share one log)."""
    with open(log_file, "ab") as f:
        p = subprocess.run(argv, stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=cwd)
    if p.returncode != 0:
        raise KitError(f"{what} failed (exit {p.returncode}): {log_tail(log_file)}")


def log_tail(f: Path, n: int = 12) -> str:
    try:
        return " | ".join(f.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return "(no log)"


def run_with_progress(argv: list[str], log_file: Path, what: str, log, seen: Callable[[bytes], None],
                      progress: Callable[[float], str]) -> None:
    """argv, its output to log_file; every line goes to `seen` (the build's own count of its
    steps), and every PROGRESS_EVERY_S seconds `progress(elapsed)` is logged. `what` names the
    build in the error."""
    t0 = time.monotonic()
    with open(log_file, "wb") as f:
        # Its own process group: an interrupted build stops every compiler it started.
        p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                             start_new_session=True)
        assert p.stdout is not None
        next_say = t0 + PROGRESS_EVERY_S
        try:
            for line in p.stdout:  # the build's own output paces this loop: no polling
                f.write(line)
                seen(line)
                if (now := time.monotonic()) >= next_say:
                    log(progress(now - t0))
                    next_say = now + PROGRESS_EVERY_S
        finally:
            if p.poll() is None:  # interrupted: no build tool or compiler left behind
                os.killpg(p.pid, signal.SIGKILL)
            rc = p.wait()
    if rc != 0:
        raise KitError(f"{what} failed ({Path(argv[0]).name} exit {rc}): {log_tail(log_file)}")
