"""A deterministic newc cpio writer for the guest initramfs.

Written here rather than shelling out to cpio(1) so that the archive (and so the kit hash) does
not depend on file system order, owners or timestamps, and so device nodes need no root.
"""

from __future__ import annotations

import gzip
import io
import stat
from dataclasses import dataclass


@dataclass(frozen=True)
class Entry:
    path: str  # inside the archive, no leading slash
    mode: int  # full st_mode (type and permission bits)
    data: bytes = b""
    rdev: tuple[int, int] = (0, 0)


def _header(ino: int, e: Entry, namesize: int, filesize: int) -> bytes:
    fields = [ino, e.mode, 0, 0, 1, 0, filesize, 0, 0, e.rdev[0], e.rdev[1], namesize, 0]
    return b"070701" + b"".join(b"%08X" % f for f in fields)


def _pad(n: int) -> bytes:
    return b"\0" * ((4 - n % 4) % 4)


def pack(entries: list[Entry]) -> bytes:
    out = io.BytesIO()
    for ino, e in enumerate(sorted(entries, key=lambda x: x.path), start=1):
        name = e.path.encode() + b"\0"
        hdr = _header(ino, e, len(name), len(e.data))
        out.write(hdr + name + _pad(len(hdr) + len(name)))
        out.write(e.data + _pad(len(e.data)))
    trailer = Entry("TRAILER!!!", 0)
    name = b"TRAILER!!!\0"
    hdr = _header(0, trailer, len(name), 0)
    out.write(hdr + name + _pad(len(hdr) + len(name)))
    return out.getvalue()


def pack_gz(entries: list[Entry]) -> bytes:
    return gzip.compress(pack(entries), compresslevel=6, mtime=0)


def directory(path: str) -> Entry:
    return Entry(path, stat.S_IFDIR | 0o755)


def file(path: str, data: bytes, executable: bool = False) -> Entry:
    return Entry(path, stat.S_IFREG | (0o755 if executable else 0o644), data)


def symlink(path: str, target: str) -> Entry:
    return Entry(path, stat.S_IFLNK | 0o777, target.encode())


def chardev(path: str, major: int, minor: int) -> Entry:
    return Entry(path, stat.S_IFCHR | 0o600, rdev=(major, minor))
