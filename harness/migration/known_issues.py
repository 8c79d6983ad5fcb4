"""Known defects as data (configs/known-issues.yaml): a failing hop that matches an entry is
XFAIL with the entry's id, one that matches none is FAIL, and an entry whose conditions hold but
whose symptom did not show is reported as no longer reproducing. Pure, apart from loading."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from ..config import CONFIGS, load_yaml
from ..errors import ConfigError

KNOWN_ISSUES = CONFIGS / "known-issues.yaml"
MATCH_KEYS = {"qemu_version", "accel", "plans", "guest_state", "smp_min", "modes", "symptoms", "log_regex", "hops",
              "error_regex", "source_version", "destination_version"}
GUEST_STATES = ("idle", "workload", "any")


@dataclass(frozen=True)
class KnownIssue:
    id: str
    summary: str
    reference: str
    qemu_version: str | None = None
    accel: str | None = None
    plans: tuple[str, ...] = ()
    guest_state: str = "any"
    smp_min: int | None = None
    modes: tuple[str, ...] = ()
    hops: tuple[str, ...] = ()
    symptoms: tuple[str, ...] = ()
    log_regex: str | None = None
    error_regex: str | None = None  # QEMU's words on a failed hop (source error, destination stderr)
    source_version: str | None = None  # version constraints on the hop's source build
    destination_version: str | None = None  # ... and on its destination build
    evidence: dict = field(default_factory=dict)


def _version(v: str) -> tuple[int, ...]:
    return tuple(int(x) for x in re.findall(r"\d+", v)[:3])


def version_matches(spec: str, version: str) -> bool:
    """`spec` is comma-separated constraints such as ">=7.2,<8"."""
    have = _version(version)
    for c in spec.split(","):
        m = re.fullmatch(r"\s*(>=|<=|==|<|>)\s*([\d.]+)\s*", c)
        if not m:
            raise ValueError(f"bad version constraint {c!r}")
        op, want = m.group(1), _version(m.group(2))
        n = len(want)
        h = have[:n]
        ok = {">=": h >= want, "<=": h <= want, "==": h == want, "<": h < want, ">": h > want}[op]
        if not ok:
            return False
    return True


def parse(data, path: str) -> list[KnownIssue]:
    if not isinstance(data, dict) or not isinstance(data.get("issues", []), list):
        raise ConfigError(path, None, "a known-issues file is a mapping with an `issues:` list")
    out = []
    for i, e in enumerate(data.get("issues") or []):
        key = f"issues[{i}]"
        if not isinstance(e, dict) or not all(k in e for k in ("id", "summary", "reference", "match")):
            raise ConfigError(path, key, "needs id, summary, reference and match")
        m = e["match"] or {}
        for k in m:
            if k not in MATCH_KEYS:
                raise ConfigError(path, f"{key}.match.{k}", f"unknown key; allowed: {', '.join(sorted(MATCH_KEYS))}")
        if m.get("guest_state", "any") not in GUEST_STATES:
            raise ConfigError(path, f"{key}.match.guest_state", f"must be one of {', '.join(GUEST_STATES)}")
        if "qemu_version" in m:
            try:
                version_matches(str(m["qemu_version"]), "1.0.0")
            except ValueError as err:
                raise ConfigError(path, f"{key}.match.qemu_version", str(err)) from None
        for vk in ("source_version", "destination_version"):
            if vk in m:
                try:
                    version_matches(str(m[vk]), "1.0.0")
                except ValueError as err:
                    raise ConfigError(path, f"{key}.match.{vk}", str(err)) from None
        for rk in ("log_regex", "error_regex"):
            if rk in m:
                try:
                    re.compile(m[rk])
                except re.error as err:
                    raise ConfigError(path, f"{key}.match.{rk}", f"not a regular expression: {err}") from None
        if not m.get("symptoms") and not m.get("log_regex") and not m.get("error_regex"):
            raise ConfigError(path, f"{key}.match", "needs symptoms, log_regex or error_regex: what the failure looks like")
        out.append(KnownIssue(
            id=str(e["id"]), summary=str(e["summary"]), reference=str(e["reference"]),
            qemu_version=str(m["qemu_version"]) if "qemu_version" in m else None, accel=m.get("accel"),
            plans=tuple(m.get("plans") or ()), guest_state=m.get("guest_state", "any"), smp_min=m.get("smp_min"),
            modes=tuple(m.get("modes") or ()), hops=tuple(m.get("hops") or ()), symptoms=tuple(m.get("symptoms") or ()),
            log_regex=m.get("log_regex"), error_regex=m.get("error_regex"),
            source_version=str(m["source_version"]) if "source_version" in m else None,
            destination_version=str(m["destination_version"]) if "destination_version" in m else None,
            evidence=e.get("evidence") or {}))
    ids = [k.id for k in out]
    dup = {x for x in ids if ids.count(x) > 1}
    if dup:
        raise ConfigError(path, "issues", f"duplicate ids: {', '.join(sorted(dup))}")
    return out


def load(path: Path | None = None) -> list[KnownIssue]:
    p = path or KNOWN_ISSUES
    if not p.exists():
        return []
    return parse(load_yaml(p), str(p))


@dataclass(frozen=True)
class CellFacts:
    """What an entry's conditions are checked against."""

    qemu_version: str
    accel: str
    plan: str
    guest_state: str  # idle | workload
    smp: int
    mode: str | None
    peer_qemu_version: str = ""  # a cross-build hop involves two builds: an entry for either applies


