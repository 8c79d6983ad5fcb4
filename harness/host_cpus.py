"""What the emulating QEMU (the L0 under an emulated host) shows of the host's vCPUs while a guest
inside that host hangs. Pure: it parses HMP `info registers -a` samples and names what they prove.

Why sample the L0: an L2 (a guest of the emulated host) that stops taking interrupts can be
waiting on something only the L0 can see. Measured on nested-papr (docs/hosts.md): Linux 6.8+
running KVM on the nested API v2 hands an L2's pending external interrupt to the L0 as LPCR[MER]
(Mediated External Request), and QEMU's TCG never turns MER into an interrupt. The L0's vCPU then
runs the L2 with LPCR[MER]=1 and MSR[EE]=1 (external interrupts enabled), which real POWER
hardware never lets stand: it takes the interrupt at once."""

from __future__ import annotations

import re
from dataclasses import dataclass

LPCR_MER = 0x800  # Power ISA 3.1, LPCR bit 52: Mediated External Exception Request
MSR_EE = 0x8000  # MSR bit 48: External interrupts enabled
MSR_HV = 1 << 60  # MSR bit 3: hypervisor state (set in the L1's own code, clear in its guest's)
FINDING_KINDS = ("undelivered-mer",)
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

    def line(self) -> str:
        lpcr = f"{self.lpcr:016x}" if self.lpcr is not None else "?"
        return f"CPU {self.cpu}: NIP {self.nip:016x} MSR {self.msr:016x} LPCR {lpcr}"

    @property
    def undelivered_external(self) -> bool:
        """A guest of the L1 (MSR[HV]=0) with MER requested and external interrupts enabled."""
        return (self.lpcr is not None and bool(self.lpcr & LPCR_MER) and bool(self.msr & MSR_EE)
                and not self.msr & MSR_HV)


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


def findings(samples: list[list[VcpuState]]) -> list[dict]:
    """What the samples prove, as {kind, line}: a vCPU that ran a guest of the L1 with an
    external interrupt requested through LPCR[MER] and enabled, in at least MIN_SAMPLES samples."""
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
