"""Making the QEMU machines of one cell: its first boot, and the destinations of its migrations.

Every machine of a cell shares the cell's devices and scratch directory (its disk image, its
migration files) but has its own sockets and its own log directory.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from pathlib import Path

from . import workloads
from .cell import Cell, QemuBuild
from .hosts import Host
from .kit import Kit
from .machine import GuestMachine, MachineFiles
from .qemu_cmd import qemu_argv


def run_tag(run_id: str, cell_id: str) -> str:
    return f"caskit:{run_id}:{cell_id}"


@dataclass(frozen=True)
class Site:
    """Where a machine runs: a host, one of its QEMU builds, and the guest kit as that host sees it."""

    host: Host
    build: QemuBuild
    kit: Kit
    machine_options: tuple[str, ...] = ()  # what every guest on that host needs (its facts)
    guest_append: str = ""  # kernel command line every guest on that host gets (its facts)


@dataclass
class CellMachines:
    host: Host
    cell: Cell
    build: QemuBuild
    kit: Kit
    run_id: str
    log_dir: Path
    shutdown_timeout: float = 10.0
    heartbeat: bool = False
    machine_options: tuple[str, ...] = ()  # what every guest on the cell's host needs (its facts)
    guest_append: str = ""  # kernel command line every guest on the cell's host gets (its facts)
    scratch: Path | None = None  # on the cell's host, made on entry, removed on exit
    created: list[GuestMachine] = field(default_factory=list)

    def __enter__(self) -> "CellMachines":
        self.scratch = self.host.tempdir("ck-s-")
        return self

    def __exit__(self, *exc) -> None:
        """Every machine of the cell stopped, whatever happened, then its scratch removed."""
        try:
            self.shutdown_all()
        finally:
            if self.scratch is not None:
                self.host.remove_tree(self.scratch)

    def shutdown_all(self) -> None:
        """Stop every machine this cell made (safe for ones already stopped); one that fails to
        stop does not keep the others running."""
        errors = []
        for m in self.created:
            try:
                m.shutdown()
            except Exception as e:  # noqa: BLE001 -- re-raised below, after the others stopped
                errors.append(e)
        if errors:
            raise errors[0]

    def machine(self, name: str = "", *, axes: dict | None = None, incoming: bool = False,
                site: Site | None = None, pinned: tuple[str, ...] | None = None) -> GuestMachine:
        """A machine for this cell; `axes` overrides some of the cell's (a mismatched destination),
        `incoming` starts it waiting for a migration stream (-incoming defer), `site` runs it on
        another host or QEMU build of the cell's migration domain."""
        if self.scratch is None:
            raise RuntimeError("CellMachines is a context manager: machines are made inside `with`")
        host, build, kit = (site.host, site.build, site.kit) if site else (self.host, self.build, self.kit)
        host_options = site.machine_options if site else self.machine_options
        append = " ".join(a for a in (site.guest_append if site else self.guest_append, self.cell.append) if a)
        cell = self.cell
        if axes:
            cell = replace(cell, axes=tuple((k, axes.get(k, v)) for k, v in cell.axes))
        if pinned is not None:
            cell = replace(cell, pinned=pinned)
        # On the cell's own host the sockets go in its scratch, so no directory is made and
        # removed per machine; on another host (a site of the domain) in a directory of their own.
        home = site is None or site.host is self.host
        sock_dir = self.scratch if home else host.tempdir("ck-")
        # The machine's own host: its devices' files are made where its QEMU opens them.
        extra = workloads.device_args(self.cell.workloads, workloads.LaunchContext(self.cell, self.scratch, host))
        if incoming:
            extra += ["-incoming", "defer"]
        files = MachineFiles(self.log_dir / name if name else self.log_dir, sock_dir,
                             sock_prefix=re.sub(r"[^A-Za-z0-9._-]", "_", name or "guest") + "-" if home else "",
                             owns_sock_dir=not home)  # QEMU's option syntax: no comma in a path
        argv = qemu_argv(cell, build, kit.kernel, kit.initrd, qmp_sock=files.qmp_sock,
                         console_sock=files.console_sock, heartbeat_sock=files.heartbeat_sock if self.heartbeat else None,
                         run_tag=run_tag(self.run_id, self.cell.id) + (f":{name}" if name else ""),
                         append=append, extra_args=tuple(extra), host_options=host_options)
        m = GuestMachine(host, argv, files, build=f"{build.name} {build.version or ''}".strip(),
                         shutdown_timeout=self.shutdown_timeout,
                         with_heartbeat=self.heartbeat)
        self.created.append(m)
        return m
