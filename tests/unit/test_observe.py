"""harness/observe.py: the guest's view (ck-observe output) and the host's view (QMP info pic),
on text captured from QEMU 7.2 TCG, POWER9, smp 2, Debian's 6.1 guest."""

from __future__ import annotations

import pytest

from harness.observe import ObserveError, guest_view, host_view, parse_interrupts, parse_platform_support

XIVE_INTERRUPTS = """\
           CPU0       CPU1       
 16:        168        178  XIVE-IPI   0 Edge      IPI-0
 17:          0          0  XIVE-IRQ 4096 Edge      RAS_EPOW
 18:          0          0  XIVE-IRQ 4352 Edge      hvc_console
 20:          0          0  XIVE-IRQ 4097 Edge      RAS_HOTPLUG
LOC:        546        602   Local timer interrupts for timer event device
BCT:          0          0   Broadcast timer interrupts for timer event device
LOC:          0          2   Local timer interrupts for others
SPU:          1          1   Spurious interrupts
PMI:          0          0   Performance monitoring interrupts
MCE:          0          0   Machine check exceptions
NMI:          0          0   System Reset interrupts
WDG:        142        130   Watchdog soft-NMI interrupts
DBL:          0          0   Doorbell interrupts
"""

XICS_INTERRUPTS = """\
           CPU0       CPU1       
 16:        155        168      XICS   2 Edge      IPI
 17:          0          0      XICS 4096 Edge      RAS_EPOW
 18:          0          0      XICS 4352 Edge      hvc_console
 20:          0          0      XICS 4097 Edge      RAS_HOTPLUG
LOC:        511        580   Local timer interrupts for timer event device
BCT:          0          0   Broadcast timer interrupts for timer event device
LOC:          0          1   Local timer interrupts for others
SPU:          0          3   Spurious interrupts
PMI:          0          0   Performance monitoring interrupts
MCE:          0          0   Machine check exceptions
NMI:          0          0   System Reset interrupts
WDG:        139        127   Watchdog soft-NMI interrupts
DBL:          0          0   Doorbell interrupts
"""

OFFER_DUAL = " 17 80 18 c0 19 00 1a 40 "
OFFER_XICS = " 17 00 18 c0 19 00 1a 40 "
NODE_XIVE = "/sys/firmware/devicetree/base/interrupt-controller@60302031b0000: ibm,power-ivpe "
NODE_XICS = "/sys/firmware/devicetree/base/interrupt-controller: IBM,ppc-xicp "
DMESG_XIVE = """\
[    0.000000] xive: Using IRQ range [0-1]
[    0.000000] xive: Interrupt handling initialized with spapr backend
[    0.000000] xive: Using priority 6 for all interrupts
[    0.000000] xive: Using 64kB queues
"""


def ck_observe(interrupts: str, offer: str, nodes: str, dmesg: str) -> str:
    """The output of guest_tests/bin/ck-observe, section by section."""
    return (f"== interrupts\n{interrupts}== platform-support\n{offer}\n== ic-nodes\n{nodes}\n"
            f"== dmesg\n{dmesg}== end\n")


XIVE_GUEST = ck_observe(XIVE_INTERRUPTS, OFFER_DUAL, NODE_XIVE, DMESG_XIVE)
XICS_GUEST = ck_observe(XICS_INTERRUPTS, OFFER_XICS, NODE_XICS, "")


# ---------------------------------------------------------------- guest view


def test_xive_guest():
    v = guest_view(XIVE_GUEST)
    assert v.chips == ["XIVE-IPI", "XIVE-IRQ"]
    assert (v.ipi_chip, v.mode_from_chips) == ("XIVE-IPI", "xive")
    assert v.platform_support == "0x80"
    assert (v.ic_compatible, v.mode_from_dt) == (["ibm,power-ivpe"], "xive")
    assert v.dmesg_xive == DMESG_XIVE.strip().splitlines()
    assert v.mode_from_dmesg == "xive"
    assert v.spurious == 2
    assert v.mode == "xive"


def test_xics_guest():
    v = guest_view(XICS_GUEST)
    assert v.chips == ["XICS"]
    assert (v.ipi_chip, v.mode_from_chips) == ("XICS", "xics")
    assert v.platform_support == "0x00"
    assert (v.ic_compatible, v.mode_from_dt) == (["IBM,ppc-xicp"], "xics")
    assert (v.dmesg_xive, v.mode_from_dmesg) == ([], "xics")
    assert v.spurious == 3
    assert v.mode == "xics"


def test_xics_guest_on_a_dual_machine_sees_the_dual_offer():
    v = guest_view(ck_observe(XICS_INTERRUPTS, OFFER_DUAL, NODE_XICS, ""))
    assert (v.mode, v.platform_support) == ("xics", "0x80")


