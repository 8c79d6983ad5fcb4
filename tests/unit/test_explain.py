"""harness/explain.py: any QEMU command line read as a cell, and predicted per KVM mode."""

from __future__ import annotations

import pytest

from harness import explain
from harness.errors import ConfigError

from .factories import make_build

KATA = ["qemu-system-ppc64", "-machine", "pseries,accel=kvm,kernel_irqchip=on,cap-cfpc=broken", "-cpu", "host",
        "-smp", "1,cores=1,threads=1,sockets=4,maxcpus=4", "-m", "2048M", "-append", "console=hvc0 quiet"]


def test_machine_options_become_axes():
    p = explain.parse_argv(["qemu-system-ppc64", "-M", "pseries-7.2,ic-mode=xics,kernel-irqchip=off,max-cpu-compat=power9,"
                            "x-vof=on", "-cpu", "power10", "-smp", "4", "-enable-kvm", "-append", "root=/dev/vda xive=off"])
    assert p.axes == {**p.axes, "ic_mode": "xics", "kernel_irqchip": "off", "cpu_compat": "power9", "firmware": "vof",
                      "cpu": "POWER10", "smp": 4, "accel": "kvm", "guest_xive": "off"}
    assert p.machine == "pseries-7.2"


def test_options_caskit_has_no_rule_for_are_listed_not_dropped():
    p = explain.parse_argv(["q", "-machine", "pseries,cap-cfpc=broken,usb=off"])
    assert p.not_modelled == ("cap-cfpc=broken", "usb=off")


def test_a_kata_style_line_parses():
    p = explain.parse_argv(KATA)
    assert p.axes["accel"] == "kvm" and p.axes["smp"] == 1 and "cap-cfpc=broken" in p.not_modelled
    assert p.axes["kernel_irqchip"] == "on"  # QEMU reads kernel_irqchip as kernel-irqchip
    assert any("-cpu host" in n for n in p.notes)


@pytest.mark.parametrize("argv,key", [
    ([], None),
    (["q", "-M", "powernv9"], "-machine"),
    (["q", "-M", "pseries,ic-mode=both"], "-machine ic-mode"),
    (["q", "-smp", "lots"], "-smp"),
    (["q", "-M"], "-M"),
])
def test_bad_command_lines_name_the_option(argv, key):
    with pytest.raises(ConfigError) as e:
        explain.parse_argv(argv)
    assert e.value.key == key


def test_kernel_irqchip_on_per_kvm_mode():
    rows = explain.predict_all(explain.parse_argv(["q", "-M", "pseries,ic-mode=dual,kernel-irqchip=on", "-enable-kvm"]),
                               make_build())
    by = {(r.kvm, r.guest): r.expected for r in rows}
    assert by[("hv", "default")].irqchip == "in-kernel" and by[("hv", "default")].mode == "xive"
    # Nested HV has no in-kernel XIVE: the guest's XIVE request at CAS is refused (the Kata report).
    nested = by[("hv-nested", "default")]
    assert (nested.stage, nested.rule) == ("cas", "kvm-irqchip-required") and "IRQ_XIVE" in nested.error
    assert by[("hv-nested", "xive=off")].irqchip == "in-kernel"


def test_the_fallback_warning_is_predicted():
    rows = explain.predict_all(explain.parse_argv(["q", "-M", "pseries,ic-mode=xive", "-enable-kvm"]), make_build())
    nested = next(r.expected for r in rows if (r.kvm, r.guest) == ("hv-nested", "default"))
    assert nested.irqchip == "emulated" and nested.warning.startswith("kernel_irqchip allowed but unavailable: IRQ_XIVE")


def test_render_marks_the_guest_as_booted():
    p = explain.parse_argv(["q", "-M", "pseries", "-append", "xive=off"])
    text = explain.render(p, explain.predict_all(p, make_build()), "off")
    assert "* tcg-only        guest xive=off" in text and "  tcg-only        guest default" in text


def test_render_lists_the_emulated_hosts_known_boot_issues_by_kvm_mode():
    from harness.migration import known_issues

    p = explain.parse_argv(["q", "-M", "pseries,ic-mode=xics"])
    text = explain.render(p, explain.predict_all(p, make_build()), "default", known_issues.load())
    assert "  hv-nested-papr  nested-papr-tcg-l0-drops-mer: An L2 on an emulated nested-papr host whose L0 is stock" in text
    assert "Not on an L0 with caskit's patch target-ppc-Deliver-the-Mediated-External-interrupt-r." in text
    assert "  hv              powernv9-tcg-l1-timebase-steps-back: " in text
    # Migration entries concern hops, not a mode's boots: not listed.
    assert "qemu7.2-tcg-guest-timers-stop-after-migration" not in text
    assert "Known issues" not in explain.render(p, explain.predict_all(p, make_build()), "default")
