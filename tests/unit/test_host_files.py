"""Files on a host are made and measured through its Host: LocalHost's make_sparse() and
file_size(), and the disk image of the virtio-blk workload made through the machine's host (on an
SSH host a local open() would make it on the controller, where QEMU never looks)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from harness.cell_machines import CellMachines, Site
from harness.errors import InfraError
from harness.hosts import LocalHost
from harness.kit import Kit
from harness.workloads import LaunchContext, device_args
from harness.workloads.devices import DISK_MIB, device_argv

from .factories import make_build, make_cell


def test_make_sparse_creates_a_sparse_file_of_the_size(tmp_path):
    f = tmp_path / "disk.raw"
    LocalHost().make_sparse(f, 64 << 20)
    st = f.stat()
    assert st.st_size == 64 << 20
    assert st.st_blocks * 512 < 1 << 20  # a hole, not 64 MiB of zeros written


def test_make_sparse_keeps_an_existing_files_contents(tmp_path):
    f = tmp_path / "disk.raw"
    f.write_bytes(b"written by the guest before migrating")
    LocalHost().make_sparse(f, 4096)  # the destination's launch makes "its" disk again
    data = f.read_bytes()
    assert len(data) == 4096 and data.startswith(b"written by the guest before migrating")


def test_make_sparse_in_a_missing_directory_is_the_hosts_error(tmp_path):
    with pytest.raises(InfraError, match=r"host here: cannot make .*nowhere"):
        LocalHost("here").make_sparse(tmp_path / "nowhere" / "disk.raw", 4096)


def test_file_size_is_the_size_or_none(tmp_path):
    h = LocalHost()
    (tmp_path / "state.bin").write_bytes(b"x" * 1234)
    assert h.file_size(tmp_path / "state.bin") == 1234
    assert h.file_size(tmp_path / "empty") is None
    (tmp_path / "empty").touch()
    assert h.file_size(tmp_path / "empty") == 0
    assert h.file_size(tmp_path / "no-dir" / "state.bin") is None


@dataclass
class RecordingHost:
    """A host that is not this machine: it records what it was asked to make."""

    name: str = "elsewhere"
    slots: int = 1
    made: list[tuple[Path, int]] = field(default_factory=list)

    def make_sparse(self, path: Path, size: int) -> None:
        self.made.append((path, size))

    def tempdir(self, prefix: str) -> Path:
        return Path(f"/nonexistent-host-dir/{prefix}x")

    def remove_tree(self, path: Path) -> None:
        pass  # nothing was made


def test_the_disk_is_made_through_the_launch_hosts_interface():
    host = RecordingHost()
    scratch = Path("/nonexistent-host-dir/ck-s-1")
    argv = device_args(("virtio-blk",), LaunchContext(make_cell(), scratch, host))
    assert host.made == [(scratch / "disk.raw", DISK_MIB << 20)]
    assert f"file={scratch}/disk.raw,if=none,id=ckdisk0,format=raw" in argv
    assert not os.path.exists(scratch)  # nothing made on this machine


def test_device_argv_only_names_files(tmp_path):
    argv = device_argv({"disk", "nic"}, tmp_path)
    assert any(str(tmp_path / "disk.raw") in a for a in argv) and not list(tmp_path.iterdir())


def test_each_machine_makes_its_devices_on_its_own_host():
    """The cell's machine and one on another site (a cross plan's peer) each ask their own host."""
    mine, peer = RecordingHost("mine"), RecordingHost("peer")
    kit = Kit("k", Path("/kit/vmlinux"), None, {})
    with CellMachines(host=mine, cell=make_cell(workloads=("virtio-blk",)), build=make_build(), kit=kit,
                      run_id="run", log_dir=Path("/logs")) as cm:
        cm.machine()  # made, not launched: the devices' files are made when the argv is built
        cm.machine("B", site=Site(peer, make_build(), kit))
        assert [p for p, _ in mine.made] == [cm.scratch / "disk.raw"]
        assert [p for p, _ in peer.made] == [cm.scratch / "disk.raw"]