def test_console_line_endings_do_not_matter():
    crlf = guest_view(XIVE_GUEST.replace("\n", "\r\n"))
    lf = guest_view(XIVE_GUEST)
    assert crlf == lf


def test_xics_dmesg_lines_do_not_count_as_xive():
    v = guest_view(ck_observe(XICS_INTERRUPTS, OFFER_XICS, NODE_XICS, "[    0.000000] ICS: xics ready\n"))
    assert (v.dmesg_xive, v.mode_from_dmesg, v.mode) == ([], "xics", "xics")


def test_xics_guest_booted_with_xive_off():
    # dmesg always records the command line (pr_notice in start_kernel), and ck-observe greps -i 'xive|xics':
    # that line is not the XIVE driver's and must not hide the dmesg signal.
    dmesg = "[    0.000000] Kernel command line: console=hvc0 quiet xive=off\n"
    v = guest_view(ck_observe(XICS_INTERRUPTS, OFFER_DUAL, NODE_XICS, dmesg))
    assert (v.dmesg_xive, v.mode_from_dmesg, v.mode) == ([], "xics", "xics")


def test_a_xive_guest_whose_command_line_says_xive_off_is_still_xive():
    dmesg = "[    0.000000] Kernel command line: console=hvc0 quiet xive=off\n" + DMESG_XIVE
    v = guest_view(ck_observe(XIVE_INTERRUPTS, " 17 40 ", NODE_XIVE, dmesg))
    assert (v.mode_from_dmesg, v.mode, v.platform_support) == ("xive", "xive", "0x40")


@pytest.mark.parametrize("interrupts, nodes, dmesg, signals", [
    # XIVE chips but a XICS device-tree node
    (XIVE_INTERRUPTS, NODE_XICS, DMESG_XIVE, ("xive", "xics", "xive")),
    # XICS chips but the guest initialised XIVE
    (XICS_INTERRUPTS, NODE_XICS, DMESG_XIVE, ("xics", "xics", "xive")),
    # everything XIVE but dmesg silent
    (XIVE_INTERRUPTS, NODE_XIVE, "", ("xive", "xive", "xics")),
    # both chip families in /proc/interrupts
    (XIVE_INTERRUPTS + " 21:          0          0      XICS 4098 Edge      extra\n", NODE_XIVE, DMESG_XIVE,
     (None, "xive", "xive")),
])
def test_disagreeing_guest_signals_give_no_mode(interrupts, nodes, dmesg, signals):
    v = guest_view(ck_observe(interrupts, OFFER_DUAL, nodes, dmesg))
    assert (v.mode_from_chips, v.mode_from_dt, v.mode_from_dmesg) == signals
    if signals[0] is None:  # chips are undecided; the two others agree
        assert v.mode == "xive"
    else:
        assert v.mode is None


def test_both_device_tree_nodes_give_no_dt_mode():
    v = guest_view(ck_observe(XIVE_INTERRUPTS, OFFER_DUAL, NODE_XIVE + "\n" + NODE_XICS, DMESG_XIVE))
    assert v.ic_compatible == ["ibm,power-ivpe", "IBM,ppc-xicp"]
    assert v.mode_from_dt is None
    assert v.mode == "xive"  # the other two signals still agree


def test_sections_missing_besides_interrupts():
    v = guest_view(f"== interrupts\n{XICS_INTERRUPTS}== end\n")
    assert (v.platform_support, v.ic_compatible, v.mode_from_dt) == (None, [], None)
    assert v.mode == "xics"  # chips, and dmesg's silence


def test_no_interrupts_section_is_an_error():
    with pytest.raises(ObserveError, match="no interrupts section"):
        guest_view(f"== platform-support\n{OFFER_DUAL}\n== end\n")


@pytest.mark.parametrize("text", ["", "cat: can't open '/proc/interrupts': No such file or directory\n"])
def test_interrupts_without_a_cpu_header_is_an_error(text):
    with pytest.raises(ObserveError, match="no CPU header"):
        guest_view(ck_observe(text, OFFER_DUAL, NODE_XIVE, DMESG_XIVE))


def test_a_platform_support_that_is_not_hex_is_an_error():
    with pytest.raises(ObserveError, match="not hex bytes"):
        guest_view(ck_observe(XIVE_INTERRUPTS, "od: cannot open", NODE_XIVE, DMESG_XIVE))


# ---------------------------------------------------------------- the pieces


