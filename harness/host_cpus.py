"""What the emulating QEMU (the L0 under an emulated host) shows of the host's vCPUs while a guest
inside that host hangs. Pure: it parses HMP `info registers -a` samples, names the functions of
the host's own kernel they stopped in, and says what they prove.

Why sample the L0: an L2 (a guest of the emulated host) that stops taking interrupts can be
waiting on something only the L0 can see. Measured on nested-papr (docs/hosts.md): Linux 6.8+
running KVM on the nested API v2 hands an L2's pending external interrupt to the L0 as LPCR[MER]
(Mediated External Request), and QEMU's TCG never turns MER into an interrupt. The L0's vCPU then
runs the L2 with LPCR[MER]=1 and MSR[EE]=1 (external interrupts enabled), which real POWER
hardware never lets stand: it takes the interrupt at once.

Measured on powernv9 (docs/hosts.md): the L1 itself (hypervisor state, external interrupts off)
spinning in the kernel's timekeeping (second_overflow, timekeeping_advance) in every sample, the
L1's watchdog reporting a hard LOCKUP: its timebase stepped back while it ran a guest."""

from __future__ import annotations

import bisect
import re
from dataclasses import dataclass

LPCR_MER = 0x800  # Power ISA 3.1, LPCR bit 52: Mediated External Exception Request
MSR_EE = 0x8000  # MSR bit 48: External interrupts enabled
MSR_HV = 1 << 60  # MSR bit 3: hypervisor state (set in the L1's own code, clear in its guest's)
FINDING_KINDS = ("undelivered-mer", "host-timekeeping-spin")
# Where the host kernel's timekeeping spins when its clock source stepped back: the delta is
# then near 2^64 cycles and accumulating it one second at a time never ends (Linux 6.1
# kernel/time/timekeeping.c; clocksource_delta has no negative-motion check on powerpc there).
TIMEKEEPING = frozenset({"second_overflow", "timekeeping_advance", "logarithmic_accumulation",
                         "accumulate_nsecs_to_secs", "timekeeping_update"})
# A spin is every sample in those functions, over at least this many samples (a second or more).
MIN_SPIN_SAMPLES = 10
# A pending-and-enabled interrupt seen once may be one TCG is about to take: it must persist.
MIN_SAMPLES = 2

_CPU = re.compile(r"^CPU#(\d+)\s*$", re.M)
_REG = {name: re.compile(rf"(?:^|\s){name}\s+([0-9a-fA-F]{{16}})(?:\s|$)", re.M) for name in ("NIP", "MSR", "LPCR")}


@dataclass(frozen=True)
class VcpuState:
    cpu: int
    nip: int
    msr: int
    lpcr: int | None  # None: the QEMU build did not print it

    def line(self, symbols: "Symbols | None" = None) -> str:
        lpcr = f"{self.lpcr:016x}" if self.lpcr is not None else "?"
        where = symbols.name(self.nip) if symbols is not None and self.in_host else None
        return (f"CPU {self.cpu}: NIP {self.nip:016x}{f' ({where})' if where else ''} MSR {self.msr:016x} "
                f"LPCR {lpcr}")

    @property
    def in_host(self) -> bool:
        """The host's own kernel in hypervisor state (a bare-metal-like L1: powernv9), not its guest."""
        return bool(self.msr & MSR_HV)

    @property
    def undelivered_external(self) -> bool:
        """A guest of the L1 (MSR[HV]=0) with MER requested and external interrupts enabled. This
        is exactly when caskit's patched L0 (patches/qemu/, excp_helper.c ppc_mediated_ext_unmasked)
        takes the interrupt, at the next instruction boundary: there it never stands in two
        samples, and its known issue does not apply there anyway (l0_without)."""
        return (self.lpcr is not None and bool(self.lpcr & LPCR_MER) and bool(self.msr & MSR_EE)
                and not self.msr & MSR_HV)


