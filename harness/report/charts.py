"""The report's charts, drawn by matplotlib as SVG text to put inline in a page.

Why matplotlib rendering SVG at report time, not a JavaScript charting library: the report is
archived as a CI artifact and opened offline, years later; an inline SVG needs no script, no
network and no inlined library (a JS chart library would add a few hundred kB to every page and
draw only when its code runs), its text stays searchable (svg.fonttype none), and the page is
the same in any browser. matplotlib is imported only when a chart is drawn, so a run without
charts to draw pays nothing for it.

Every function takes plain data and returns the <svg> element's text, or "" when there is
nothing to draw. No pyplot: Figure objects own no global state, so drawing is safe in threads.
"""

from __future__ import annotations

import io
import re

MODE_COLOURS = {"xive": "#1f77b4", "xics": "#ff7f0e"}
MACHINE_COLOURS = ("#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#17becf")
VERDICT_COLOURS = {"PASS": "#2ca02c", "FAIL": "#d62728", "XFAIL": "#1f77b4", "ERROR": "#ff7f0e",
                   "SKIP": "#7f7f7f", "FLAKY": "#bcbd22"}


def _figure(width: float, height: float):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    return fig, fig.subplots()


def _svg(fig) -> str:
    import matplotlib

    buf = io.StringIO()
    # Text as text (searchable, small), and ids that do not change from one render to the next.
    with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": "caskit", "font.family": "sans-serif"}):
        fig.savefig(buf, format="svg", metadata={"Date": None})
    text = buf.getvalue()
    # Inline in HTML: no XML prolog, and no RDF metadata block (namespace URLs a reader mistakes for fetches).
    return re.sub(r"<metadata>.*?</metadata>\s*", "", text[text.index("<svg"):], flags=re.S)


def grouped_bars(rows: list[tuple[str, str, float]], *, title: str, ylabel: str, log: bool = False) -> str:
    """rows: (category, series, value); one bar per series in each category, with each value as
    a dot over its bar's mean (a bar is the mean, the dots are the cells). A logarithmic axis
    when asked, or when the values span more than two orders of magnitude."""
    if not rows:
        return ""
    cats = list(dict.fromkeys(r[0] for r in rows))
    series = sorted({r[1] for r in rows}, key=lambda s: (s not in MODE_COLOURS, s))
    fig, ax = _figure(max(4.0, 1.1 * len(cats) + 2.0), 3.2)
    width = 0.8 / len(series)
    for j, s in enumerate(series):
        xs, means = [], []
        for i, c in enumerate(cats):
            vals = [v for cc, ss, v in rows if cc == c and ss == s]
            if not vals:
                continue
            x = i - 0.4 + width * (j + 0.5)
            xs.append(x)
            means.append(sum(vals) / len(vals))
            ax.scatter([x] * len(vals), vals, s=10, color="#333", zorder=3)
            ax.annotate(f"{means[-1]:.3g}", (x, means[-1]), ha="center", va="bottom", fontsize=7,
                        xytext=(0, 2), textcoords="offset points")
        ax.bar(xs, means, width * 0.95, label=s, color=MODE_COLOURS.get(s, MACHINE_COLOURS[j % len(MACHINE_COLOURS)]))
    ax.set_xticks(range(len(cats)), cats, fontsize=8)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    values = [r[2] for r in rows if r[2] > 0]
    if log or (values and max(values) / min(values) > 100):
        # IPIs under KVM run at 10^5/s, a NIC at 10^1/s: one linear axis would flatten the NIC.
        from matplotlib.ticker import LogLocator, ScalarFormatter

        ax.set_yscale("log")
        ax.yaxis.set_major_locator(LogLocator(base=10))
        ax.yaxis.set_major_formatter(ScalarFormatter())
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    return _svg(fig)


def heartbeat(series: dict[str, list[tuple[float, int]]], *, cont_s: float | None, window: tuple[float, float] | None,
              title: str, stall_s: float | None = None) -> str:
    """The guest's heartbeat around one hop: beat number over host time, 0 = `migrate` sent.
    `series`: machine -> [(seconds from migrate, beat number)]. The gap between the source's
    last beat and the destination's first is drawn and labelled; a stall after the guest
    resumed is labelled too."""
    if not any(series.values()):
        return ""
    fig, ax = _figure(7.0, 3.0)
    for i, (name, pts) in enumerate(series.items()):
        if pts:
            ax.plot([t for t, _ in pts], [s for _, s in pts], ".", ms=4, label=name,
                    color=MACHINE_COLOURS[i % len(MACHINE_COLOURS)])
    ax.axvline(0.0, color="#d62728", lw=1, ls="--", label="migrate")
    if cont_s is not None:
        ax.axvline(cont_s, color="#555", lw=1, ls=":", label="cont")
    if window:
        ax.axvspan(window[0], window[1], color="#2ca02c", alpha=0.08, label="liveness window")
    names = list(series)
    after = sorted((p for n in names[1:] for p in series[n]), key=lambda p: p[0])
    # A live source goes on beating while its memory is copied: the gap is from its last beat
    # before the destination's first, wherever `migrate` was sent.
    before = [p for p in series.get(names[0], []) if not after or p[0] < after[0][0]] if names else []
    if before:
        t0, s0 = before[-1]
        if after:
            t1, s1 = after[0]
            ax.annotate("", xy=(t1, s1), xytext=(t0, s0), arrowprops={"arrowstyle": "<->", "color": "#d62728"})
            ax.annotate(f"gap {t1 - t0:.2f} s", ((t0 + t1) / 2, max(s0, s1)), xytext=(0, 12), textcoords="offset points",
                        ha="center", color="#d62728", fontsize=8)
        else:
            end = window[1] if window else t0 + 1
            ax.annotate(f"no beat after the hop ({end - t0:.1f} s silent)", (t0, s0), xytext=(4, 10),
                        textcoords="offset points", color="#d62728", fontsize=8)
    if stall_s is not None:
        ax.text(0.99, 0.02, f"stall: {stall_s:.1f} s without a beat", transform=ax.transAxes, ha="right",
                color="#d62728", fontsize=8)
    ax.set_xlabel("host time from migrate (s)")
    ax.set_ylabel("heartbeat number")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7, loc="upper left")
    ax.grid(alpha=0.3)
    return _svg(fig)


def durations(points: list[tuple[str, float, str]], *, title: str) -> str:
    """A cell's duration across runs: (run label, seconds, verdict), oldest first."""
    if not points:
        return ""
    fig, ax = _figure(max(4.0, 0.5 * len(points) + 2.0), 2.8)
    xs = range(len(points))
    ax.plot(list(xs), [p[1] for p in points], "-", color="#999", lw=1)
    ax.scatter(list(xs), [p[1] for p in points], c=[VERDICT_COLOURS.get(p[2], "#000") for p in points], zorder=3)
    ax.set_xticks(list(xs), [p[0] for p in points], rotation=45, ha="right", fontsize=7)
    ax.set_ylabel("seconds")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    return _svg(fig)
