"""harness/cpio.py: the newc archive is valid (read back by an independent parser and by cpio(1))
and deterministic."""

from __future__ import annotations

import gzip
import re
import shutil
import stat
import subprocess

import pytest

from harness import cpio

NEWC_FIELDS = ("ino", "mode", "uid", "gid", "nlink", "mtime", "filesize", "devmajor", "devminor",
               "rdevmajor", "rdevminor", "namesize", "check")


def read_newc(data: bytes) -> list[dict]:
    """Parse a newc ("070701") archive per the format's definition; stop at TRAILER!!!."""
    out, off = [], 0
    while True:
        assert off % 4 == 0, f"entry at {off} is not 4-byte aligned"
        assert data[off:off + 6] == b"070701", f"bad magic at {off}: {data[off:off + 6]!r}"
        h = {k: int(data[off + 6 + 8 * i: off + 14 + 8 * i], 16) for i, k in enumerate(NEWC_FIELDS)}
        name_at = off + 110
        raw_name = data[name_at:name_at + h["namesize"]]
        assert raw_name.endswith(b"\0"), "name is not NUL-terminated"
        h["name"] = raw_name[:-1].decode()
        data_at = (name_at + h["namesize"] + 3) & ~3
        h["data"] = data[data_at:data_at + h["filesize"]]
        assert len(h["data"]) == h["filesize"], "archive truncated"
        off = (data_at + h["filesize"] + 3) & ~3
        if h["name"] == "TRAILER!!!":
            assert off == len(data), "bytes after the trailer"
            return out
        out.append(h)


ENTRIES = [
    cpio.file("init", b"#!/bin/busybox sh\necho hi\n", executable=True),
    cpio.directory("dev"),
    cpio.chardev("dev/console", 5, 1),
    cpio.directory("bin"),
    cpio.symlink("bin/sh", "busybox"),
    cpio.file("bin/busybox", b"\x7fELF" + bytes(range(256)) * 3, executable=True),
    cpio.file("etc/caskit-kit", b"abc123\n"),
    cpio.file("empty", b""),
]


@pytest.fixture(scope="module")
def archive() -> bytes:
    return cpio.pack(ENTRIES)


@pytest.fixture(scope="module")
def members(archive) -> dict[str, dict]:
    return {m["name"]: m for m in read_newc(archive)}


def test_every_entry_is_in_the_archive_sorted_by_path(archive):
    names = [m["name"] for m in read_newc(archive)]
    assert names == sorted(e.path for e in ENTRIES)
    assert names[:3] == ["bin", "bin/busybox", "bin/sh"]  # a directory precedes what it holds


def test_regular_files_keep_their_bytes_and_permissions(members):
    init = members["init"]
    assert init["data"] == b"#!/bin/busybox sh\necho hi\n"
    assert (stat.S_IFMT(init["mode"]), stat.S_IMODE(init["mode"])) == (stat.S_IFREG, 0o755)
    assert stat.S_IMODE(members["etc/caskit-kit"]["mode"]) == 0o644
    assert members["bin/busybox"]["data"] == b"\x7fELF" + bytes(range(256)) * 3
    assert (members["empty"]["filesize"], members["empty"]["data"]) == (0, b"")


def test_device_node(members):
    con = members["dev/console"]
    assert stat.S_ISCHR(con["mode"]) and stat.S_IMODE(con["mode"]) == 0o600
    assert (con["rdevmajor"], con["rdevminor"], con["filesize"]) == (5, 1, 0)


def test_symlink(members):
    sh = members["bin/sh"]
    assert stat.S_ISLNK(sh["mode"])
    assert sh["data"] == b"busybox"


def test_directory(members):
    assert stat.S_ISDIR(members["dev"]["mode"]) and members["dev"]["filesize"] == 0


def test_no_owner_or_time_leaks_in(members):
    for m in members.values():
        assert (m["uid"], m["gid"], m["mtime"], m["check"], m["nlink"]) == (0, 0, 0, 0, 1), m["name"]


def test_inode_numbers_are_distinct(members):
    inos = [m["ino"] for m in members.values()]
    assert len(set(inos)) == len(inos) and 0 not in inos


def test_output_is_deterministic_whatever_the_input_order(archive):
    assert cpio.pack(list(reversed(ENTRIES))) == archive
    assert cpio.pack(ENTRIES) == archive


def test_gzip_output_is_deterministic_and_decompresses_to_the_archive(archive):
    gz = cpio.pack_gz(ENTRIES)
    assert gz == cpio.pack_gz(list(reversed(ENTRIES)))
    assert gz[4:8] == b"\0\0\0\0"  # gzip header mtime
    assert gzip.decompress(gz) == archive


def test_empty_archive_is_only_the_trailer():
    data = cpio.pack([])
    assert read_newc(data) == []
    assert len(data) == 124  # 110-byte header + "TRAILER!!!\0" + padding to 4


@pytest.mark.skipif(shutil.which("cpio") is None, reason="cpio(1) not installed")
def test_cpio_tool_lists_the_archive(archive):
    p = subprocess.run(["cpio", "-itv", "--quiet"], input=archive, capture_output=True, timeout=10)
    assert p.returncode == 0, p.stderr.decode()
    lines = p.stdout.decode().splitlines()
    by_name = {line.split()[-1] if " -> " not in line else line.split(" -> ")[0].split()[-1]: line
               for line in lines}
    assert sorted(by_name) == sorted(e.path for e in ENTRIES)
    assert by_name["dev/console"].startswith("crw-------")
    assert re.search(r" 5,\s+1 ", by_name["dev/console"])  # major, minor
    assert by_name["bin/sh"].startswith("lrwxrwxrwx") and by_name["bin/sh"].endswith("bin/sh -> busybox")
    assert by_name["init"].startswith("-rwxr-xr-x")
    assert by_name["dev"].startswith("drwxr-xr-x")


@pytest.mark.skipif(shutil.which("cpio") is None, reason="cpio(1) not installed")
def test_cpio_tool_extracts_file_contents(tmp_path):
    # Regular files and symlinks only: creating the device node would need root.
    entries = [e for e in ENTRIES if not stat.S_ISCHR(e.mode)]
    p = subprocess.run(["cpio", "-id", "--quiet", "--no-absolute-filenames"], input=cpio.pack(entries),
                       cwd=tmp_path, capture_output=True, timeout=10)
    assert p.returncode == 0, p.stderr.decode()
    assert (tmp_path / "init").read_bytes() == b"#!/bin/busybox sh\necho hi\n"
    assert (tmp_path / "bin" / "sh").is_symlink() and (tmp_path / "bin" / "sh").readlink().name == "busybox"
    assert (tmp_path / "etc" / "caskit-kit").read_text() == "abc123\n"
