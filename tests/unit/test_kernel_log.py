"""harness/guestlog.py: one real kernel line per finding kind (as Linux 6.1 prints them on
powerpc), warnings recorded apart, and how far a boot got from its console."""

from __future__ import annotations

import pytest

from harness import guestlog
from harness.guestlog import FINDINGS

# Each line is the kernel's own wording (format strings of kernel/panic.c, kernel/watchdog.c,
# arch/powerpc/kernel/watchdog.c, kernel/rcu/tree_stall.h, kernel/workqueue.c,
# kernel/hung_task.c, mm/oom_kill.c, arch/powerpc/kernel/traps.c and fault.c, lib/bug.c).
REAL = [
    ("[   31.100000] Kernel panic - not syncing: Attempted to kill init! exitcode=0x0000000b", "panic"),
    ("[   31.1] Kernel panic - not syncing: System is deadlocked on memory", "deadlocked-on-memory"),
    ("[    1.0] Kernel panic - not syncing: Attempted to kill the idle task!", "kill-idle-task"),
    ("[   40.2] watchdog: BUG: soft lockup - CPU#1 stuck for 22s! [swapper/1:0]", "soft-lockup"),
    ("[   12.0] watchdog: CPU 0 detected hard LOCKUP on other CPUs 1", "hard-lockup"),
    ("[   12.5] watchdog: CPU 1 self-detected hard LOCKUP @ plpar_hcall_norets_notrace+0x18/0x2c", "hard-lockup"),
    ("[   50.0] rcu: INFO: rcu_sched self-detected stall on CPU", "rcu-stall"),
    ("[   50.0] rcu: INFO: rcu_sched detected stalls on CPUs/tasks:", "rcu-stall"),
    ("[   61.0] BUG: workqueue lockup - pool cpus=1 node=0 flags=0x0 nice=0 stuck for 35s!", "workqueue-lockup"),
    ("[  243.0] INFO: task kworker/u4:2:57 blocked for more than 120 seconds.", "hung-task"),
    ("[    9.9] Oops: Kernel access of bad area, sig: 11 [#1]", "oops"),
    ("[    9.8] BUG: Unable to handle kernel data access on read at 0x00000008", "bug"),
    ("[    7.0] BUG: scheduling while atomic: swapper/1/0/0x00000002", "bug"),
    ("[    8.0] kernel BUG at mm/slub.c:382!", "bug"),
]


@pytest.mark.parametrize("line,kind", REAL, ids=[k + str(i) for i, (_, k) in enumerate(REAL)])
def test_each_finding_kind_from_a_real_kernel_line(line, kind):
    assert guestlog.findings([line]) == [{"kind": kind, "line": line}]


def test_every_kind_has_a_real_line():
    assert {k for k, _ in FINDINGS} == {k for _, k in REAL}


def test_a_soft_lockup_is_not_a_plain_bug():
    # Named by the watchdog as "BUG:", it is still a soft lockup, so an entry can name it.
    (f,) = guestlog.findings(["watchdog: BUG: soft lockup - CPU#0 stuck for 26s! [sh:1]"])
    assert f["kind"] == "soft-lockup"


def test_warnings_are_recorded_not_findings():
    line = ("[    3.1] WARNING: CPU: 1 PID: 0 at arch/powerpc/sysdev/xive/common.c:1321 "
            "xive_irq_eoi+0x4c/0x90")
    assert guestlog.findings([line]) == []
    assert guestlog.warnings([line, "[ 1.0] xive: Using 64kB queues"]) == [line]


def test_ordinary_boot_lines_are_quiet():
    boot = ["[    0.000000] Linux version 6.1.0-50-powerpc64le", "[ 0.306] nvram: Failed to find or create "
            "ibm,rtas-log partition, err -28", "[ 1.833] Run /init as init process", "[ 0.3] xive: Using IRQ "
            "range [0-1]", "[ 0.1] rcu: Hierarchical RCU implementation."]
    assert guestlog.findings(boot) == [] and guestlog.warnings(boot) == []


@pytest.mark.parametrize("console,stage", [
    ("", ("silent", None)),
    ("\r\n", ("silent", None)),
    ("SLOF **********************************************************************\r\nQEMU Starting\r\n",
     ("firmware", None)),
    ("[    0.000000] Linux version 6.1.0-50-powerpc64le (debian-kernel@lists.debian.org)\r\n", ("kernel", None)),
    ("[    0.0] Linux version 6.1\r\n[    1.8] Run /init as init process\r\n", ("init", "/init")),
    ("[    1.8] Run /bin/sh as init process\r\n", ("init", "/bin/sh")),
    ("\rLinux ppc64le\r\n#1 SMP Debian 6.", ("kernel", None)),
])
def test_boot_stage_from_the_console(console, stage):
    assert guestlog.boot_stage(console) == stage


class _Console:
    """The two things kernel_log reads of a console: the boot it saw, and a command's answer."""

    def __init__(self, boot_text, answers):
        self.boot_text, self.answers, self.sent = boot_text, answers, []

    def run(self, command, timeout):
        from harness.console import CommandResult

        self.sent.append(command)
        if command not in self.answers:  # as the guest's shell answers an unknown command
            return CommandResult(command, 127, f"sh: {command}: not found")
        return CommandResult(command, 0, self.answers[command])


class _Machine:
    def __init__(self, console):
        self.console, self.heartbeat = console, None


BOOT_WARNING = "[    0.52] WARNING: CPU: 0 PID: 1 at arch/powerpc/sysdev/xive/spapr.c:612 xive_spapr_init+0x2c/0x3d0"
LATE_LOCKUP = "[   40.2] watchdog: BUG: soft lockup - CPU#1 stuck for 22s! [swapper/1:0]"


def test_the_log_is_the_boot_the_console_showed_plus_what_came_after():
    from harness.cellrun import kernel_log

    c = _Console(f"VOF\r\n[    0.0] Linux version 6.1\r\n{BOOT_WARNING}\r\n", {"ck-kmsg": LATE_LOCKUP})
    findings, warnings = kernel_log(_Machine(c), 30)
    assert c.sent == ["ck-kmsg"]
    assert [f["kind"] for f in findings] == ["soft-lockup"] and warnings == [BOOT_WARNING.strip()]


@pytest.mark.parametrize("boot_text", [None, "[ 1.0] ** 12 printk messages dropped **\r\n"])
def test_the_whole_dmesg_where_the_console_did_not_see_the_whole_boot(boot_text):
    from harness.cellrun import kernel_log

    c = _Console(boot_text, {"dmesg": f"{BOOT_WARNING}\n{LATE_LOCKUP}"})
    findings, warnings = kernel_log(_Machine(c), 30)
    assert c.sent == ["dmesg"] and len(findings) == 1 and len(warnings) == 1


def test_an_initramfs_without_ck_kmsg_gets_the_whole_dmesg():
    from harness.cellrun import kernel_log

    c = _Console("[    0.0] Linux version 6.1\r\n", {"dmesg": f"{BOOT_WARNING}\n{LATE_LOCKUP}"})
    findings, warnings = kernel_log(_Machine(c), 30)
    assert c.sent == ["ck-kmsg", "dmesg"] and len(findings) == 1 and len(warnings) == 1
