"""harness/model.py for POWER10 guests on both QEMU builds of the local TCG host, against the table
measured on 2026-12-07 (QEMU 7.2.22 and 10.0.2 from bookworm-backports, Debian's 6.1 guest, smp 1,
VOF; docs/model.md "POWER10"). Both builds gave the same outcome in every cell."""

from __future__ import annotations

import pytest

from harness.cell import Stage
from harness.model import RULES, matches_error, predict

from .factories import make_build, make_cell, make_facts

XIVE_NEEDS_P9 = "XIVE-only machines require a POWER9 CPU"
PVR_P10 = "Compatibility PVR 0x0f000006 not valid for CPU"

# Both builds as caskit probed them on this machine.
SYSTEM = make_build("system")
BACKPORTS = make_build("backports", version="10.0.2", machine="pseries-10.0",
                       cpu_models=("POWER10", "POWER11", "POWER7", "POWER8", "POWER9"))
LOCAL = make_facts(builds=(SYSTEM, BACKPORTS))

# cpu max-cpu-compat ic-mode guest-xive -> negotiated mode and byte 23, or QEMU's refusal.
MEASURED = """
POWER10 default dual    default  xive 0x80
POWER10 default dual    off      xics 0x80
POWER10 default xics    default  xics 0x00
POWER10 default xics    off      xics 0x00
POWER10 default xive    default  xive 0x40
POWER10 default xive    off      xive 0x40
POWER10 power10 dual    default  xive 0x80
POWER10 power10 dual    off      xics 0x80
POWER10 power10 xics    default  xics 0x00
POWER10 power10 xics    off      xics 0x00
POWER10 power10 xive    default  xive 0x40
POWER10 power10 xive    off      xive 0x40
POWER10 power9  dual    default  xive 0x80
POWER10 power9  dual    off      xics 0x80
POWER10 power9  xics    default  xics 0x00
POWER10 power9  xics    off      xics 0x00
POWER10 power9  xive    default  xive 0x40
POWER10 power9  xive    off      xive 0x40
POWER10 power8  dual    default  xics 0x00
POWER10 power8  dual    off      xics 0x00
POWER10 power8  xics    default  xics 0x00
POWER10 power8  xics    off      xics 0x00
POWER10 power8  xive    default  refused XIVE-only machines require a POWER9 CPU
POWER10 power8  xive    off      refused XIVE-only machines require a POWER9 CPU
POWER9  power10 dual    default  refused Compatibility PVR 0x0f000006 not valid for CPU
POWER9  power10 xics    default  refused Compatibility PVR 0x0f000006 not valid for CPU
POWER9  power10 xive    default  refused Compatibility PVR 0x0f000006 not valid for CPU
POWER8  power10 xive    default  refused XIVE-only machines require a POWER9 CPU
POWER8  power10 dual    default  refused Compatibility PVR 0x0f000006 not valid for CPU
"""
ROWS = [line.split(None, 5) for line in MEASURED.strip().splitlines()]


def test_the_table_has_every_power10_combination():
    p10 = {tuple(r[1:4]) for r in ROWS if r[0] == "POWER10"}
    assert len(p10) == 4 * 3 * 2 == len([r for r in ROWS if r[0] == "POWER10"])


@pytest.mark.parametrize("qemu", ["system", "backports"])
@pytest.mark.parametrize("cpu, compat, ic_mode, guest_xive, outcome, detail", ROWS,
                         ids=["-".join(r[:4]) for r in ROWS])
def test_power10_matches_the_measured_table_on_both_builds(qemu, cpu, compat, ic_mode, guest_xive, outcome, detail):
    e = predict(make_cell(cpu=cpu, cpu_compat=compat, ic_mode=ic_mode, guest_xive=guest_xive, smp=1, qemu=qemu), LOCAL)
    if outcome == "refused":
        assert (e.mode, e.stage, e.byte23, e.skip, e.blocked) == (None, Stage.QEMU_START.value, None, None, None)
        assert matches_error(e, detail), f"/{e.error}/ does not match {detail!r}"
        other = PVR_P10 if detail == XIVE_NEEDS_P9 else XIVE_NEEDS_P9
        assert not matches_error(e, other)
    else:
        assert (e.mode, e.byte23, e.irqchip, e.error, e.skip) == (outcome, detail, "emulated", None, None)


@pytest.mark.parametrize("qemu", ["system", "backports"])
@pytest.mark.parametrize("ic_mode, mode, byte23", [("dual", "xive", "0x80"), ("xive", "xive", "0x40")])
@pytest.mark.parametrize("kirq", ["on", "off"])
def test_power10_kernel_irqchip_has_no_effect_under_tcg(qemu, ic_mode, mode, byte23, kirq):
    e = predict(make_cell(cpu="POWER10", ic_mode=ic_mode, kernel_irqchip=kirq, smp=1, qemu=qemu), LOCAL)
    assert (e.mode, e.byte23, e.irqchip, e.error) == (mode, byte23, "emulated", None)
    assert "tcg-emulates" in e.notes


def test_power10_on_a_build_without_it_is_skip():
    facts = make_facts(builds=(make_build(cpu_models=("POWER8", "POWER9")),))
    e = predict(make_cell(cpu="POWER10"), facts)
    assert (e.rule, e.mode, e.error) == ("cpu-model-known", None, None) and "POWER10" in e.skip


TCG_CAS_RULES = ["xive-needs-power9", "compat-above-cpu", "offer-xics-only", "offer-xive-only",
                 "dual-below-power9-offers-xics", "offer-dual", "guest-picks-xive", "guest-xive-off",
                 "xive-only-ignores-xive-off", "tcg-emulates"]


@pytest.mark.parametrize("rule", TCG_CAS_RULES)
def test_tcg_cas_rules_cite_the_power10_measurement(rule):
    src = RULES[rule].source
    assert "POWER10" in src and "7.2.22" in src and "10.0.2" in src and "2026-12-07" in src


def test_every_rule_the_power10_table_reaches_cites_it():
    reached = set()
    for cpu, compat, ic_mode, guest_xive, _, _ in ROWS:
        for qemu in ("system", "backports"):
            e = predict(make_cell(cpu=cpu, cpu_compat=compat, ic_mode=ic_mode, guest_xive=guest_xive, qemu=qemu), LOCAL)
            reached |= {e.rule, *e.notes}
    assert reached == set(TCG_CAS_RULES)
