"""/proc/interrupts as data: per line, the per-CPU counts, chip, hardware IRQ and name. Pure."""

from __future__ import annotations

from dataclasses import dataclass, field

from .errors import ObserveError


class InterruptsFormatError(ObserveError):
    """Text that is not /proc/interrupts."""


@dataclass(frozen=True)
class Line:
    label: str  # "16" or "SPU"
    counts: tuple[int, ...]  # per CPU column, in header order
    chip: str | None = None  # "XIVE-IPI", "XICS", ... (numbered lines only)
    hwirq: str | None = None
    trigger: str | None = None  # "Edge" | "Level"
    name: str = ""  # "IPI-0", "virtio0-input.0", "Spurious interrupts"

    @property
    def total(self) -> int:
        return sum(self.counts)


@dataclass(frozen=True)
class Table:
    cpus: tuple[int, ...]  # CPU numbers of the columns (offline CPUs have no column)
    lines: tuple[Line, ...] = field(default_factory=tuple)

    def by_label(self, label: str) -> Line | None:
        return next((l for l in self.lines if l.label == label), None)

    def by_name(self, name: str) -> list[Line]:
        return [l for l in self.lines if l.name == name]

    def per_cpu(self, line: Line) -> dict[int, int]:
        return dict(zip(self.cpus, line.counts))


def parse(text: str) -> Table:
    rows = [r for r in text.replace("\r", "").splitlines() if r.strip()]
    if not rows or not rows[0].split() or not all(c.startswith("CPU") for c in rows[0].split()):
        raise InterruptsFormatError(f"no CPU header in /proc/interrupts: {text[:120]!r}")
    cpus = tuple(int(c[3:]) for c in rows[0].split())
    n = len(cpus)
    lines = []
    for r in rows[1:]:
        parts = r.split()
        if not parts or not parts[0].endswith(":"):
            continue
        label = parts[0][:-1]
        counts = []
        for p in parts[1:1 + n]:
            if not p.isdigit():
                break
            counts.append(int(p))
        rest = parts[1 + len(counts):]
        counts += [0] * (n - len(counts))  # ERR:/MIS: style lines carry one total only
        if label.isdigit() and len(rest) >= 3:
            chip, hwirq = rest[0], rest[1]
            trigger = rest[2] if rest[2] in ("Edge", "Level") else None
            name = " ".join(rest[3:] if trigger else rest[2:])
            lines.append(Line(label, tuple(counts), chip, hwirq, trigger, name))
        else:
            lines.append(Line(label, tuple(counts), name=" ".join(rest)))
    return Table(cpus, tuple(lines))


def delta(before: Table, after: Table) -> dict[str, dict[int, int]]:
    """Per line label, per CPU: how much the count grew. Lines or CPUs missing on one side count 0."""
    out: dict[str, dict[int, int]] = {}
    for la in after.lines:
        lb = before.by_label(la.label)
        # Labels like LOC repeat (two timer lines); pair them by position among equal labels.
        if [l.label for l in after.lines].count(la.label) > 1:
            continue
        b = before.per_cpu(lb) if lb else {}
        out[la.label] = {cpu: c - b.get(cpu, 0) for cpu, c in after.per_cpu(la).items()}
    return out
