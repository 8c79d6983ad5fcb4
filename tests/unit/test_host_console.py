"""GuestMachine.host_console: an emulated host's own console (logged on the controller) as far as
one guest's life goes, where a wedged L1's kernel says what happened when SSH no longer answers."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from harness import guestlog
from harness.machine import GuestMachine, MachineFiles

# Measured: an L1 powernv9 (QEMU 10.0.2 TCG) whose CPU 1 locked up running an L2's vCPU thread.
LOCKUP = ("[ 1516.226724] watchdog: CPU 0 detected hard LOCKUP on other CPUs 1\n"
          "[ 1516.231903] watchdog: CPU 0 TB:778535831470, last SMP heartbeat TB:770360419229 (15967ms ago)\n")


@dataclass
class L1View:
    console_log: Path | None
    name: str = "pnv"


def test_only_what_the_host_said_since_the_guest_started_counts(tmp_path):
    log = tmp_path / "console.log"
    log.write_text("[   99.0] watchdog: BUG: soft lockup - CPU#0 stuck for 23s! [an older guest]\n")
    m = GuestMachine(L1View(log), ["qemu"], MachineFiles(tmp_path / "cell", tmp_path / "sock"))
    m.host_console_from = log.stat().st_size  # as launch() records it
    assert m.host_console() == []
    with open(log, "a") as f:
        f.write(LOCKUP)
    lines = m.host_console()
    assert lines == LOCKUP.splitlines()
    assert [f["kind"] for f in guestlog.findings(lines)] == ["hard-lockup"]


def test_a_host_without_a_console_log_or_an_unreadable_one(tmp_path):
    assert GuestMachine(L1View(None), ["qemu"], MachineFiles(tmp_path, tmp_path)).host_console() == []
    m = GuestMachine(L1View(tmp_path / "gone.log"), ["qemu"], MachineFiles(tmp_path, tmp_path))
    (line,) = m.host_console()
    assert line.startswith("(cannot read") and "gone.log" in line
