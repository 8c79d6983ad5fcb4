"""harness/qemu_cmd.py and templates/: golden files of rendered QEMU argv and guest command lines.

The references live in tests/refs/ (one argument per line). After an intended template change,
regenerate them with `CASKIT_REGEN=1 .venv/bin/pytest tests/unit/test_qemu_cmd.py` and review the diff.
"""

from __future__ import annotations

import os
from pathlib import Path

import jinja2
import pytest

from harness.qemu_cmd import guest_cmdline, machine_options, qemu_argv
from harness.templating import render_lines

from .factories import make_build, make_cell

REFS = Path(__file__).resolve().parent.parent / "refs"
REGEN = os.environ.get("CASKIT_REGEN") == "1"

KERNEL = Path("/kit/0123abcd/vmlinux")
INITRD = Path("/kit/0123abcd/initrd.cpio.gz")
QMP = Path("/tmp/ck-fixed/qmp.sock")
CONSOLE = Path("/tmp/ck-fixed/console.sock")
RUN_TAG = "caskit:20250101-000000-abcd:cell"

SYSTEM = make_build()
QEMU10 = make_build("qemu10", binary="/opt/qemu-10/bin/qemu-system-ppc64", firmware_dir="/opt/qemu-10/share/qemu")

CASES = {
    # name: (cell, build, initrd, append)
    "dual-default": (make_cell(ic_mode="dual"), SYSTEM, INITRD, ""),
    "xics-xive-off": (make_cell(ic_mode="xics", guest_xive="off"), SYSTEM, INITRD, ""),
    "xive-power8-kirq-on": (make_cell(ic_mode="xive", cpu_compat="power8", kernel_irqchip="on"), SYSTEM, INITRD, ""),
    "slof-user-build": (make_cell(firmware="slof", qemu="qemu10", cpu="POWER10", smp=4, guest_xive="off"),
                        QEMU10, None, "nosmt loglevel=7"),
}


def check_golden(name: str, lines: list[str]) -> None:
    ref = REFS / name
    text = "".join(f"{line}\n" for line in lines)
    if REGEN:
        ref.parent.mkdir(parents=True, exist_ok=True)
        ref.write_text(text)
    assert ref.exists(), f"{ref} is missing: run with CASKIT_REGEN=1 to create it, then review it"
    assert lines == ref.read_text().splitlines(), f"{name} differs from the reference (CASKIT_REGEN=1 to update)"


def argv(name: str) -> list[str]:
    cell, build, initrd, append = CASES[name]
    return qemu_argv(cell, build, KERNEL, initrd, qmp_sock=QMP, console_sock=CONSOLE, run_tag=RUN_TAG, append=append)


@pytest.mark.parametrize("name", CASES)
def test_argv_matches_the_reference(name):
    check_golden(f"argv-{name}.txt", argv(name))


@pytest.mark.parametrize("name", CASES)
def test_guest_cmdline_matches_the_reference(name):
    cell, _, _, append = CASES[name]
    check_golden(f"cmdline-{name}.txt", [guest_cmdline(cell, append)])


def test_references_have_no_stale_files():
    expected = {f"{kind}-{name}.txt" for kind in ("argv", "cmdline") for name in CASES}
    assert {p.name for p in REFS.glob("*.txt")} == expected


# ---------------------------------------------------------------- what the references must say


def option_after(args: list[str], flag: str) -> str:
    return args[args.index(flag) + 1]


@pytest.mark.parametrize("axes, options", [
    ({}, ["pseries", "x-vof=on"]),
    ({"firmware": "slof"}, ["pseries"]),
    ({"ic_mode": "dual"}, ["pseries", "x-vof=on", "ic-mode=dual"]),
    ({"ic_mode": "xive", "cpu_compat": "power8", "kernel_irqchip": "on"},
     ["pseries", "x-vof=on", "ic-mode=xive", "kernel-irqchip=on", "max-cpu-compat=power8"]),
    ({"kernel_irqchip": "off", "cpu_compat": "power10", "firmware": "slof"},
     ["pseries", "kernel-irqchip=off", "max-cpu-compat=power10"]),
])
def test_machine_options_give_only_what_is_not_default(axes, options):
    assert machine_options(make_cell(**axes)) == options


@pytest.mark.parametrize("guest_xive, append, cmdline", [
    ("default", "", "console=hvc0"),
    ("off", "", "console=hvc0 xive=off"),
    ("default", "nosmt", "console=hvc0 nosmt"),
    ("off", "nosmt loglevel=7", "console=hvc0 xive=off nosmt loglevel=7"),
])
def test_guest_cmdline(guest_xive, append, cmdline):
    assert guest_cmdline(make_cell(guest_xive=guest_xive), append) == cmdline


def test_argv_is_one_argument_per_item():
    args = argv("xics-xive-off")
    assert args[0] == "qemu-system-ppc64"
    assert option_after(args, "-machine") == "pseries,x-vof=on,ic-mode=xics"
    assert option_after(args, "-append") == "console=hvc0 xive=off"
    assert option_after(args, "-name") == RUN_TAG
    assert (option_after(args, "-cpu"), option_after(args, "-smp"), option_after(args, "-accel")) == ("POWER9", "2", "tcg")
    assert "-S" in args  # started paused: nothing the guest prints is missed
    assert all(a == a.strip() and a for a in args)


def test_firmware_dir_and_no_initrd():
    args = argv("slof-user-build")
    assert args[:3] == ["/opt/qemu-10/bin/qemu-system-ppc64", "-L", "/opt/qemu-10/share/qemu"]
    assert "-initrd" not in args
    assert option_after(args, "-machine") == "pseries"
    assert option_after(args, "-kernel") == str(KERNEL)


def test_extra_args_come_last():
    cell, build, initrd, _ = CASES["dual-default"]
    args = qemu_argv(cell, build, KERNEL, initrd, qmp_sock=QMP, console_sock=CONSOLE, run_tag=RUN_TAG,
                     extra_args=("-incoming", "defer"))
    assert args[-2:] == ["-incoming", "defer"]


def test_templates_refuse_a_missing_variable():
    with pytest.raises(jinja2.UndefinedError):
        render_lines("guest-cmdline.j2", guest_xive="off")  # no `append`
