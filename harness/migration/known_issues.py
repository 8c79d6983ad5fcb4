"""Known defects as data (configs/known-issues.yaml): a failing hop that matches an entry is
XFAIL with the entry's id, one that matches none is FAIL, and an entry whose conditions hold but
whose symptom did not show is reported as no longer reproducing. Pure, apart from loading.

An entry with `host_findings` is about a cell's boot instead (a guest that hangs for a defect of
its host, proved on the host's side): `explain_boot` holds such an entry against all of a failed
boot's evidence at once."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from ..axes import AXIS_BY_NAME
# The same value checks as matrix files and the inventory, so messages read alike.
from .. import validate as checks
from ..validate import MAX_PROSE, MAX_SMP, load_yaml
from ..host_cpus import FINDING_KINDS as HOST_FINDINGS
from .plans import PLANS
from ..errors import ConfigError
from ..resources import CONFIGS, qemu_patch_ids

KNOWN_ISSUES = CONFIGS / "known-issues.yaml"
MATCH_KEYS = {"qemu_version", "accel", "plans", "guest_state", "smp_min", "modes", "symptoms", "log_regex", "hops",
              "error_regex", "source_version", "destination_version", "requires",
              "kvm_modes", "error_kinds", "host_findings", "l0_without"}
# The keys only a hop can be judged by: a boot entry (one with host_findings) has none of them.
HOP_ONLY_KEYS = ("plans", "guest_state", "modes", "symptoms", "log_regex", "hops", "error_regex", "source_version",
                 "destination_version", "requires")
KVM_MODES = ("hv", "hv-nested", "hv-nested-papr", "pr", "tcg-only")
# How a boot fails when its host is the cause: the guest stops, QEMU and the host still up.
BOOT_ERRORS = ("GuestHang", "QemuHung")


def _clock(hop: dict) -> tuple[int, float, float]:
    lv = hop.get("liveness") or {}
    return int(lv.get("beats") or 0), float(lv.get("guest_clock_advance_s") or 0.0), float(hop.get("window_s") or 0.0)


def _clock_stopped(hop: dict) -> str | None:
    beats, advance, window = _clock(hop)
    if beats == 0 or advance < window / 2:
        return None
    return f"the guest's clock ran on: {beats} beats, its uptime advanced {advance:.1f} s in the {window:.1f} s window"


def _clock_runs(hop: dict) -> str | None:
    beats, advance, window = _clock(hop)
    if beats > 0 and advance >= window / 2:
        return None
    return f"the guest's clock stopped: {beats} beats, its uptime advanced {advance:.1f} s in the {window:.1f} s window"


# What the evidence of a hop must show for an entry to explain it, beyond its symptoms' names
# (`requires:`): each returns None when it holds, else what the hop showed instead. A defect of
# stopped timers cannot explain a guest whose heartbeat kept beating, whatever else it shares.
CONDITIONS = {
    "clock-stopped": ("the heartbeat stopped: no beat, or the guest's uptime advanced less than half the window",
                      _clock_stopped),
    "clock-runs": ("the heartbeat went on: beats, and the guest's uptime advanced at least half the window",
                   _clock_runs),
}
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
    requires: tuple[str, ...] = ()  # CONDITIONS the hop's evidence must meet
    evidence: dict = field(default_factory=dict)
    kvm_modes: tuple[str, ...] = ()  # boot entries: the host's KVM mode
    error_kinds: tuple[str, ...] = ()  # ... how the boot failed (BOOT_ERRORS)
    host_findings: tuple[str, ...] = ()  # ... what the host's side must have proved (every one)
    # ... caskit's L0 patches (patches/qemu/, by id) that fix the defect: it does not explain a
    # boot on a host whose L0 carries any of them
    l0_without: tuple[str, ...] = ()


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


def _strings(path: str, key: str, v, allowed: tuple[str, ...] | None = None) -> tuple[str, ...]:
    """A list of non-empty one-line strings (one string stands for a list of one), each in
    `allowed` when given."""
    out = []
    for i, x in enumerate(checks.list_of(path, key, v, "strings")):
        item = checks.item(key, v, i)
        checks.text(path, item, x, "a non-empty string")
        if allowed is not None and x not in allowed:
            raise ConfigError(path, item, f"{x!r} is not allowed; allowed: {', '.join(allowed)}")
        out.append(x)
    return tuple(out)


def _constraint(path: str, key: str, v) -> str:
    if not isinstance(v, str):  # `qemu_version: 7.2` is a YAML number: the operator is missing anyway
        raise ConfigError(path, key, f"must be version constraints such as \">=7.2,<8\" (a quoted string), {checks.got(v)}")
    checks.text(path, key, v, "version constraints such as \">=7.2,<8\"")
    try:
        version_matches(v, "1.0.0")
    except ValueError as err:
        raise ConfigError(path, key, str(err)) from None
    return v


def _regex(path: str, key: str, v) -> str:
    checks.text(path, key, v, "a regular expression (a string)")
    try:
        re.compile(v)
    except (re.error, RecursionError, OverflowError) as err:  # the parser recurses on nested groups
        raise ConfigError(path, key, f"not a regular expression: {err}") from None
    return v


ENTRY_KEYS = ("id", "summary", "reference", "match", "evidence")
MODES = ("xics", "xive")


def parse(data, path: str) -> list[KnownIssue]:
    if not isinstance(data, dict):
        raise ConfigError(path, None, f"a known-issues file is a mapping with an `issues:` list, {checks.got(data)}")
    for k in data:
        if k != "issues":
            raise ConfigError(path, checks.part(k), "unknown key; a known-issues file has only `issues:`")
    issues = data.get("issues")
    if issues is not None and not isinstance(issues, list):
        raise ConfigError(path, "issues", f"must be a list of entries, {checks.got(issues)}")
    out = []
    for i, e in enumerate(issues or []):
        key = f"issues[{i}]"
        if not isinstance(e, dict) or not all(k in e for k in ("id", "summary", "reference", "match")):
            raise ConfigError(path, key, "needs id, summary, reference and match")
        for k in e:
            if k not in ENTRY_KEYS:
                raise ConfigError(path, checks.child(key, k), f"unknown key; allowed: {', '.join(ENTRY_KEYS)}")
        ident = checks.text(path, f"{key}.id", e["id"], "an id (one line)", max_len=200)
        summary = checks.text(path, f"{key}.summary", e["summary"], "text", max_len=MAX_PROSE, lines=True)
        reference = checks.text(path, f"{key}.reference", e["reference"], "text", max_len=MAX_PROSE, lines=True)
        evidence = e.get("evidence")
        if evidence is not None and not isinstance(evidence, dict):
            raise ConfigError(path, f"{key}.evidence", f"must be a mapping (what was measured, cells, lines), {checks.got(evidence)}")
        mkey = f"{key}.match"
        m = e["match"]
        if m is None:
            m = {}
        if not isinstance(m, dict):
            raise ConfigError(path, mkey, f"must be a mapping of conditions, {checks.got(m)}")
        for k in m:
            if k not in MATCH_KEYS:
                raise ConfigError(path, checks.child(mkey, k), f"unknown key; allowed: {', '.join(sorted(MATCH_KEYS))}")
        state = m.get("guest_state", "any")
        if not isinstance(state, str) or state not in GUEST_STATES:
            raise ConfigError(path, f"{mkey}.guest_state", f"must be one of {', '.join(GUEST_STATES)}, {checks.got(state)}")
        versions = {vk: _constraint(path, f"{mkey}.{vk}", m[vk]) if m.get(vk) is not None else None
                    for vk in ("qemu_version", "source_version", "destination_version")}
        regexes = {rk: _regex(path, f"{mkey}.{rk}", m[rk]) if m.get(rk) is not None else None
                   for rk in ("log_regex", "error_regex")}
        accel = m.get("accel")
        if accel is not None and (not isinstance(accel, str) or accel not in AXIS_BY_NAME["accel"].values):
            raise ConfigError(path, f"{mkey}.accel", f"{checks.show(accel)} is not allowed; allowed: "
                                                     f"{', '.join(AXIS_BY_NAME['accel'].values)}")
        smp_min = m.get("smp_min")
        if smp_min is not None:
            smp_min = checks.whole(path, f"{mkey}.smp_min", smp_min, MAX_SMP, "as many vCPUs as a matrix may ask for")
        lists = {lk: _strings(path, f"{mkey}.{lk}", m[lk], allowed) if m.get(lk) not in (None, []) else ()
                 for lk, allowed in (("plans", tuple(PLANS)), ("modes", MODES), ("hops", None), ("symptoms", None),
                                     ("requires", tuple(CONDITIONS)), ("kvm_modes", KVM_MODES),
                                     ("error_kinds", BOOT_ERRORS), ("host_findings", HOST_FINDINGS),
                                     ("l0_without", qemu_patch_ids()))}
        if lists["host_findings"]:
            for hk in HOP_ONLY_KEYS:
                if m.get(hk) not in (None, [], "any"):
                    raise ConfigError(path, f"{mkey}.{hk}", "a boot entry (with host_findings) is judged on a cell's "
                                                            "boot, not on a migration hop: remove it")
            if not lists["error_kinds"]:
                raise ConfigError(path, f"{mkey}.error_kinds", f"a boot entry needs how the boot failed: "
                                                               f"some of {', '.join(BOOT_ERRORS)}")
        elif lists["kvm_modes"] or lists["error_kinds"] or lists["l0_without"]:
            raise ConfigError(path, f"{mkey}.host_findings", "kvm_modes, error_kinds and l0_without are for boot "
                                                             "entries, which need host_findings: what the host proved")
        elif not lists["symptoms"] and not regexes["log_regex"] and not regexes["error_regex"]:
            raise ConfigError(path, mkey, "needs symptoms, log_regex or error_regex: what the failure looks like")
        out.append(KnownIssue(
            id=ident, summary=summary, reference=reference, qemu_version=versions["qemu_version"], accel=accel,
            plans=lists["plans"], guest_state=state, smp_min=smp_min, modes=lists["modes"], hops=lists["hops"],
            symptoms=lists["symptoms"], log_regex=regexes["log_regex"], error_regex=regexes["error_regex"],
            source_version=versions["source_version"], destination_version=versions["destination_version"],
            requires=lists["requires"], evidence=evidence or {}, kvm_modes=lists["kvm_modes"],
            error_kinds=lists["error_kinds"], host_findings=lists["host_findings"], l0_without=lists["l0_without"]))
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
    """What an entry's cell-level conditions are checked against."""

    accel: str
    plan: str
    guest_state: str  # idle | workload
    smp: int
    mode: str | None


