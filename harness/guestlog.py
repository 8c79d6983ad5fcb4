"""What the guest kernel's log says: findings that mean the guest is not well, warnings worth a
look, and how far a boot got. Pure.

Order matters: the first pattern that matches a line names it, so the specific patterns come
before the generic ones ("watchdog: BUG: soft lockup" is a soft lockup, not a plain `BUG:`).
"""

from __future__ import annotations

import re

# (kind, pattern): a line matching one of these makes the cell FAIL, quoted in the results.
FINDINGS = (
    ("deadlocked-on-memory", re.compile(r"deadlocked on memory")),
    ("kill-idle-task", re.compile(r"Attempted to kill the idle task")),
    ("panic", re.compile(r"Kernel panic - not syncing")),
    ("soft-lockup", re.compile(r"soft lockup", re.I)),
    ("hard-lockup", re.compile(r"hard LOCKUP", re.I)),
    ("rcu-stall", re.compile(r"rcu.*(detected stalls|self-detected stall)", re.I)),
    ("workqueue-lockup", re.compile(r"BUG: workqueue lockup")),
    ("hung-task", re.compile(r"INFO: task \S+ blocked for more than \d+ seconds")),
    ("oops", re.compile(r"\bOops\b")),
    ("bug", re.compile(r"\bBUG:|kernel BUG at ")),
)
# Recorded in the cell and shown in the report, never a verdict on their own: a WARN_ON is a
# kernel developer's "this should not happen", not proof the guest is broken.
WARNING = re.compile(r"\bWARNING: (CPU: \d+ PID: \d+ at |.*\bat \S+:\d+)")

# Lines a host kernel (an L1) logs for every L2 it runs that say nothing of the L2's health:
# classified in the host's health, never a finding of the guest's. Measured on caskit's
# nested-papr host (Debian's 6.12 kvm_hv on QEMU 10.0's cap-nested-papr L0), 2026-12-07: both
# come with every L2 start, whatever became of the L2.
HOST_NOISE = (
    ("nestedv2-l2-vpa", re.compile(r"KVM-NESTEDv2: couldn't register the L2 VPA"),
     "the L0 refuses the L2's VPA registration (rc -56); the L2 runs without it"),
    ("tlb-lpid-invalidation", re.compile(r"KVM: TLB LPID invalidation hcall failed"),
     "the L0 has no H_TLB_INVALIDATE for the LPID (rc -2, H_PARAMETER); kvm_hv falls back"),
)


def host_noise(lines: list[str]) -> list[dict]:
    """The host kernel's lines of known noise, by kind with a count and why (pure)."""
    counts: dict[str, int] = {}
    for line in lines:
        for name, rx, _ in HOST_NOISE:
            if rx.search(line):
                counts[name] = counts.get(name, 0) + 1
                break
    return [{"kind": n, "count": counts[n], "why": why} for n, _, why in HOST_NOISE if n in counts]


# A timestamped kernel line as printk puts it on the console ("[    1.833722] ...").
KERNEL_LINE = re.compile(r"^\[\s*\d+\.\d+\] ", re.M)
RUN_INIT = re.compile(r"Run (\S+) as init process")


def findings(lines: list[str]) -> list[dict]:
    out = []
    for line in lines:
        for name, rx in FINDINGS:
            if rx.search(line):
                out.append({"kind": name, "line": line.strip()[:300]})
                break
    return out


def warnings(lines: list[str]) -> list[str]:
    return [line.strip()[:300] for line in lines if WARNING.search(line)]


def unique(items: list) -> list:
    """In order, each once (the same line can come from dmesg and from the heartbeat relay)."""
    seen, out = set(), []
    for x in items:
        key = repr(x)
        if key not in seen:
            seen.add(key)
            out.append(x)
    return out


def boot_stage(console: str) -> tuple[str, str | None]:
    """How far a boot got, from what its console showed:

    - ("silent", None): nothing at all (the firmware never ran, or the console is not ours);
    - ("firmware", None): output, but no kernel line;
    - ("kernel", None): the kernel printed (its timestamped lines);
    - ("init", PATH): the kernel started PATH as the first user process.
    """
    text = console.replace("\r", "")
    runs = RUN_INIT.findall(text)
    if runs:
        return "init", runs[-1]
    # "Linux ppc64le" is printed by the kernel's early setup whatever the log level.
    if KERNEL_LINE.search(text) or "Linux version" in text or re.search(r"^Linux ppc64", text, re.M):
        return "kernel", None
    if text.strip():
        return "firmware", None
    return "silent", None
