"""What in a guest kernel's log means the guest is not well. Pure."""

from __future__ import annotations

import re

# Each: (name, pattern). A line matching any is a finding, quoted in the results.
FINDINGS = (
    ("panic", re.compile(r"Kernel panic - not syncing")),
    ("oops", re.compile(r"\bOops\b")),
    ("bug", re.compile(r"\bBUG:")),
    ("hard-lockup", re.compile(r"hard LOCKUP", re.I)),
    ("soft-lockup", re.compile(r"soft lockup", re.I)),
    ("rcu-stall", re.compile(r"rcu.*(detected stalls|self-detected stall)", re.I)),
    ("deadlocked-on-memory", re.compile(r"deadlocked on memory")),
    ("kill-idle-task", re.compile(r"Attempted to kill the idle task")),
)


def findings(lines: list[str]) -> list[dict]:
    out = []
    for line in lines:
        for name, rx in FINDINGS:
            if rx.search(line):
                out.append({"kind": name, "line": line.strip()[:300]})
                break
    return out