def applies(k: KnownIssue, c: CellFacts) -> bool:
    return ((k.accel is None or k.accel == c.accel)
            and (not k.plans or c.plan in k.plans)
            and (k.guest_state in ("any", c.guest_state))
            and (k.smp_min is None or c.smp >= k.smp_min)
            and (not k.modes or c.mode in k.modes))


def _build_version(build: str | None) -> str | None:
    """"backports 10.0.2" -> "10.0.2"."""
    return build.split()[-1] if build and len(build.split()) > 1 else None


def hop_applies(k: KnownIssue, hop: dict) -> bool:
    """The entry concerns this hop: its name, and the builds it involves. `qemu_version` must
    hold for every build of the hop (both ends of a cross-build hop); an entry about two builds
    says which end is which with source_version and destination_version, and each must hold."""
    if k.hops and hop.get("name") not in k.hops:
        return False
    src, dst = _build_version(hop.get("source_build")), _build_version(hop.get("destination_build"))
    if k.qemu_version is not None:
        versions = [v for v in (src, dst) if v]
        if not versions or not all(version_matches(k.qemu_version, v) for v in versions):
            return False
    for spec, v in ((k.source_version, src), (k.destination_version, dst)):
        if spec is not None and (v is None or not version_matches(spec, v)):
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