@pytest.mark.parametrize("text, byte23", [
    (OFFER_DUAL, "0x80"), (OFFER_XICS, "0x00"), (" 17 40 18 c0 19 00 1a 40 ", "0x40"),
    (" 18 c0 17 40 ", "0x40"),  # byte 23 need not come first
    (" 18 17 19 00 ", None),  # 0x17 as a value is not index 23
    ("missing", None), ("", None), (" 17 ", None),
])
def test_platform_support_byte23(text, byte23):
    assert parse_platform_support(text) == byte23


def test_parse_interrupts_with_one_cpu():
    text = "           CPU0       \n 16:         12  XIVE-IPI   0 Edge      IPI-0\nSPU:          4   Spurious\n"
    assert parse_interrupts(text) == (["XIVE-IPI"], "XIVE-IPI", 4)


def test_parse_interrupts_counts_spurious_over_all_cpus():
    assert parse_interrupts(XIVE_INTERRUPTS)[2] == 2
    assert parse_interrupts(XICS_INTERRUPTS)[2] == 3


# ---------------------------------------------------------------- host view (QMP info pic)

INFO_PIC_XIVE = """\
CPU[0000]:   QW   NSR CPPR IPB LSMFB ACK# INC AGE PIPR  W2
CPU[0000]: USER    00   00  00    00   00  00  00   00  00000000
CPU[0000]:   OS    00   ff  00    00   ff  00  ff   ff  80000400
CPU[0000]: POOL    00   00  00    ff   00  00  00   00  00000000
CPU[0000]: PHYS    00   ff  00    00   00  00  00   ff  80000000
CPU[0001]:   QW   NSR CPPR IPB LSMFB ACK# INC AGE PIPR  W2
CPU[0001]: USER    00   00  00    00   00  00  00   00  00000000
CPU[0001]:   OS    00   ff  00    00   ff  00  ff   ff  80000401
CPU[0001]: POOL    00   00  00    ff   00  00  00   00  00000000
CPU[0001]: PHYS    00   ff  00    00   00  00  00   ff  80000001
  LISN         PQ    EISN     CPU/PRIO EQ
  00000000 MSI --    00000010   0/6     380/16384 @1fe3e0000 ^1 [ 8000004b 8000004b ^00000000 ]
  00000001 MSI --    00000010   1/6     305/16384 @1fe3f0000 ^1 [ 8000004b 8000004b ^00000000 ]
  00001000 MSI --    00000011   0/6     380/16384 @1fe3e0000 ^1 [ 8000004b 8000004b ^00000000 ]
irqchip: emulated
"""

INFO_PIC_XICS = """\
CPU 0 XIRR=ff000000 ((nil)) PP=ff MFRR=ff
CPU 1 XIRR=ff000000 ((nil)) PP=ff MFRR=ff
ICS 1000..1fff 0x556f3a780340
  1000 MSI 05 00
  1001 MSI ff 00
  1100 MSI 05 00
irqchip: emulated
"""


@pytest.mark.parametrize("text, mode", [(INFO_PIC_XIVE, "xive"), (INFO_PIC_XICS, "xics")])
def test_host_view(text, mode):
    v = host_view(text, "dual")
    assert (v.mode, v.irqchip, v.configured_ic_mode) == (mode, "emulated", "dual")


@pytest.mark.parametrize("text, mode", [(INFO_PIC_XIVE, "xive"), (INFO_PIC_XICS, "xics")])
def test_host_view_with_the_monitors_crlf(text, mode):
    # HMP output through QMP human-monitor-command ends its lines with \r\n.
    v = host_view(text.replace("\n", "\r\n"))
    assert (v.mode, v.irqchip) == (mode, "emulated")


def test_host_view_in_kernel():
    v = host_view(INFO_PIC_XICS.replace("irqchip: emulated", "irqchip: in-kernel"), "xics")
    assert (v.mode, v.irqchip, v.configured_ic_mode) == ("xics", "in-kernel", "xics")


@pytest.mark.parametrize("text, mode", [
    (INFO_PIC_XIVE.replace("irqchip: emulated\n", "") + INFO_PIC_XICS, None),  # both dumps
    ("irqchip: emulated\n", None),  # neither
    ("", None),
    ("Unknown command: 'info pic'\n", None),
])
def test_host_view_without_one_mode(text, mode):
    v = host_view(text)
    assert v.mode is mode


def test_host_view_without_the_irqchip_line():
    v = host_view(INFO_PIC_XICS.replace("irqchip: emulated\n", ""))
    assert (v.mode, v.irqchip, v.configured_ic_mode) == ("xics", None, None)


def test_host_view_ignores_xirr_text_that_is_not_at_line_start():
    v = host_view("note: CPU 0 XIRR=ff000000 was read\n" + INFO_PIC_XIVE)
    assert v.mode == "xive"