def applies(k: KnownIssue, c: CellFacts) -> bool:
    versions = [v for v in (c.qemu_version, c.peer_qemu_version) if v]
    return ((k.qemu_version is None or any(version_matches(k.qemu_version, v) for v in versions))
            and (k.accel is None or k.accel == c.accel)
            and (not k.plans or c.plan in k.plans)
            and (k.guest_state in ("any", c.guest_state))
            and (k.smp_min is None or c.smp >= k.smp_min)
            and (not k.modes or c.mode in k.modes))


def _build_version(build: str | None) -> str | None:
    """"backports 10.0.2" -> "10.0.2"."""
    return build.split()[-1] if build and len(build.split()) > 1 else None


def hop_applies(k: KnownIssue, hop: dict) -> bool:
    """The entry concerns this hop: its name, and the builds on either side."""
    if k.hops and hop.get("name") not in k.hops:
        return False
    for spec, side in ((k.source_version, "source_build"), (k.destination_version, "destination_build")):
        if spec is not None:
            v = _build_version(hop.get(side))
            if v is None or not version_matches(spec, v):
                return False
    return True


def _reached(k: KnownIssue, hop: dict) -> bool:
    """A defect of the transfer itself shows in any hop; one of the guest after the hop only in a
    hop whose migration completed (a refused mismatch says nothing about guest timers)."""
    about_transfer = bool(k.error_regex) or bool({"migration-failed", "mismatch-accepted"} & set(k.symptoms))
    return about_transfer or (hop.get("qmp") or {}).get("status") == "completed"


def _qemu_words(hop: dict) -> str:
    q = hop.get("qmp") or {}
    return "\n".join(str(x) for x in (q.get("error"), q.get("destination_error"), *hop.get("problems", [])) if x)


def shows(k: KnownIssue, hop: dict) -> bool:
    if not hop_applies(k, hop):
        return False
    if "source-lost" in hop.get("symptoms", []) and "source-lost" not in k.symptoms:
        return False  # a refusal may be known; losing the guest over it is a failure of its own
    checks = []
    if k.symptoms:
        checks.append(any(s in hop.get("symptoms", []) for s in k.symptoms))
    if k.log_regex:
        rx = re.compile(k.log_regex)
        checks.append(any(rx.search(f["line"]) for f in hop.get("kernel_log", [])))
    hit = any(checks) if checks else True
    if k.error_regex:  # QEMU's own words narrow the entry down (and suffice alone)
        hit = hit and re.search(k.error_regex, _qemu_words(hop)) is not None
    return hit


def classify(issues: list[KnownIssue], c: CellFacts, hops: list[dict]) -> dict:
    """The migration's verdict: PASS, FAIL, XFAIL (every failing hop known) or ERROR."""
    relevant = [k for k in issues if applies(k, c)]
    failing = [h for h in hops if h["verdict"] == "FAIL"]
    for h in failing:
        match = next((k for k in relevant if shows(k, h)), None)
        h["known_issue"] = match.id if match else None
    seen = {h["known_issue"] for h in failing if h.get("known_issue")}
    # Stale: the entry concerned a hop that got as far as its defect shows, and it did not show.
    stale = [k.id for k in relevant if k.id not in seen and any(hop_applies(k, h) and _reached(k, h) for h in hops)]
    if any(h["verdict"] == "ERROR" for h in hops):
        verdict = "ERROR"
    elif any(h["verdict"] == "FAIL" and not h.get("known_issue") for h in hops):
        verdict = "FAIL"
    elif failing:
        verdict = "XFAIL"
    else:
        verdict = "PASS"
    return {"verdict": verdict, "known_issues": sorted(seen), "no_longer_reproduces": stale if verdict != "ERROR" else []}
