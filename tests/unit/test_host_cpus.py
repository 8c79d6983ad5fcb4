"""The L0's view of an emulated host's vCPUs (harness/host_cpus.py) and the boot entries of the
known issues that stand on it (known_issues.explain_boot, verdict.decide): a hang is the known
issue's XFAIL only with all of its evidence. Samples are QEMU's own `info registers -a` answers,
saved from real hangs on the nested-papr host."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from harness import elf, host_cpus, verdict
from harness.cell import Expected, Observed, Verdict
from harness.migration import known_issues

DATA = Path(__file__).parent / "data"
KNOWN = known_issues.load()
MER_ID = "nested-papr-tcg-l0-drops-mer"


def sample(name: str) -> list[host_cpus.VcpuState]:
    return host_cpus.parse((DATA / name).read_text())


def test_a_vcpu_with_mer_but_interrupts_off_proves_nothing():
    # QEMU 11.1.3 with a 7.2 L1: the vCPU stuck in the L2's decrementer handler has MER set, but
    # MSR[EE] is off there, so no interrupt is owed yet (docs/hosts.md: another defect).
    cpus = sample("l0-registers-mer-ee-off.txt")
    assert [(v.cpu, v.lpcr & host_cpus.LPCR_MER != 0, v.msr & host_cpus.MSR_EE != 0) for v in cpus] == \
        [(0, False, False), (1, True, False)]
    assert host_cpus.findings([cpus] * 30) == []


def test_mer_with_interrupts_on_in_a_guest_is_an_undelivered_interrupt_seen_twice():
    cpus = sample("l0-registers-mer-ee-on.txt")
    assert host_cpus.mer_seen([cpus]) and host_cpus.mer_seen([sample("l0-registers-mer-ee-off.txt")])
    assert not host_cpus.mer_seen([sample("l0-registers-powernv9-timekeeping.txt")])
    owed = [v for v in cpus if v.undelivered_external]
    assert len(owed) == 1 and not owed[0].msr & host_cpus.MSR_HV
    assert host_cpus.findings([cpus]) == []  # once may be the instant before TCG takes it
    (f,) = host_cpus.findings([cpus, cpus, sample("l0-registers-mer-ee-off.txt")])
    assert f["kind"] == "undelivered-mer" and "in 2 of 3 samples" in f["line"]


def symbols() -> host_cpus.Symbols:
    rows = [ln.split() for ln in (DATA / "l1-powernv9-symbols.txt").read_text().splitlines() if not ln.startswith("#")]
    return host_cpus.Symbols([(int(a, 16), int(size), name) for a, size, name in rows])


def test_a_host_vcpu_spinning_in_timekeeping_with_interrupts_off_in_every_sample_is_a_finding():
    # powernv9's L1 during its hard LOCKUP: CPU 0 idle, CPU 1 at second_overflow+0x180, both in
    # hypervisor state (MSR 9000000000001033), EE off.
    spin = sample("l0-registers-powernv9-timekeeping.txt")
    syms = symbols()
    assert [v.line(syms) for v in spin] == [
        "CPU 0: NIP c000000000039be0 (isa300_idle_stop_mayloss+0x68) MSR 9000000000001033 LPCR 0040400001d2f012",
        "CPU 1: NIP c0000000002332f0 (second_overflow+0x180) MSR 9000000000001033 LPCR 0040400001d2f012"]
    (f,) = host_cpus.findings([spin] * 10, syms)
    assert f["kind"] == "host-timekeeping-spin" and "vCPU 1" in f["line"] and "all 10 samples" in f["line"]
    assert host_cpus.findings([spin] * 9, syms) == []  # too short to call a spin
    assert host_cpus.findings([spin] * 10) == []  # without the kernel's symbols, nothing is named
    # One sample out of timekeeping (the vCPU moved on) and it was no endless spin.
    moved = [host_cpus.VcpuState(1, 0xc0000000002314a0 - 8, spin[1].msr, spin[1].lpcr)]
    assert host_cpus.findings([spin] * 10 + [moved], syms) == []
    # The same place with interrupts on, or in a guest (MSR[HV] off), is not the host's spin.
    for msr in (spin[1].msr | host_cpus.MSR_EE, spin[1].msr & ~host_cpus.MSR_HV):
        other = [host_cpus.VcpuState(1, spin[1].nip, msr, spin[1].lpcr)]
        assert host_cpus.findings([other] * 10, syms) == []


def test_function_symbols_come_from_an_elf_symbol_table():
    # A minimal 64-bit little-endian ELF: null, .symtab, .strtab, .shstrtab sections; two
    # functions (one an assembly entry without a size) and one object.
    strtab = b"\0second_overflow\0entry\0jiffies\0"
    shstr = b"\0.symtab\0.strtab\0.shstrtab\0"
    sym = lambda name, info, value, size: struct.pack("<IBBHQQ", name, info, 0, 1, value, size)  # noqa: E731
    symtab = (sym(0, 0, 0, 0) + sym(1, 0x12, 0xc000000000233170, 852) + sym(17, 0x12, 0xc000000000039b78, 0)
              + sym(23, 0x11, 0xc000000001000000, 8))
    body = symtab + strtab + shstr
    shoff = 64 + len(body)
    header = (b"\x7fELF" + bytes([2, 1, 1]) + bytes(9) + struct.pack("<HHIQQQIHHHHHH", 2, 21, 1, 0, 0, shoff, 0,
                                                                      64, 56, 0, 64, 4, 3))
    sec = lambda name, typ, off, size, link=0, entsize=0: struct.pack(  # noqa: E731
        "<IIQQQQIIQQ", name, typ, 0, 0, off, size, link, 0, 1, entsize)
    sections = (sec(0, 0, 0, 0) + sec(1, 2, 64, len(symtab), 2, 24) + sec(9, 3, 64 + len(symtab), len(strtab))
                + sec(17, 3, 64 + len(symtab) + len(strtab), len(shstr)))
    functions = elf.function_symbols(header + body + sections)
    assert functions == [(0xc000000000039b78, 0, "entry"), (0xc000000000233170, 852, "second_overflow")]
    syms = host_cpus.Symbols(functions)
    assert syms.function(0xc000000000039be0) == "entry"  # no size: up to the next function
    assert syms.name(0xc0000000002332f0) == "second_overflow+0x180"
    assert syms.function(0xc000000000233170 + 852) is None and syms.function(0x10) is None
    assert elf.function_symbols(b"not an ELF file") == []


def test_an_answer_without_registers_parses_to_nothing():
    assert host_cpus.parse("") == [] and host_cpus.parse("CPU#0\nno registers here\n") == []


HANG = {"error": "the guest hung after it was ready: no answer to 'ck-observe' within 30s", "stage": "guest",
        "error_kind": "GuestHang", "infra": False,
        "host_findings": [{"kind": "undelivered-mer", "line": "the L0's vCPU 1 ran ..."}]}


def explain(observed: dict, kvm_mode: str = "hv-nested-papr", accel: str = "kvm"):
    return known_issues.explain_boot(KNOWN, accel=accel, smp=1, kvm_mode=kvm_mode, build_version="7.2.11",
                                     observed=observed)


def test_the_shipped_entry_explains_a_hang_only_with_all_of_its_evidence():
    k, evidence = explain(HANG)
    assert k is not None and k.id == MER_ID and "undelivered-mer" in evidence
    assert explain({**HANG, "host_findings": []})[0] is None  # no proof from the L0
    spin = {**HANG, "host_findings": [{"kind": "host-timekeeping-spin", "line": "the host's vCPU 1 spun ..."}]}
    assert explain(spin, kvm_mode="hv")[0].id == "powernv9-tcg-l1-timebase-steps-back"
    assert explain(spin)[0] is None  # that finding explains nothing on nested-papr
    assert explain(HANG, kvm_mode="hv")[0] is None
    assert "did not" in explain({**HANG, "host_findings": []})[1]
    assert explain(HANG, kvm_mode="hv-nested")[0] is None  # another host: not this defect
    assert explain(HANG, accel="tcg")[0] is None
    assert explain({**HANG, "error_kind": "QemuCrashed"})[0] is None  # a crash is QEMU's own
    assert explain({**HANG, "infra": True})[0] is None
    k, why = explain({**HANG, "kernel_findings": [{"kind": "oops", "line": "Oops: Kernel access"}]})
    assert k is None and "oops" in why  # the guest's own trouble is not the host's


def test_decide_makes_the_explained_hang_xfail_and_leaves_every_other_failure_fail():
    e = Expected("xics", "default-xics", None)
    o = Observed(**{k: v for k, v in HANG.items()})
    v, reason = verdict.decide(e, o, known_boot=MER_ID)
    assert v == Verdict.XFAIL and reason.startswith(f"known issue {MER_ID}: ") and HANG["error"] in reason
    assert verdict.decide(e, o)[0] == Verdict.FAIL
    # A predicted refusal that hung instead stays FAIL whatever the host showed.
    refused = Expected(None, "kvm-irqchip-required", None, error="IRQ_XIVE", stage="qemu-start")
    assert verdict.decide(refused, o, known_boot=MER_ID)[0] == Verdict.FAIL
    assert verdict.decide(e, Observed(**{**HANG, "infra": True}), known_boot=MER_ID)[0] == Verdict.ERROR


@pytest.mark.parametrize("kind", known_issues.BOOT_ERRORS)
def test_every_boot_error_kind_is_a_failure_class_of_the_system_under_test(kind):
    from harness import errors
    assert issubclass(getattr(errors, kind), errors.SutFailure)  # never one of the infrastructure's
