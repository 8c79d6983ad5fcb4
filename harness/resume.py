"""Whether `--resume` may keep a cell's stored result.

A stored record stands for its cell only while everything its verdict depended on is unchanged,
by content: the guest kit (its content key), each QEMU binary that ran it (SHA-256, not the
version line: a QEMU rebuilt with a patch keeps "7.2.22"), a cross plan's peer build, the host's
facts, the known-issues entries that turned a failure green, the cell's own spec and what the
model expected of it. Each record carries these digests (`provenance`); a record without them, or
with any that differs, runs again and says why. Pure: the caller reads the record and run.json.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from typing import Any

from . import model
from .cell import Cell, HostFacts, Verdict

# The host facts a verdict reads (the model's inputs); probe timings and notes are not among them.
FACT_FIELDS = ("arch", "cpu", "kvm_mode", "kvm_xics", "kvm_xive", "platform", "xive_backend", "kvm_hv_nested",
               "kvm_caps", "guest_machine_options", "nested_api", "guest_append")


def digest(value: Any) -> str:
    return hashlib.sha256(json.dumps(_as_stored(value), sort_keys=True).encode()).hexdigest()[:16]


def facts_digest(facts: HostFacts) -> str:
    d = {k: getattr(facts, k) for k in FACT_FIELDS}
    if facts.l0_qemu or facts.l0_patches:  # an emulated host's L0 build (absent: the digest as before)
        d.update(l0_qemu=facts.l0_qemu, l0_patches=facts.l0_patches)
    return digest(d)


def issue_digests(issues) -> dict[str, str]:
    """Each known-issues entry's content digest, by id."""
    return {k.id: digest(asdict(k)) for k in issues}


def provenance(cell: Cell, facts: HostFacts, peer_sha256: str | None, issues, matched: list[str]) -> dict:
    """What a cell's record is the result of, by content (stored in the record)."""
    build = facts.build(str(cell.axis("qemu")))
    known = issue_digests(issues)
    return {"spec": digest(cell.to_dict()), "qemu_sha256": build.sha256 if build else None,
            "peer_qemu_sha256": peer_sha256, "facts": facts_digest(facts),
            "known_issues": {i: known.get(i) for i in matched}}


@dataclass(frozen=True)
class Current:
    """What the cell would be run with now, from this run's run.json."""

    kit: str | None  # the kit's content key (None: the kit could not be built)
    qemu_version: str | None  # the cell's build as probed now (None: missing, or host unreachable)
    expected: dict | None  # model.predict now, as stored (None: the host cannot be predicted for)
    host_error: str | None = None  # the host could not be probed
    build: str = "system"  # the cell's QEMU build, by name
    spec: str = ""  # digest of the cell's spec
    qemu_sha256: str | None = None
    peer_qemu_sha256: str | None = None
    facts: str = ""
    known_issues: dict = field(default_factory=dict)  # every entry of this run's file, id -> digest


def _as_stored(value: Any) -> Any:
    """`value` as it reads back from a result.json (tuples become lists, the rest str)."""
    return json.loads(json.dumps(value, default=str))


def current(cell: Cell, run: dict, issues=()) -> Current:
    """`issues`: this run's known-issues entries."""
    facts = HostFacts.from_dict(run["hosts"][cell.host])
    build = facts.build(str(cell.axis("qemu")))
    # No prediction for a host that could not be probed: its facts are empty, and run_cell makes
    # such a cell ERROR without asking the model.
    expected = None if facts.error else _as_stored(model.predict(cell, facts).to_dict())
    peer = None
    if cell.peer and cell.peer[0] in run["hosts"]:
        pb = HostFacts.from_dict(run["hosts"][cell.peer[0]]).build(cell.peer[1])
        peer = pb.sha256 if pb else None
    return Current((run.get("kit") or {}).get("key"), build.version if build else None, expected, facts.error,
                   str(cell.axis("qemu")), digest(cell.to_dict()), build.sha256 if build else None, peer,
                   facts_digest(facts), issue_digests(issues))


def _short(v: Any) -> str:
    s = "unknown" if v is None else str(v)
    return s if len(s) <= 60 else s[:57] + "..."


def _changed_fields(old: Any, new: dict) -> str:
    """`mode: xive -> xics, rule: a -> b`: the fields of the expected outcome that differ."""
    if not isinstance(old, dict):
        return f"{_short(old)} -> rule {_short(new.get('rule'))}"
    keys = [k for k in dict.fromkeys([*new, *old]) if old.get(k) != new.get(k)]
    return ", ".join(f"{k}: {_short(old.get(k))} -> {_short(new.get(k))}" for k in keys)


def rerun_because(record: dict, now: Current) -> str | None:
    """None when the stored record still stands for the cell; otherwise why it runs again."""
    if not isinstance(record, dict):
        return "its stored result is not a record"  # edited by hand, or another tool's file
    if record.get("verdict") == Verdict.ERROR.value:
        return "it was ERROR"  # never judged: always worth another try
    if now.host_error:
        return f"its host cannot be probed now, so its result cannot be confirmed ({_short(now.host_error)})"
    why = []
    if record.get("kit") != now.kit:
        why.append(f"kit changed ({_short(record.get('kit'))} -> {_short(now.kit)})")
    if record.get("qemu_version") != now.qemu_version:
        why.append(f"QEMU build {now.build} changed "
                   f"({_short(record.get('qemu_version'))} -> {_short(now.qemu_version)})")
    if now.expected is not None and _as_stored(record.get("expected")) != now.expected:
        why.append(f"expected outcome changed ({_changed_fields(record.get('expected'), now.expected)})")
    prov = record.get("provenance")
    if not isinstance(prov, dict):
        why.append("its record predates content keys (no provenance)")
        return "; ".join(why)
    if prov.get("spec") != now.spec:
        why.append("the cell's spec changed")
    if prov.get("qemu_sha256") != now.qemu_sha256:
        why.append(f"QEMU build {now.build} changed by content (sha256 {_short(prov.get('qemu_sha256'))[:12]} -> "
                   f"{_short(now.qemu_sha256)[:12]})")
    if prov.get("peer_qemu_sha256") != now.peer_qemu_sha256:
        why.append("the peer's QEMU build changed by content")
    if prov.get("facts") != now.facts:
        why.append("the host's facts changed")
    for issue, d in (prov.get("known_issues") or {}).items():
        if now.known_issues.get(issue) != d:
            why.append(f"known issue {issue} {'changed' if issue in now.known_issues else 'is gone'}")
    return "; ".join(why) or None
