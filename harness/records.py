"""What a cell produced, typed until it is stored: each workload's result, each migration hop's,
the migration's, and the cell's record around them. `verdict.decide` reads these (all of a cell's
evidence in one call); `to_dict()` is the one conversion, done when the record is written, and
every later reader (report, history, diff, flaky reruns, pools, reproducers) reads the stored form.
Pure data: nothing here runs anything."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field

from .cell import Verdict


@dataclass
class WorkloadResult:
    name: str
    verdict: str
    reason: str
    metrics: dict = field(default_factory=dict)
    excerpt: str | None = None
    duration_s: float = 0.0
    symptom: str | None = None  # what a FAIL saw (errors.WorkloadFailed.symptom), e.g. disk-data-corrupt

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class HopResult:
    """One migration hop and everything the guest and QEMU showed around it (migration/hop.py)."""

    name: str
    source: str
    destination: str
    uri: str
    source_host: str | None = None
    destination_host: str | None = None
    source_build: str | None = None  # "name version"
    destination_build: str | None = None
    qmp: dict = field(default_factory=dict)  # status, total-time, downtime, ram.transferred, error-desc
    destination_status: str | None = None  # query-status after the hop (recorded, never decides)
    liveness: dict = field(default_factory=dict)
    kernel_log: list[dict] = field(default_factory=list)
    mode_before: dict = field(default_factory=dict)
    mode_after: dict = field(default_factory=dict)
    progress: dict = field(default_factory=dict)
    destination_alive: bool | None = None
    source_alive: bool | None = None
    source_after: dict = field(default_factory=dict)  # a refused hop: the source guest's health after it
    harness_s: float | None = None  # from `migrate` to the destination resumed, as the harness saw it
    setup_s: float | None = None  # starting the destination QEMU, before the hop
    t_migrate: float | None = None  # host monotonic time `migrate` was sent
    window_s: float | None = None
    window_wall: list[float] = field(default_factory=list)  # [start, end] as time.time(), for audits
    problems: list[str] = field(default_factory=list)
    infra: list[str] = field(default_factory=list)
    symptoms: list[str] = field(default_factory=list)  # one per problem: what known issues match
    expected: str | None = None  # a mismatch hop: "refused" or "accepted", as the model predicts
    refusal: str | None = None  # a refused hop: the destination's own error line
    verdict: str = "PASS"
    known_issue: str | None = None
    unexplained: list[str] = field(default_factory=list)  # signals no known issue explains
    forensics: str | None = None  # the destination's view of a guest that stopped after the hop

    def flag(self, symptom: str, problem: str) -> None:
        """A failure signal: every problem carries the symptom a known issue must explain."""
        self.symptoms.append(symptom)
        self.problems.append(problem)

    def to_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass
class MigrationResult:
    """A cell's migration plan as it went: its hops, and the verdict known_issues.classify gave
    them (XFAIL only where every failing hop is wholly explained by an entry)."""

    plan: str
    window_s: float | None = None
    hops: list[dict] = field(default_factory=list)  # HopResult.to_dict(), as known_issues.classify annotates them
    verdict: Verdict = Verdict.ERROR
    reason: str = ""
    known_issues: list[str] = field(default_factory=list)
    no_longer_reproduces: list[str] = field(default_factory=list)
    peer: dict | None = None
    build: str | None = None

    def to_dict(self) -> dict:
        d = {"plan": self.plan, "window_s": self.window_s, "hops": self.hops, "verdict": self.verdict.value,
             "reason": self.reason, "known_issues": self.known_issues,
             "no_longer_reproduces": self.no_longer_reproduces}
        if self.peer is not None:
            d["peer"] = self.peer
        if self.build is not None:
            d["build"] = self.build
        return d


@dataclass
class CellRecord:
    """One attempt at a cell, as `cellrun.run_cell` ends it: the cell, the prediction, what was
    observed, the evidence besides (workloads, migration) and the verdict `verdict.decide` took
    from all of it. `to_dict()` is what results.json and the history store."""

    cell: dict  # Cell.to_dict(): id, host, axes, workloads, migration plan, append, ...
    expected: dict
    observed: dict
    verdict: Verdict
    reason: str
    duration_s: float
    started_s: float  # epoch seconds: when a slot was in use, to the millisecond
    qemu_version: str | None
    kit: str | None
    worker: str
    run_id: str  # the run that executed it: a --resume keeps it under a new run's id
    logs: dict[str, str]
    workloads: list[WorkloadResult] = field(default_factory=list)
    migration: MigrationResult | None = None

    def to_dict(self) -> dict:
        return {
            **self.cell,
            "expected": self.expected,
            "observed": self.observed,
            "verdict": self.verdict.value,
            "reason": self.reason,
            "duration_s": round(self.duration_s, 3),
            "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.started_s)),
            "started_s": round(self.started_s, 3),
            "qemu_version": self.qemu_version,
            "kit": self.kit,
            "worker": self.worker,
            "run_id": self.run_id,
            "logs": self.logs,
            "workloads": [w.to_dict() for w in self.workloads],
            "migration": self.migration.to_dict() if self.migration else None,
        }


def known_issues_of(record: dict) -> list[str]:
    """Every known issue a cell's record was judged by: its boot's (observed.known_issue) and its
    migration's hops'."""
    boot = (record.get("observed") or {}).get("known_issue")
    return ([boot] if boot else []) + list(((record.get("migration") or {}).get("known_issues")) or ())
