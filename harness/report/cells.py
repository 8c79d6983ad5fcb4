"""One page per cell, cells/<id>/index.html: everything a person needs to judge the cell.

Expected against observed with the deciding rule and its source, the guest's and QEMU's views,
workload metrics, each migration hop with its heartbeat chart, the known issue that matched and
the signals none explained, the kernel log's findings, the hang forensics, the console and QMP
logs of every machine (escaped, searchable on the page), and the cell's history across runs where
a results history exists. Derived from results.json and the files in the cell's directory only.
"""

from __future__ import annotations

import html
import json
import re
from pathlib import Path

from . import cell_history, charts, figures
from ..records import known_issues_of
from ..results import atomic_write
from ..templating import render_html

MAX_LOG = 1_000_000  # characters of one log put in the page; the file itself is linked beside it
CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")  # all control characters but tab and newline
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
LOGS = (("console", "console.log"), ("QEMU stderr", "qemu-stderr.log"), ("QMP", "qmp.jsonl"),
        ("heartbeat", "heartbeat.log"), ("QEMU argv", "qemu-argv.txt"))


def clean(text: str) -> str:
    """Log text as a page shows it: no terminal escapes, no control characters, \\r\\n as \\n."""
    return CONTROL.sub("", ANSI.sub("", text.replace("\r\n", "\n").replace("\r", "\n")))


def read_log(p: Path) -> tuple[str, bool]:
    """(text, cut) of a log file, cut to its last MAX_LOG characters."""
    try:
        text = clean(p.read_text(errors="replace"))
    except OSError:
        return "", False
    return (text[-MAX_LOG:], True) if len(text) > MAX_LOG else (text, False)


def qmp_lines(text: str) -> str:
    """qmp.jsonl as a readable exchange: "-> command", "<- answer", "!! error", "** event"."""
    out = []
    for line in text.splitlines():
        try:
            e = json.loads(line)
        except ValueError:
            out.append(line)
            continue
        t = e.pop("t", "")
        for k, arrow in (("send", "->"), ("recv", "<-"), ("error", "!!"), ("lost", "!!"), ("event", "**"),
                         ("greeting", "<-")):
            if k in e:
                out.append(f"{t} {arrow} {json.dumps(e[k], separators=(',', ':'))}")
                break
        else:
            out.append(line)
    return "\n".join(out)


def forensics_sections(text: str) -> list[tuple[str, str]]:
    """forensics.txt as (heading, body) pairs: its "## " headings (last console lines, info pic,
    info irq, info registers -a, the SysRq backtraces)."""
    out: list[tuple[str, list[str]]] = [("why", [])]
    for line in text.splitlines():
        if line.startswith("## "):
            out.append((line[3:].strip(), []))
        else:
            out[-1][1].append(line)
    return [(h, "\n".join(b).strip()) for h, b in out if "\n".join(b).strip()]


def machines(cell_dir: Path) -> list[str]:
    """The cell's machines: "A" (its own directory), then every subdirectory that holds logs."""
    subs = sorted(p.parent.name for p in cell_dir.glob("*/qemu-argv.txt"))
    return (["A"] if (cell_dir / "qemu-argv.txt").exists() or (cell_dir / "console.log").exists() else []) + subs


def machine_logs(cell_dir: Path) -> list[dict]:
    out = []
    for m in machines(cell_dir):
        d = figures.machine_dir(cell_dir, m)
        prefix = "" if d == cell_dir else f"{m}/"
        logs = []
        for title, name in LOGS:
            if not (d / name).exists():
                continue
            text, cut = read_log(d / name)
            if name == "qmp.jsonl":
                text = qmp_lines(text)
            logs.append({"title": title, "href": prefix + name, "text": text, "cut": cut,
                         "anchor": f"log-{re.sub(r'[^A-Za-z0-9]', '-', prefix + name)}"})
        out.append({"name": m, "logs": logs})
    return out


def hop_views(cell_dir: Path, record: dict) -> list[dict]:
    out = []
    for h in (record.get("migration") or {}).get("hops") or []:
        out.append({"hop": h, "chart": figures.hop_chart(cell_dir, h),
                    "rows": _hop_rows(h)})
    return out


