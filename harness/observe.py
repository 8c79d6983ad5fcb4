"""Reading the negotiated interrupt mode from the guest's and the host's side. Pure parsers.

Guest side: the output of guest_tests/bin/ck-observe. Host side: QMP `info pic`.
Each signal gives a mode on its own; the guest view is only trusted when its signals agree.
"""

from __future__ import annotations

import re

from . import interrupts
from .cell import GuestView, HostView
from .errors import ObserveError

__all__ = ["ObserveError", "guest_view", "host_view"]

CHIP_MODE = {"XIVE-IPI": "xive", "XIVE-IRQ": "xive", "XICS": "xics"}
COMPAT_MODE = {"ibm,power-ivpe": "xive", "IBM,ppc-xicp": "xics", "IBM,ppc-xics": "xics"}




def sections(text: str) -> dict[str, str]:
    out: dict[str, list[str]] = {}
    cur = None
    for line in text.replace("\r", "").splitlines():
        m = re.match(r"^== (\S+)$", line)
        if m:
            cur = m.group(1)
            out[cur] = []
        elif cur is not None:
            out[cur].append(line)
    return {k: "\n".join(v) for k, v in out.items()}


def parse_interrupts(text: str) -> tuple[list[str], str | None, int | None]:
    """(chip names, the IPI line's chip, total spurious count) from /proc/interrupts."""
    try:
        table = interrupts.parse(text)
    except interrupts.InterruptsFormatError as e:
        raise ObserveError(str(e)) from e
    chips = list(dict.fromkeys(l.chip for l in table.lines if l.chip))
    ipi = next((l.chip for l in table.lines if l.chip and l.name.startswith("IPI")), None)
    spu = table.by_label("SPU")
    return chips, ipi, spu.total if spu else None


def parse_platform_support(text: str) -> str | None:
    """Byte 23 of option vector 5, from the (index, value) pairs of ibm,arch-vec-5-platform-support."""
    vals = text.split()
    if not vals or vals == ["missing"]:
        return None
    try:
        nums = [int(v, 16) for v in vals]
    except ValueError as e:
        raise ObserveError(f"ibm,arch-vec-5-platform-support is not hex bytes: {text[:100]!r}") from e
    for i in range(0, len(nums) - 1, 2):
        if nums[i] == 23:
            return f"0x{nums[i + 1]:02x}"
    return None


def guest_view(text: str) -> GuestView:
    s = sections(text)
    if "interrupts" not in s:
        raise ObserveError("ck-observe output has no interrupts section")
    v = GuestView()
    v.chips, v.ipi_chip, v.spurious = parse_interrupts(s["interrupts"])
    modes = {CHIP_MODE[c] for c in v.chips if c in CHIP_MODE}
    v.mode_from_chips = modes.pop() if len(modes) == 1 else None
    v.platform_support = parse_platform_support(s.get("platform-support", ""))
    v.ic_compatible = [l.split(": ", 1)[1].strip() for l in s.get("ic-nodes", "").splitlines() if ": " in l]
    dt_modes = {COMPAT_MODE[c] for line in v.ic_compatible for c in line.split() if c in COMPAT_MODE}
    v.mode_from_dt = dt_modes.pop() if len(dt_modes) == 1 else None
    # Only the XIVE driver's own lines ("xive: ..."), not e.g. a command line that mentions xive=off.
    v.dmesg_xive = [l.strip() for l in s.get("dmesg", "").splitlines() if re.search(r"(^|\]\s*)xive: ", l)]
    # A XIVE guest says which backend it initialised; a XICS guest prints no xive: line at all.
    if any("Interrupt handling initialized with" in l for l in v.dmesg_xive):
        v.mode_from_dmesg = "xive"
    elif not v.dmesg_xive:
        v.mode_from_dmesg = "xics"
    return v


def host_view(info_pic: str, configured_ic_mode: str | None = None) -> HostView:
    v = HostView(configured_ic_mode=configured_ic_mode)
    xics = re.search(r"^CPU \d+ XIRR=", info_pic, re.M) or re.search(r"^ICS [0-9a-f]+\.\.", info_pic, re.M)
    xive = re.search(r"^CPU\[\d+\]:\s+QW", info_pic, re.M) or re.search(r"^XIVE", info_pic, re.M)
    if xics and not xive:
        v.mode = "xics"
    elif xive and not xics:
        v.mode = "xive"
    m = re.search(r"^irqchip: (in-kernel|emulated)\s*$", info_pic, re.M)
    v.irqchip = m.group(1) if m else None
    return v