def unexplained(k: KnownIssue, hop: dict) -> list[str]:
    """The hop's failure signals that the entry does not explain. A signal is explained by being
    one of the entry's symptoms; a kernel finding also by a line that matches the entry's
    log_regex; a failed migration also by QEMU's words matching its error_regex."""
    log_rx = re.compile(k.log_regex) if k.log_regex else None
    err_rx = re.compile(k.error_regex) if k.error_regex else None
    out = [f"requires {name}, but {why}" for name in k.requires if (why := CONDITIONS[name][1](hop))]
    for s in dict.fromkeys(hop.get("symptoms", [])):
        if s in k.symptoms:
            continue
        if s.startswith("kernel:") and log_rx and any(
                f["kind"] == s[len("kernel:"):] and log_rx.search(f["line"]) for f in hop.get("kernel_log", [])):
            continue
        if s == "migration-failed" and err_rx and err_rx.search(_qemu_words(hop)):
            continue
        out.append(s)
    return out


def shows(k: KnownIssue, hop: dict) -> bool:
    """The entry explains this failing hop: it concerns the hop, its identifying words are there
    (error_regex in QEMU's words, log_regex in a kernel finding, where given), and every failure
    signal on the hop is one it explains, and the hop's evidence meets every condition the entry
    requires (a timer defect needs a stopped clock). Any extra signal (a kernel finding, a mode
    change, corrupt data, a crash, a lost source) keeps the hop FAIL."""
    if not hop_applies(k, hop) or not hop.get("symptoms"):
        return False
    if k.error_regex and not re.search(k.error_regex, _qemu_words(hop)):
        return False
    if k.log_regex and not any(re.search(k.log_regex, f["line"]) for f in hop.get("kernel_log", [])):
        return False
    return not unexplained(k, hop)


