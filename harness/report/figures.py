"""What each chart of the report shows, taken from results.json and the cells' heartbeat logs.

The data here is plain (lists of tuples); harness/report/charts.py draws it. Reports read only what the
run wrote: the records, and each machine's heartbeat.log ("<host monotonic time> <line>", the
same clock as a hop's t_migrate).
"""

from __future__ import annotations

import re
from pathlib import Path

from . import charts

# Each workload's rate metric: interrupts delivered per second while it ran.
RATES = {"ipi": "ipis_per_s", "virtio-net": "irqs_per_s", "virtio-blk": "irqs_per_s"}
HB_LINE = re.compile(r"^(\d+\.\d+) HB (\d+) ")
BEFORE_S = 5.0  # how much of the source's heartbeat before `migrate` a hop's chart shows


def cell_mode(c: dict) -> str | None:
    o = c.get("observed") or {}
    return o.get("mode") or (o.get("guest") or {}).get("mode")


def rate_rows(cells: list[dict], group_of=None) -> list[tuple[str, str, float]]:
    """(workload [KVM mode], negotiated mode, rate) for every workload that measured a rate."""
    groups = {group_of(c) for c in cells} if group_of else set()
    out = []
    for c in cells:
        mode = cell_mode(c)
        if mode not in ("xive", "xics"):
            continue
        for w in c.get("workloads") or []:
            if not isinstance(w, dict) or w.get("name") not in RATES:
                continue
            suffix = f"\n{group_of(c)}" if len(groups) > 1 else ""
            for label, v in _rates(w["name"], w.get("metrics") or {}, RATES[w["name"]]):
                out.append((label + suffix, mode, v))
    return out


def _rates(name: str, metrics: dict, key: str) -> list[tuple[str, float]]:
    """A workload's rate, or one per device where it measured several (virtio-net: its MSI-X
    NIC and its INTx NIC, "virtio-net msix" and "virtio-net lsi")."""
    v = metrics.get(key)
    if isinstance(v, (int, float)):
        return [(name, float(v))] if v > 0 else []
    return [(f"{name} {sub}", float(m[key])) for sub, m in metrics.items()
            if isinstance(m, dict) and isinstance(m.get(key), (int, float)) and m[key] > 0]


def _build_label(h: dict) -> str:
    src, dst = h.get("source_build") or "?", h.get("destination_build") or "?"
    return src if src == dst else f"{src} →\n{dst}"


def downtime_rows(cells: list[dict]) -> list[tuple[str, str, float]]:
    """(build, negotiated mode, QMP's downtime in ms) of every completed hop."""
    out = []
    for c in cells:
        for h in (c.get("migration") or {}).get("hops") or []:
            q = h.get("qmp") or {}
            if q.get("status") == "completed" and isinstance(q.get("downtime_ms"), (int, float)):
                mode = (h.get("mode_before") or {}).get("guest") or cell_mode(c) or "?"
                out.append((_build_label(h), mode, float(q["downtime_ms"])))
    return out


def overview_charts(results: dict, group_of=None) -> list[dict]:
    """The run's charts: interrupt rates per workload (XIVE vs XICS), downtime per build and mode."""
    cells = results.get("cells") or []
    out = []
    rates = rate_rows(cells, group_of)
    if rates:
        out.append({"id": "chart-rates", "caption": "Interrupt rates per workload, XIVE vs XICS: bars are the mean "
                    "over cells, dots the cells (IPIs/s for ipi, the device's interrupts/s for virtio-net and virtio-blk)",
                    "svg": charts.grouped_bars(rates, title="interrupt rate per workload", ylabel="per second")})
    down = downtime_rows(cells)
    if down:
        out.append({"id": "chart-downtime", "caption": "Migration downtime per QEMU build and negotiated mode, as QMP "
                    "accounts it (ms; bars the mean, dots the hops)",
                    "svg": charts.grouped_bars(down, title="downtime per build and mode", ylabel="ms")})
    return out


def machine_dir(cell_dir: Path, machine: str) -> Path:
    """A machine's log directory: the cell's own for the first machine ("A"), a subdirectory else."""
    sub = cell_dir / machine
    return sub if machine != "A" and sub.is_dir() else cell_dir


def beats(path: Path) -> list[tuple[float, int]]:
    """(host time, beat number) of every heartbeat line in a heartbeat.log."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return []
    return [(float(m.group(1)), int(m.group(2))) for m in map(HB_LINE.match, text.splitlines()) if m]


def hop_chart(cell_dir: Path, hop: dict) -> str:
    """The heartbeat around one hop: the source's beats before it, the destination's after."""
    t0 = hop.get("t_migrate")
    if not isinstance(t0, (int, float)):
        return ""
    cont = hop.get("harness_s")
    window = None
    if isinstance(cont, (int, float)) and isinstance(hop.get("window_s"), (int, float)):
        window = (cont, cont + hop["window_s"])
    end = (window[1] if window else 10.0) + 1.0
    series = {}
    for role, machine in (("source", hop.get("source")), ("destination", hop.get("destination"))):
        if not machine:
            continue
        pts = [(t - t0, s) for t, s in beats(machine_dir(cell_dir, machine) / "heartbeat.log") if -BEFORE_S <= t - t0 <= end]
        series[f"{machine} ({role})"] = pts
    stall = (hop.get("liveness") or {}).get("max_silence_after_first_s") if "heartbeat-stall" in (hop.get("symptoms") or []) else None
    return charts.heartbeat(series, cont_s=cont if isinstance(cont, (int, float)) else None, window=window,
                            title=f"hop {hop.get('name')}: {hop.get('source')} → {hop.get('destination')}", stall_s=stall)