def _hop_rows(h: dict) -> list[tuple[str, str]]:
    q, lv = h.get("qmp") or {}, h.get("liveness") or {}
    rows = [("route", f"{h.get('source')} ({h.get('source_host')}, {h.get('source_build')}) → "
                      f"{h.get('destination')} ({h.get('destination_host')}, {h.get('destination_build')})"),
            ("stream", str(h.get("uri") or "")),
            ("QMP", _pairs({k: v for k, v in q.items() if v is not None})),
            ("harness: migrate → cont", f"{h.get('harness_s')} s" if h.get("harness_s") is not None else "-"),
            ("liveness window", f"{h.get('window_s')} s, wall {h.get('window_wall')}"),
            ("heartbeat", ", ".join(f"{k} {v}" for k, v in lv.items() if v not in (None, [], ""))),
            ("mode before → after", f"{_pairs(h.get('mode_before'))} → {_pairs(h.get('mode_after'))}")]
    if h.get("expected"):
        rows.append(("the model predicts", str(h["expected"])))
    if h.get("refusal"):
        rows.append(("the destination refused", str(h["refusal"])))
    if h.get("progress"):
        rows.append(("workloads after the hop", json.dumps(h["progress"], default=str)))
    if h.get("source_after"):
        rows.append(("the source after the refusal", json.dumps(h["source_after"], default=str)[:2000]))
    return rows


def _pairs(d) -> str:
    return ", ".join(f"{k} {v}" for k, v in d.items()) if isinstance(d, dict) and d else "-"


def _flat(metrics: dict, prefix: str = "") -> list[tuple[str, str]]:
    """Nested workload metrics as (dotted key, value) rows."""
    out = []
    for k, v in (metrics or {}).items():
        if isinstance(v, dict) and v and all(not isinstance(x, dict) for x in v.values()) and len(v) <= 8:
            out.append((prefix + str(k), ", ".join(f"{a}: {b}" for a, b in v.items())))
        elif isinstance(v, dict):
            out += _flat(v, f"{prefix}{k}.")
        else:
            out.append((prefix + str(k), json.dumps(v, default=str) if isinstance(v, (list, tuple)) else str(v)))
    return out


def history_view(out: Path, record: dict) -> dict:
    h = cell_history.lookup(out, record["id"])
    chart = ""
    if h.available:
        pts = [(r["run"][-12:], float(r["duration_s"]), r["verdict"]) for r in h.rows
               if isinstance(r.get("duration_s"), (int, float))]
        if len(pts) >= 2:  # one run is a number, not a trend
            chart = charts.durations(pts, title="duration across runs (colour: verdict)")
    return {"rows": h.rows, "note": h.note, "chart": chart, "hook": f"{cell_history.HISTORY_MODULE}."
                                                                   f"{cell_history.HISTORY_FUNCTION}"}


def cell_page(results: dict, record: dict, out: Path, kvm: str) -> str:
    cell_dir = Path(out) / "cells" / record["id"]
    forensics, _ = read_log(cell_dir / "forensics.txt")
    files = sorted(str(p.relative_to(cell_dir)) for p in cell_dir.rglob("*") if p.is_file()
                   and p.name != "index.html" and not p.name.startswith("."))
    mig = record.get("migration") or {}
    return render_html(
        "cell.html.j2", run=results["run"], x=record, kvm=kvm, machines=machine_logs(cell_dir),
        hops=hop_views(cell_dir, record), forensics=forensics_sections(forensics) if forensics else [],
        workloads=[{**w, "rows": _flat(w.get("metrics") or {})} for w in record.get("workloads") or []
                   if isinstance(w, dict)],
        known=known_issues_of(record), stale=list(mig.get("no_longer_reproduces") or []),
        history=history_view(out, record), files=files,
        has_reproduce=(cell_dir / "reproduce.sh").exists())


def write_cell_pages(out: Path, results: dict, kvm_of) -> list[Path]:
    """cells/<id>/index.html for every cell that has a directory (a cell never started has none)."""
    written = []
    for c in results.get("cells") or []:
        d = Path(out) / "cells" / c["id"]
        if not d.is_dir():
            continue
        try:
            text = cell_page(results, c, out, kvm_of(c))
        except Exception as e:  # noqa: BLE001 -- one odd record must not cost the run its other pages
            text = (f"<!DOCTYPE html><meta charset=\"utf-8\"><title>{html.escape(c['id'])}</title>"
                    f"<p>caskit could not render this cell's page: {html.escape(repr(e))}. Its files: "
                    f"<a href=\"result.json\">result.json</a>; <a href=\"../../report.html\">the run's report</a>.</p>")
        atomic_write(d / "index.html", text)
        (d / "index.html").chmod(0o644)
        written.append(d / "index.html")
    return written