def classify(issues: list[KnownIssue], c: CellFacts, hops: list[dict]) -> dict:
    """The migration's verdict: PASS, FAIL, XFAIL (every failing hop wholly explained) or ERROR.
    A failing hop that no entry explains lists the signals the closest entry leaves unexplained."""
    relevant = [k for k in issues if applies(k, c) and not k.host_findings]
    failing = [h for h in hops if h["verdict"] == "FAIL"]
    for h in failing:
        match = next((k for k in relevant if shows(k, h)), None)
        h["known_issue"] = match.id if match else None
        if match is None:
            near = [k for k in relevant if hop_applies(k, h)]
            rest = min((unexplained(k, h) for k in near), key=len, default=list(dict.fromkeys(h.get("symptoms", []))))
            h["unexplained"] = rest
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


def explain_boot(issues: list[KnownIssue], *, accel: str, smp: int, kvm_mode: str, build_version: str | None,
                 observed: dict, l0_patches: tuple[str, ...] = ()) -> tuple[KnownIssue | None, str]:
    """The boot entry that explains a failed boot, with what it says, or (None, why none does).
    It must hold against all of the boot's evidence: the cell's accelerator, vCPUs and QEMU
    version and the host's KVM mode, how the boot failed, every host finding the entry names
    present, and nothing else wrong: a guest kernel finding or an infrastructure error is not
    the host's known defect. An entry about a defect of stock QEMU that one of caskit's L0
    patches fixes (`l0_without`) explains nothing on a host whose L0 carries that patch
    (`l0_patches`, the host's facts): a hang there is the patch's to answer for, FAIL."""
    o = observed
    if not o.get("error") or o.get("infra"):
        return None, "the boot did not fail, or failed for caskit or the host's infrastructure"
    found = {f.get("kind"): f.get("line") for f in o.get("host_findings") or ()}
    why = "no boot entry concerns this cell"
    for k in issues:
        if not k.host_findings:
            continue
        if ((k.accel is not None and k.accel != accel) or (k.smp_min is not None and smp < k.smp_min)
                or (k.kvm_modes and kvm_mode not in k.kvm_modes)
                or (k.qemu_version is not None and not (build_version and version_matches(k.qemu_version, build_version)))):
            continue
        if fixed := [p for p in k.l0_without if p in l0_patches]:
            why = f"{k.id} is about a stock L0, and this host's L0 carries caskit's patch {', '.join(fixed)}"
            continue
        missing = [h for h in k.host_findings if h not in found]
        if o.get("error_kind") not in k.error_kinds:
            why = f"{k.id} is about {', '.join(k.error_kinds)}, and this boot ended in {o.get('error_kind')}"
        elif missing:
            why = f"{k.id} needs the host to show {', '.join(missing)}, and it did not"
        elif o.get("kernel_findings"):
            why = f"{k.id} does not explain the guest kernel's {o['kernel_findings'][0].get('kind')}"
        else:
            return k, "; ".join(f"{h}: {found[h]}" for h in k.host_findings)
    return None, why
