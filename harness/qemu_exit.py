"""What the end of a QEMU process means, from its exit status and its stderr. Pure.

QEMU is part of the system under test (users validate QEMU patches with caskit), so a QEMU that
dies of its own fault is FAIL; one killed from outside is ERROR. The words QEMU uses:
- a configuration or guest request it refuses: `qemu-system-ppc64: <why>` on stderr, exit 1;
- SIGTERM, SIGINT and SIGHUP are caught: "terminating on signal 15 from pid N", then exit 0;
- an assertion or abort(): SIGABRT; a bad pointer: SIGSEGV.
"""

from __future__ import annotations

import re
import signal

from .errors import CaskitError, GuestPoweredOff, HostError, QemuCrashed, QemuKilled, QemuRefused

ERROR_LINE = re.compile(r"^qemu-system-\w+: (?!warning:)(?!terminating on signal)(.+)$", re.M)
TERMINATED = re.compile(r"terminating on signal (\d+)(?: from pid (\d+))?")
# Signals someone else sends to stop a process (an operator, a timeout, the OOM killer).
FROM_OUTSIDE = {signal.SIGKILL, signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT}


WARNING_LINE = re.compile(r"^qemu-system-\w+: warning: (.+)$", re.M)


def warning_lines(stderr: str) -> list[str]:
    """QEMU's warnings, each once, in order."""
    return list(dict.fromkeys(w.strip() for w in WARNING_LINE.findall(stderr or "")))


def error_lines(stderr: str) -> str | None:
    """QEMU's own error line(s), without its warnings."""
    lines = ERROR_LINE.findall(stderr or "")
    return "; ".join(line.strip() for line in lines) if lines else None


def signal_name(n: int) -> str:
    try:
        return signal.Signals(n).name
    except ValueError:
        return f"signal {n}"


def cause(code: int | None, stderr: str, *, dropped: bool = False, host: str = "") -> CaskitError:
    """The exception that says why QEMU ended with `code` (negative: killed by that signal)."""
    where = f" on {host}" if host else ""
    if dropped:
        return HostError(f"lost the connection to host {host} while QEMU ran there")
    if code is None:
        return HostError(f"QEMU{where}: no exit status")
    tail = (stderr or "").strip()[-1500:]
    if code < 0:
        sig = -code
        name = signal_name(sig)
        if sig in FROM_OUTSIDE:
            return QemuKilled(f"QEMU{where} was killed from outside ({name})", code, tail)
        return QemuCrashed(f"QEMU{where} crashed ({name})" + (f": {error_lines(stderr)}" if error_lines(stderr) else ""),
                           code, tail)
    term = TERMINATED.search(stderr or "")
    if term:
        sig = int(term.group(1))
        by = f" by pid {term.group(2)}" if term.group(2) else ""
        return QemuKilled(f"QEMU{where} was stopped from outside ({signal_name(sig)}{by})", code, tail)
    line = error_lines(stderr)
    if code == 1 and line:
        return QemuRefused(line, code, tail)
    if code == 0:
        return GuestPoweredOff(f"QEMU{where} exited 0 on its own: the guest turned the machine off")
    return QemuCrashed(f"QEMU{where} exited {code}" + (f": {line}" if line else " without saying why"), code, tail)
