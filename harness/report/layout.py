"""The shape of the compatibility matrix, shared by report.html and the exports: which KVM mode a
cell ran in, how cells lay out in rows and columns, and what a cell came to in a word. Pure."""

from __future__ import annotations

from ..axes import AXIS_NAMES

COLUMN_PREFERENCE = ("ic_mode", "guest_xive", "cpu_compat", "kernel_irqchip", "cpu", "accel", "qemu", "firmware", "smp")


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
    # A cell "not run" whose plan is not known (a run read back from an older history) has no axes.
    varying = [a for a in AXIS_NAMES if len({str(c["axes"].get(a, "?")) for c in cells}) > 1]
    if len({c["host"] for c in cells}) > 1:
        varying.insert(0, "host")
    if grouped:
        varying = [a for a in varying if a not in ("host", "accel")]

    def val(c, a):
        return str(c["host"] if a == "host" else c["axes"].get(a, "?"))

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


# How a cell that negotiated nothing ended, by its error's class (harness/errors.py).
ENDINGS = {"QemuRefused": "refused", "GuestHang": "hang", "QemuHung": "hang", "GuestPanic": "panic",
           "QemuCrashed": "crash"}


def outcome(c: dict) -> str:
    """What a cell came to, in a word or two: the negotiated mode, or how it failed."""
    o = c.get("observed") or {}
    if c.get("not_run"):
        return "not run"
    if o.get("mode"):
        irqchip = (o.get("host") or {}).get("irqchip")
        return o["mode"] + (f" {irqchip}" if irqchip and irqchip != "emulated" else "")
    if c.get("verdict") == "SKIP":
        return "skipped"
    if o.get("error_kind") in ENDINGS:
        return ENDINGS[o["error_kind"]]
    if o.get("stage") in ("qemu-start", "cas") and o.get("error"):
        return "refused"
    return "error" if o.get("error") else "-"


# The colour of a slot with several cells: the verdict a reader must see first.
SEVERITY = ("FAIL", "ERROR", "FLAKY", "XFAIL", "SKIP", "PASS")


def worst(cells: list[dict]) -> str:
    found = {c.get("verdict") for c in cells}
    return next((v for v in SEVERITY if v in found), "")


def slot(cells: list[dict]) -> str:
    return "; ".join(f"{outcome(c)} ({c.get('verdict')})" for c in cells)
