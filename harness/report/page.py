"""Reports derived from results.json only: junit.xml and report.html (the compatibility matrix)."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

from ..records import known_issues_of
from ..axes import AXIS_NAMES
from ..results import atomic_write
from ..templating import render_html
from . import cells as cell_pages, figures, overview
from .layout import kvm_mode, matrix_layout, outcome



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


def html_report(results: dict) -> str:
    cells = results["cells"]
    col, cols, row_axes, rows, grid = matrix_layout(cells, lambda c: kvm_mode(results, c))
    grouped = bool(cols) and isinstance(cols[0], tuple)
    spans = [(g, sum(1 for k in cols if k[0] == g)) for g in dict.fromkeys(k[0] for k in cols)] if grouped else []
    fixed = {a: str(cells[0]["axes"][a]) for a in AXIS_NAMES if cells and a not in row_axes and a != col
             and not (grouped and a == "accel")}
    migrations = [c for c in cells if isinstance(c.get("migration"), dict)]
    known = [{"id": c["id"], "ids": known_issues_of(c)} for c in cells if known_issues_of(c)]
    stale = [c for c in migrations if c["migration"].get("no_longer_reproduces")]
    kvm_of = lambda c: kvm_mode(results, c)  # noqa: E731
    return render_html("report.html.j2", run=results["run"], summary=results.get("summary", {}), cells=cells,
                       col=col, cols=cols, row_axes=row_axes, rows=rows, grid=grid, fixed=fixed,
                       known=known, stale=stale, grouped=grouped, spans=spans,
                       dattrs={c["id"]: overview.filter_attrs(c, kvm_of(c)) for c in cells},
                       labels={c["id"]: outcome(c).split()[0] for c in cells},
                       filters=overview.filters(cells, kvm_of), verdicts=overview.VERDICTS,
                       host_summary=overview.host_summary(cells, kvm_of, results["run"].get("hosts")),
                       pool_health=overview.pool_health(results),
                       overview_charts=figures.overview_charts(results, kvm_of))


def write_reports(out: Path, results: dict) -> None:
    out = Path(out)
    atomic_write(out / "junit.xml", junit_xml(results))
    atomic_write(out / "report.html", html_report(results))
    cell_pages.write_cell_pages(out, results, lambda c: kvm_mode(results, c))
