"""A cell's QEMU argv and guest command line, rendered from templates/. Pure."""

from __future__ import annotations

from pathlib import Path

from .cell import Cell, QemuBuild
from .templating import render_lines, render_text

def memory_mib(smp: int) -> int:
    """Guest RAM: 1 GiB, plus room for per-CPU structures on wide guests (measured: 1024 vCPUs
    panic before userspace with 1 GiB and boot with 4 GiB)."""
    return 1024 + (3 * smp if smp > 64 else 0)


def machine_options(cell: Cell, host_options: tuple[str, ...] = ()) -> list[str]:
    return render_lines("machine-options.j2", pinned=list(cell.pinned), host_options=list(host_options),
                        **cell.axes_dict)


def guest_cmdline(cell: Cell, append: str = "") -> str:
    return render_text("guest-cmdline.j2", guest_xive=cell.axis("guest_xive"), append=append)


def qemu_argv(cell: Cell, build: QemuBuild, kernel: Path, initrd: Path | None, *, qmp_sock: Path,
              console_sock: Path, run_tag: str, append: str = "", extra_args: tuple[str, ...] = (),
              heartbeat_sock: Path | None = None, host_options: tuple[str, ...] = ()) -> list[str]:
    a = cell.axes_dict
    return render_lines(
        "qemu-pseries.argv.j2",
        binary=build.binary,
        firmware_dir=build.firmware_dir,
        run_tag=run_tag,
        machine=machine_options(cell, host_options),
        accel=a["accel"],
        cpu=a["cpu"],
        smp=a["smp"],
        memory=f"{memory_mib(int(a['smp']))}M",
        console_sock=console_sock,
        qmp_sock=qmp_sock,
        heartbeat_sock=heartbeat_sock,
        kernel=kernel,
        initrd=initrd,
        cmdline=guest_cmdline(cell, append),
        extra_args=list(extra_args),
    )