class Symbols:
    """The functions of the host's kernel, from its ELF symbol table (elf.function_symbols)."""

    def __init__(self, functions: list[tuple[int, int, str]]):
        self.functions = functions
        self._starts = [f[0] for f in functions]

    def function(self, addr: int) -> str | None:
        i = bisect.bisect_right(self._starts, addr) - 1
        if i < 0:
            return None
        start, size, name = self.functions[i]
        # Assembly entry points often have no size: they end where the next function starts.
        end = start + size if size else (self._starts[i + 1] if i + 1 < len(self._starts) else start + 1)
        return name if addr < end else None

    def name(self, addr: int) -> str | None:
        f = self.function(addr)
        return f"{f}+0x{addr - self._starts[bisect.bisect_right(self._starts, addr) - 1]:x}" if f else None


def parse(text: str) -> list[VcpuState]:
    """Every vCPU of one `info registers -a` answer (QEMU's ppc_cpu_dump_state layout: a
    `CPU#N` line, then NIP, MSR, ... and LPCR among the SPRs)."""
    out = []
    heads = list(_CPU.finditer(text))
    for i, h in enumerate(heads):
        block = text[h.end():heads[i + 1].start() if i + 1 < len(heads) else len(text)]
        regs = {k: r.search(block) for k, r in _REG.items()}
        if regs["NIP"] is None or regs["MSR"] is None:
            continue
        out.append(VcpuState(int(h.group(1)), int(regs["NIP"].group(1), 16), int(regs["MSR"].group(1), 16),
                             int(regs["LPCR"].group(1), 16) if regs["LPCR"] else None))
    return out


def mer_seen(samples: list[list[VcpuState]]) -> bool:
    """Some sample caught a vCPU whose guest has an external interrupt requested (LPCR[MER])."""
    return any(v.lpcr is not None and v.lpcr & LPCR_MER for sample in samples for v in sample)


def findings(samples: list[list[VcpuState]], symbols: Symbols | None = None) -> list[dict]:
    """What the samples prove, as {kind, line}: a vCPU that ran a guest of the L1 with an
    external interrupt requested through LPCR[MER] and enabled, in at least MIN_SAMPLES samples;
    with the host kernel's symbols, a vCPU of the host itself spinning in its timekeeping with
    external interrupts off in every one of at least MIN_SPIN_SAMPLES samples."""
    out = _undelivered(samples)
    if symbols is not None and len(samples) >= MIN_SPIN_SAMPLES:
        for cpu in sorted({v.cpu for sample in samples for v in sample}):
            states = [v for sample in samples for v in sample if v.cpu == cpu]
            if len(states) == len(samples) and all(
                    v.in_host and not v.msr & MSR_EE and symbols.function(v.nip) in TIMEKEEPING for v in states):
                where = sorted({symbols.function(v.nip) or "?" for v in states})
                out.append({"kind": "host-timekeeping-spin",
                            "line": (f"the host's vCPU {cpu} spun in its kernel's timekeeping ({', '.join(where)}) "
                                     f"with external interrupts off in all {len(samples)} samples, as it does "
                                     f"when its clock source steps back (a delta of nearly 2^64 cycles "
                                     f"accumulated a second at a time; e.g. {states[-1].line(symbols)})")})
    return out


def _undelivered(samples: list[list[VcpuState]]) -> list[dict]:
    seen: dict[int, list[VcpuState]] = {}
    for sample in samples:
        for v in sample:
            if v.undelivered_external:
                seen.setdefault(v.cpu, []).append(v)
    out = []
    for cpu, states in sorted(seen.items()):
        if len(states) >= MIN_SAMPLES:
            out.append({"kind": "undelivered-mer",
                        "line": (f"the L0's vCPU {cpu} ran the host's guest with LPCR[MER]=1 and MSR[EE]=1 "
                                 f"in {len(states)} of {len(samples)} samples: an external interrupt "
                                 f"requested and enabled, never taken (e.g. {states[-1].line()})")})
    return out
