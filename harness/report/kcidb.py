"""A run as KCIDB I/O data (`caskit report DIR --format kcidb --origin NAME`): what kernel CI
dashboards read. Pure: results in, a dict out, in the latest schema major version of the
`kcidb-io` package (v5); tests validate it with that package itself.

How caskit's record maps onto KCIDB's tree (checkouts -> builds -> tests):
- one checkout: the guest kernel under test (its Debian package, version and .deb SHA-256, or the
  user's own kernel file and its SHA-256);
- one build per QEMU build the cells ran on (the kernel is built once; what a cell also depends on
  is which QEMU ran it, so each (kernel, QEMU build) pair is a build, named by the QEMU's version
  and binary SHA-256);
- one test per cell (path `caskit.<matrix>.<ic_mode>.<kernel_irqchip>...`), and one test under it
  per workload that measured a rate (`number`), so dashboards can plot IPIs/s and irq/s.

Statuses: PASS, FAIL, ERROR and SKIP are KCIDB's own. A cell that was planned and never reported
is MISS. XFAIL (a predicted refusal, or a hop a known issue explains) is PASS with the rule or the
known issue's id in `misc`: the system did what it is known to do. FLAKY is FAIL, with every
attempt in `misc`: it failed at least once, and KCIDB has no word for "passed on a rerun".

Ids are `<origin>:<run>:<cell id>`, where the run is the first run of a chain of `--resume`s:
a resumed or rerun cell keeps its id, so a resubmission updates a test instead of adding one.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from urllib.parse import quote

from ..records import known_issues_of
from ..axes import AXIS_NAMES
from .layout import kvm_mode

SCHEMA_VERSION = {"major": 5, "minor": 3}
STATUS = {"PASS": "PASS", "FAIL": "FAIL", "ERROR": "ERROR", "SKIP": "SKIP", "XFAIL": "PASS", "FLAKY": "FAIL"}
ORIGIN_RE = re.compile(r"[a-z0-9_]+")
LOG_EXCERPT_MAX = 16384  # the schema's maxLength
CONSOLE_LINES = 40
# Workload metrics that are a rate, by workload: (path into its metrics, unit).
RATES = {
    "ipi": (("ipis_per_s",), "IPI/s"),
    "virtio-net": (("msix", "irqs_per_s"), "irq/s"),
    "virtio-blk": (("irqs_per_s",), "irq/s"),
}


class KcidbError(ValueError):
    """Bad input for the export (an origin KCIDB would refuse)."""


def _part(v: object) -> str:
    """One component of a test path: KCIDB allows [a-zA-Z0-9_-]."""
    return re.sub(r"[^A-Za-z0-9_-]", "_", str(v)) or "_"


def _clean(text: str) -> str:
    return text.replace("\0", "")


def kcidb_path(cell: dict) -> str:
    axes = cell.get("axes") or {}
    parts = ["caskit", cell.get("matrix") or "matrix", cell.get("host") or "host",
             *(f"{n}_{axes[n]}" for n in AXIS_NAMES if n in axes)]
    if cell.get("migration_plan") not in (None, "none"):
        parts.append(f"migration_{cell['migration_plan']}")
    # Cells that differ only in their workloads or their kernel command line keep apart paths.
    parts.append(cell["id"].rsplit("-", 1)[-1])
    return ".".join(_part(p) for p in parts)


def _first_run(run: dict) -> str:
    return str(run.get("resumed_from") or run.get("id") or "run")


def _checkout(origin: str, run: dict) -> dict:
    manifest = (run.get("kit") or {}).get("manifest") or {}
    packages = manifest.get("packages") or {}
    image = next(((n, p) for n, p in packages.items() if n.startswith("linux-image-")), None)
    under_test = manifest.get("kernel_under_test")
    misc: dict = {"kernel_release": manifest.get("kernel_release"), "kit": (run.get("kit") or {}).get("key")}
    if under_test:
        ident = under_test.get("sha256") or "user"
        misc.update(source=under_test.get("source"), sha256=under_test.get("sha256"))
        comment = f"kernel under test: {under_test.get('source')} ({under_test.get('release')})"
    elif image:
        name, p = image
        ident = p.get("sha256") or f"{name}_{p.get('version')}"
        misc.update(package=name, version=p.get("version"), deb=p.get("deb"), sha256=p.get("sha256"))
        comment = f"Debian {name} {p.get('version')}"
    elif manifest.get("user_supplied"):
        ident = ((manifest.get("files") or {}).get("vmlinux")) or "user"
        misc.update(user_supplied=True, files=manifest.get("files"))
        comment = "a user-supplied kernel"
    else:
        ident = (run.get("kit") or {}).get("key") or "unknown"
        comment = "the guest kit's kernel"
    return {"id": f"{origin}:kernel-{ident}", "origin": origin, "comment": _clean(comment),
            "valid": bool(manifest or under_test), "misc": {k: v for k, v in misc.items() if v is not None}}


def _builds(origin: str, run: dict, cells: list[dict], checkout_id: str) -> dict[tuple[str, str], dict]:
    """One build per (host's QEMU build name, version) the cells ran on."""
    out: dict[tuple[str, str], dict] = {}
    hosts = run.get("hosts") or {}
    for c in cells:
        name = str((c.get("axes") or {}).get("qemu", "system"))
        version = c.get("qemu_version") or ""
        key = (name, version)
        if key in out:
            continue
        probed = next((b for b in (hosts.get(c.get("host")) or {}).get("qemu") or () if b.get("name") == name), {})
        sha = probed.get("sha256") or ""
        ident = hashlib.sha256(f"{checkout_id}|{name}|{version}|{sha}".encode()).hexdigest()[:16]
        out[key] = {"id": f"{origin}:build-{ident}", "origin": origin, "checkout_id": checkout_id,
                    "architecture": "ppc64le", "comment": _clean(f"guest kernel under QEMU {name} {version}".strip()),
                    "status": "PASS",  # the kernel and QEMU are Debian's own builds: nothing was built here
                    "misc": {"qemu": name, "qemu_version": version, "qemu_sha256": sha or None,
                             "qemu_binary": probed.get("binary")}}
    return out


def _excerpt(cell: dict, out_dir: Path | None) -> str:
    text = f"{cell.get('verdict')}: {cell.get('reason') or ''}\n"
    console = (cell.get("logs") or {}).get("console")
    if out_dir is not None and console:
        try:
            lines = (out_dir / console).read_text(errors="replace").replace("\r", "").splitlines()
            text += "\n-- last console lines --\n" + "\n".join(lines[-CONSOLE_LINES:]) + "\n"
        except OSError:
            pass
    text = _clean(text)
    return text if len(text) <= LOG_EXCERPT_MAX else text[:200] + "\n[...]\n" + text[-(LOG_EXCERPT_MAX - 210):]


def _files(cell: dict, base_url: str) -> list[dict]:
    return [{"name": _part(name) + "_" + Path(rel).name.replace("/", "_"),
             "url": base_url.rstrip("/") + "/" + quote(rel)} for name, rel in sorted((cell.get("logs") or {}).items())]


def _dig(d: dict, path: tuple[str, ...]):
    for k in path:
        if not isinstance(d, dict):
            return None
        d = d.get(k)
    return d


def _misc(results: dict, cell: dict) -> dict:
    e, o = cell.get("expected") or {}, cell.get("observed") or {}
    misc: dict = {"caskit_verdict": "not run" if cell.get("not_run") else cell.get("verdict"),
                  "cell": cell["id"], "rule": e.get("rule"), "expected_mode": e.get("mode"),
                  "observed_mode": o.get("mode"), "irqchip": (o.get("host") or {}).get("irqchip"),
                  "run": (results.get("run") or {}).get("id")}
    if cell.get("verdict") == "XFAIL":
        known = known_issues_of(cell)
        misc["known_issues"] = known
        if not known:
            misc["predicted_by"] = e.get("rule")
    if cell.get("attempts"):
        misc["attempts"] = [{"attempt": a.get("attempt"), "verdict": a.get("verdict"), "reason": a.get("reason")}
                            for a in cell["attempts"]]
    return {k: v for k, v in misc.items() if v is not None}


def _status(cell: dict) -> str:
    return "MISS" if cell.get("not_run") else STATUS[cell.get("verdict", "ERROR")]


def to_kcidb(results: dict, origin: str, out_dir: Path | None = None, base_url: str | None = None) -> dict:
    """The run in `results` (results.json, or a run from the history) as one KCIDB I/O object.
    `out_dir` is where the logs are (for the console excerpt); `base_url` is where they are
    published (output_files' URLs), by default the run directory as a file: URI."""
    if not ORIGIN_RE.fullmatch(origin or ""):
        raise KcidbError(f"--origin {origin!r}: KCIDB origins are lower-case letters, digits and _ only")
    run = results.get("run") or {}
    cells = results.get("cells") or []
    base = base_url or (out_dir.resolve().as_uri() if out_dir is not None else "file:///")
    checkout = _checkout(origin, run)
    builds = _builds(origin, run, [c for c in cells if not c.get("not_run")] or cells, checkout["id"])
    first = _part(_first_run(run))
    tests = []
    for c in cells:
        b = builds.get((str((c.get("axes") or {}).get("qemu", "system")), c.get("qemu_version") or "")) \
            or next(iter(builds.values()), None)
        if b is None:  # a run of not-run cells only: nothing ran, so no QEMU version to name
            b = builds.setdefault(("", ""), {"id": f"{origin}:build-none", "origin": origin,
                                             "checkout_id": checkout["id"], "architecture": "ppc64le",
                                             "comment": "no cell ran", "status": "MISS"})
        path = kcidb_path(c)
        test_id = f"{origin}:{first}:{c['id']}"
        t = {"id": test_id, "origin": origin, "build_id": b["id"], "path": path, "status": _status(c),
             "comment": _clean(c.get("reason") or ("not run" if c.get("not_run") else "")),
             "log_excerpt": _excerpt(c, out_dir),
             "environment": {"comment": _clean(f"host {c.get('host')}, KVM mode {kvm_mode(results, c)}"),
                             "misc": {"host": c.get("host"), "kvm_mode": kvm_mode(results, c),
                                      "qemu": (c.get("axes") or {}).get("qemu"),
                                      "qemu_version": c.get("qemu_version"), "axes": c.get("axes")}},
             "misc": _misc(results, c)}
        if c.get("started"):
            t["start_time"] = c["started"].replace("Z", "+00:00")
        if isinstance(c.get("duration_s"), (int, float)):
            t["duration"] = float(c["duration_s"])
        if c.get("logs"):
            t["output_files"] = _files(c, base)
        tests.append(t)
        for w in c.get("workloads") or ():
            if not isinstance(w, dict) or w.get("name") not in RATES:
                continue
            where, unit = RATES[w["name"]]
            value = _dig(w.get("metrics") or {}, where)
            sub = {"id": f"{test_id}:{w['name']}", "origin": origin, "build_id": b["id"],
                   "path": f"{path}.{_part(w['name'])}", "status": STATUS.get(w.get("verdict"), "ERROR"),
                   "comment": _clean(str(w.get("reason") or "")), "misc": {"workload": w["name"], "cell": c["id"]}}
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                sub["number"] = {"value": float(value), "unit": unit}
            tests.append(sub)
    return {"version": dict(SCHEMA_VERSION), "checkouts": [checkout], "builds": list(builds.values()), "tests": tests}
