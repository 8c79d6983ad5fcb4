"""The compatibility matrix for publishing (`caskit report DIR --format markdown|csv|html`).

markdown and html give the matrix as report.html lays it out (matrix_layout: one column group
per KVM mode), each slot "mode (verdict)"; csv gives one row per cell with its axes, expected
and observed outcome, rule and verdict, for spreadsheets and scripts (a pivot table does not
survive a CSV reader). Pure: results in, text out.
"""

from __future__ import annotations

import csv
import html
import io

from ..axes import AXIS_NAMES
from .layout import kvm_mode, matrix_layout, slot, worst

FORMATS = ("markdown", "csv", "html")
CSV_COLUMNS = ("id", "host", "kvm_mode", *AXIS_NAMES, "workloads", "migration", "expected_mode", "expected_error",
               "rule", "rule_source", "observed_mode", "platform_support", "irqchip", "observed_error", "verdict",
               "reason", "qemu_version", "duration_s")


def _table(results: dict) -> tuple[list[str], list[tuple[list[str], list[list[dict]]]]]:
    """(header, rows) of the matrix: the row axes, then one column per (KVM mode,) column value.
    Each row: its axis values, and the cells of each column's slot."""
    cells = results.get("cells") or []
    col, cols, row_axes, rows, grid = matrix_layout(cells, lambda c: kvm_mode(results, c))
    grouped = bool(cols) and isinstance(cols[0], tuple)

    def head(k) -> str:
        g, v = k if grouped else (None, k)
        name = f"{col}={v}" if col else "outcome"
        return f"{g}: {name}" if g else name

    header = list(row_axes) + [head(k) for k in cols]
    body = [(list(r), [grid.get((r, k), []) for k in cols]) for r in rows]
    return header, body


def _fixed(results: dict) -> str:
    cells = results.get("cells") or []
    same = [f"{a}={cells[0]['axes'][a]}" for a in AXIS_NAMES
            if cells and len({str(c["axes"].get(a)) for c in cells}) == 1]
    return ", ".join(same)


def _md(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def markdown(results: dict) -> str:
    run = results.get("run") or {}
    header, body = _table(results)
    lines = [f"Compatibility matrix of caskit run `{run.get('id')}` (caskit {run.get('caskit_version')}"
             + (f", {str(run.get('git_sha'))[:12]}" if run.get("git_sha") else "") + f", {run.get('start')})."]
    counts = ", ".join(f"{k} {v}" for k, v in (results.get("summary") or {}).items() if v)
    if counts:
        lines.append(f"Verdicts: {counts}.")
    if _fixed(results):
        lines.append(f"Same in every cell: {_fixed(results)}.")
    lines += ["", "| " + " | ".join(_md(h) for h in header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_md(v) for v in axes + [slot(s) for s in slots]) + " |" for axes, slots in body]
    lines += ["", "Each slot: the negotiated mode (XIVE or XICS; `in-kernel` where KVM runs the controller) "
                  "or how the cell ended, and its verdict (PASS as predicted, XFAIL a predicted failure, "
                  "FAIL the system misbehaved, ERROR not judged, SKIP not offered by the host)."]
    return "\n".join(lines) + "\n"


def csv_text(results: dict) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(CSV_COLUMNS)
    for c in results.get("cells") or []:
        e, o, a = c.get("expected") or {}, c.get("observed") or {}, c.get("axes") or {}
        mig = c.get("migration")
        w.writerow([c["id"], c.get("host"), kvm_mode(results, c), *[a.get(n, "") for n in AXIS_NAMES],
                    " ".join(x["name"] if isinstance(x, dict) else str(x) for x in c.get("workloads") or []),
                    mig.get("plan") if isinstance(mig, dict) else (c.get("migration_plan") or "none"),
                    e.get("mode") or "", e.get("error") or "", e.get("rule") or "", e.get("source") or "",
                    o.get("mode") or "", o.get("platform_support") or "", (o.get("host") or {}).get("irqchip") or "",
                    o.get("error") or "", c.get("verdict"), c.get("reason") or "", c.get("qemu_version") or "",
                    c.get("duration_s", "")])
    return buf.getvalue()


def html_table(results: dict) -> str:
    """The matrix alone, as a small standalone HTML page (no script, no style sheet to fetch)."""
    run = results.get("run") or {}
    header, body = _table(results)
    e = html.escape
    rows = "\n".join("<tr>" + "".join(f"<th>{e(v)}</th>" for v in axes)
                     + "".join(f'<td class="{e(worst(s))}">{e(slot(s))}</td>' for s in slots) + "</tr>"
                     for axes, slots in body)
    return (f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
            f"<title>caskit compatibility matrix {e(str(run.get('id')))}</title>\n<style>\n"
            "table { border-collapse: collapse; } th, td { border: 1px solid #bbb; padding: 0.3em 0.6em; }\n"
            "th { background: #eee; } td.PASS { background: #c8f0c8; } td.FAIL { background: #f5b3b3; }\n"
            "td.ERROR { background: #f8d58c; } td.XFAIL { background: #cfe3f7; } td.SKIP { background: #e4e4e4; }\n"
            "</style>\n</head>\n<body>\n"
            f"<p>Compatibility matrix of caskit run <code>{e(str(run.get('id')))}</code>"
            + (f"; same in every cell: {e(_fixed(results))}" if _fixed(results) else "") + ".</p>\n"
            "<table>\n<tr>" + "".join(f"<th>{e(h)}</th>" for h in header) + "</tr>\n" + rows + "\n</table>\n"
            "</body>\n</html>\n")


def export(results: dict, fmt: str) -> str:
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; formats: {', '.join(FORMATS)}")
    return {"markdown": markdown, "csv": csv_text, "html": html_table}[fmt](results)
