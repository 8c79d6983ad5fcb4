"""A cell's QEMU argv and guest command line, rendered from templates/. Pure."""

from __future__ import annotations

from pathlib import Path

from .domain import Cell, QemuBuild
from .templating import render_lines, render_text

MEMORY = "1G"


def machine_options(cell: Cell) -> list[str]:
    return render_lines("machine-options.j2", **cell.axes_dict)


def guest_cmdline(cell: Cell, append: str = "") -> str:
    return render_text("guest-cmdline.j2", guest_xive=cell.axis("guest_xive"), append=append)


def qemu_argv(cell: Cell, build: QemuBuild, kernel: Path, initrd: Path | None, *, qmp_sock: Path,
              console_sock: Path, run_tag: str, append: str = "", extra_args: tuple[str, ...] = ()) -> list[str]:
    a = cell.axes_dict
    return render_lines(
        "qemu-pseries.argv.j2",
        binary=build.binary,
        firmware_dir=build.firmware_dir,
        run_tag=run_tag,
        machine=machine_options(cell),
        accel=a["accel"],
        cpu=a["cpu"],
        smp=a["smp"],
        memory=MEMORY,
        console_sock=console_sock,
        qmp_sock=qmp_sock,
        kernel=kernel,
        initrd=initrd,
        cmdline=guest_cmdline(cell, append),
        extra_args=list(extra_args),
    )
