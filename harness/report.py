"""Reports derived from results.json only: junit.xml and report.html (the compatibility matrix)."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

from .axes import AXIS_NAMES
from .results import atomic_write
from .templating import render_html

COLUMN_PREFERENCE = ("ic_mode", "guest_xive", "cpu_compat", "kernel_irqchip", "cpu", "accel", "qemu", "firmware", "smp")


def junit_xml(results: dict) -> str:
    cells = results["cells"]
    s = results.get("summary", {})
    suite = ET.Element("testsuite", name="caskit", tests=str(len(cells)), failures=str(s.get("FAIL", 0)),
                       errors=str(s.get("ERROR", 0)), skipped=str(s.get("XFAIL", 0) + s.get("SKIP", 0)),
                       time=f"{sum(c.get('duration_s', 0) for c in cells):.3f}")
    props = ET.SubElement(suite, "properties")
    run = results["run"]
    for k in ("id", "caskit_version", "git_sha", "start", "end"):
        ET.SubElement(props, "property", name=f"caskit.{k}", value=str(run.get(k)))
    kit = run.get("kit") or {}
    # Provenance a farm needs to tell "the kernel changed" from "the harness changed".
    for k, v in (("kit", kit.get("key")), ("kernel", (kit.get("manifest") or {}).get("kernel_package")),
                 ("kernel_release", (kit.get("manifest") or {}).get("kernel_release"))):
        if v:
            ET.SubElement(props, "property", name=f"caskit.{k}", value=str(v))
    for c in cells:
        tc = ET.SubElement(suite, "testcase", classname=f"caskit.{c.get('matrix') or 'matrix'}", name=c["id"],
                           time=f"{c.get('duration_s', 0):.3f}")
        v, reason = c["verdict"], c.get("reason", "")
        if v == "FAIL":
            ET.SubElement(tc, "failure", message=reason).text = (c["observed"].get("log_excerpt") or reason)
        elif v == "ERROR":
            ET.SubElement(tc, "error", message=reason).text = (c["observed"].get("log_excerpt") or reason)
        elif v in ("XFAIL", "SKIP"):
            ET.SubElement(tc, "skipped", message=f"{v}: {reason}", type=v.lower())
        cp = ET.SubElement(tc, "properties")
        ET.SubElement(cp, "property", name="verdict", value=v)
        if c.get("attempts"):  # --rerun-failures: FLAKY is a passed testcase; its attempts say why
            ET.SubElement(cp, "property", name="attempts", value=", ".join(a.get("verdict", "?") for a in c["attempts"]))
        ET.SubElement(cp, "property", name="observed_mode", value=str(c["observed"].get("mode")))
        ET.SubElement(cp, "property", name="expected_rule", value=str(c["expected"].get("rule")))
    ET.indent(suite)
    return ET.tostring(suite, encoding="unicode", xml_declaration=True) + "\n"


def kvm_mode(results: dict, c: dict) -> str:
    """The KVM mode a cell ran in: its host's (as probed) under KVM, tcg-only under TCG."""
    if c["axes"].get("accel") != "kvm":
        return "tcg-only"
    return ((results.get("run", {}).get("hosts", {}).get(c["host"]) or {}).get("kvm_mode")) or "unknown"


def matrix_layout(cells: list[dict], group_of=None) -> tuple[str | None, list, list[str], list[tuple], dict]:
    """(column axis, column keys, row axes, row keys, {(row, col): [cells]}). With `group_of`
    giving two or more groups (KVM modes), the columns are (group, value) pairs: one column
    group per KVM mode, the table farms publish, and host and accel leave the rows."""
    groups = list(dict.fromkeys(group_of(c) for c in cells)) if group_of else []
    # A KVM run always says which KVM mode its columns are; a TCG-only run needs no group row.
    grouped = len(groups) > 1 or (len(groups) == 1 and groups[0] != "tcg-only")
    varying = [a for a in AXIS_NAMES if len({str(c["axes"][a]) for c in cells}) > 1]
    if len({c["host"] for c in cells}) > 1:
        varying.insert(0, "host")
    if grouped:
        varying = [a for a in varying if a not in ("host", "accel")]

    def val(c, a):
        return str(c["host"] if a == "host" else c["axes"][a])

    col = next((a for a in COLUMN_PREFERENCE if a in varying), None)
    row_axes = [a for a in varying if a != col]

    def col_key(c):
        v = val(c, col) if col else ""
        return (group_of(c), v) if grouped else v

    cols = list(dict.fromkeys(col_key(c) for c in cells))
    if grouped:
        cols.sort(key=lambda k: (groups.index(k[0]), [col_key(c) for c in cells].index(k)))
    rows = list(dict.fromkeys(tuple(val(c, a) for a in row_axes) for c in cells))
    grid: dict = {}
    for c in cells:
        grid.setdefault((tuple(val(c, a) for a in row_axes), col_key(c)), []).append(c)
    return col, cols, row_axes, rows, grid


def html_report(results: dict) -> str:
    cells = results["cells"]
    col, cols, row_axes, rows, grid = matrix_layout(cells, lambda c: kvm_mode(results, c))
    grouped = bool(cols) and isinstance(cols[0], tuple)
    spans = [(g, sum(1 for k in cols if k[0] == g)) for g in dict.fromkeys(k[0] for k in cols)] if grouped else []
    fixed = {a: str(cells[0]["axes"][a]) for a in AXIS_NAMES if cells and a not in row_axes and a != col
             and not (grouped and a == "accel")}
    migrations = [c for c in cells if isinstance(c.get("migration"), dict)]
    known = [c for c in migrations if c["migration"].get("known_issues")]
    stale = [c for c in migrations if c["migration"].get("no_longer_reproduces")]
    # Imported here: report_export builds on this module's matrix_layout.
    from . import report_export, report_figures, report_overview

    kvm_of = lambda c: kvm_mode(results, c)  # noqa: E731
    return render_html("report.html.j2", run=results["run"], summary=results.get("summary", {}), cells=cells,
                       col=col, cols=cols, row_axes=row_axes, rows=rows, grid=grid, fixed=fixed,
                       known=known, stale=stale, grouped=grouped, spans=spans,
                       dattrs={c["id"]: report_overview.filter_attrs(c, kvm_of(c)) for c in cells},
                       labels={c["id"]: report_export.outcome(c).split()[0] for c in cells},
                       filters=report_overview.filters(cells, kvm_of), verdicts=report_overview.VERDICTS,
                       host_summary=report_overview.host_summary(cells, kvm_of),
                       pool_health=report_overview.pool_health(results),
                       overview_charts=report_figures.overview_charts(results, kvm_of))


def write_reports(out: Path, results: dict) -> None:
    out = Path(out)
    atomic_write(out / "junit.xml", junit_xml(results))
    atomic_write(out / "report.html", html_report(results))
    from .report_cells import write_cell_pages

    write_cell_pages(out, results, lambda c: kvm_mode(results, c))
