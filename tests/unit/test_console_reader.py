"""harness/console.py's reader on a real socket: a boot's whole log, read and searched in linear
time (issue 23: the controller's CPU per cell). Counts reads and scanned bytes, never time."""

from __future__ import annotations

import re
import socket
import threading

import pexpect
import pytest

from harness.console import Console


def boot_log(size: int) -> bytes:
    lines, n = [], 0
    while n < size:
        line = f"[{len(lines) * 0.0123:12.6f}] some kernel line number {len(lines)} with a bit of text\r\n".encode()
        lines.append(line)
        n += len(line)
    return b"".join(lines)


@pytest.fixture
def console(tmp_path):
    ours, guest = socket.socketpair()
    c = Console(ours, tmp_path / "console.log")
    yield c, guest
    c.close()
    guest.close()


def count_reads(c: Console) -> list[int]:
    sizes: list[int] = []
    read = c.child.read_nonblocking

    def counted(size=1, timeout=-1):
        data = read(size, timeout)
        sizes.append(len(data))
        return data
    c.child.read_nonblocking = counted
    return sizes


def test_a_boot_log_already_there_is_one_read_and_one_pass(console):
    """60 KB of boot log waiting in the socket (the controller was busy): a few reads, not one per
    2000 bytes, and each byte searched about once per pattern, not again with every chunk."""
    c, guest = console
    log = boot_log(60_000)
    guest.sendall(log + b"CASKIT-READY kit=abc123 cpus=2\r\n")
    reads = count_reads(c)
    assert c.wait_ready(10) == {"kit": "abc123", "cpus": 2}
    assert c.boot_text == log.decode()
    assert len(reads) <= 3, reads
    # Two regexes (ready, panic) over the log once each, with room for a re-scanned line per read.
    assert c.scanned <= 2 * (len(log) + 200 * len(reads)), c.scanned


def test_a_log_that_trickles_in_is_searched_in_linear_time(console):
    """The console as a slow guest writes it, 16 bytes at a time (the hvc console's chunk): the
    bytes searched grow with the log, not with its square."""
    c, guest = console
    log = boot_log(40_000)
    data = log + b"CASKIT-READY kit=k cpus=1\r\n"

    def write():
        for i in range(0, len(data), 16):
            guest.sendall(data[i:i + 16])
    t = threading.Thread(target=write)
    t.start()
    reads = count_reads(c)
    try:
        assert c.wait_ready(30) == {"kit": "k", "cpus": 1}
    finally:
        t.join(10)
    assert c.boot_text == log.decode()
    # Per read: the new bytes and at most the line they continue (< 100 bytes here), per regex.
    assert c.scanned <= 2 * (len(data) + 100 * len(reads)), (c.scanned, len(reads))
    # Whatever the chunking, far below a rescan of the buffer per chunk.
    assert c.scanned < len(data) * 20


def test_a_marker_split_across_chunks_and_a_frame_end_after_a_long_output(console):
    """A match the new bytes complete is found when it began in earlier ones: the ready marker cut
    in two, then a framed answer whose end marker comes after many lines of output."""
    c, guest = console
    guest.sendall(b"line\r\nCASKIT-REA")
    reads = count_reads(c)
    threading.Timer(0.2, lambda: guest.sendall(b"DY kit=x cpus=4\r\nafter\r\n")).start()
    assert c.wait_ready(10) == {"kit": "x", "cpus": 4}
    assert len(reads) >= 2

    def answer():
        fid = guest.recv(4096).split(b" ", 1)[0].decode()
        out = b"".join(b"out %d\r\n" % i for i in range(3000))
        body = b"@@CK-BEGIN " + fid.encode() + b"\r\n" + out + b"\r\n@@CK-E"
        guest.sendall(body)
        guest.sendall(b"ND " + fid.encode() + b" 3\r\n")
    t = threading.Thread(target=answer)
    t.start()
    r = c.run("ck-something", timeout=10)
    t.join(10)
    assert r.status == 3
    assert r.output == "".join(f"out {i}\n" for i in range(3000))


def test_emulated_host_style_patterns_and_eof(console):
    c, guest = console
    fail = re.compile(rb"(CASKIT-L1-FAIL[^\r\n]*|Kernel panic - not syncing:[^\r\n]*)")
    guest.sendall(boot_log(5000) + b"CASKIT-L1-FAIL no kvm\r\n")
    guest.close()
    i = c.expect([re.compile(rb"CASKIT-L1-READY"), fail, pexpect.EOF, pexpect.TIMEOUT], 10, "the L1")
    assert i == 1 and c.match.group(1) == b"CASKIT-L1-FAIL no kvm"
    assert c.expect([fail, pexpect.EOF, pexpect.TIMEOUT], 10, "more") == 1


def test_a_dead_qemus_last_words_are_drained_into_the_transcript(console, tmp_path):
    # A destination that died right after an incoming migration's `cont`: nothing waited on its
    # console then, so its guest's oops is still in the socket (seen with PR KVM, docs/pr-kvm.md).
    c, guest = console
    guest.sendall(b"[   12.5] Oops: Kernel access of bad area, sig: 11 [#1]\r\nKernel panic - not syncing: Aiee\r\n")
    guest.close()  # QEMU gone: its end of the socket closes
    c.drain(5.0)
    assert "Kernel panic - not syncing: Aiee" in c.tail(8000)
    assert b"Oops: Kernel access of bad area" in (tmp_path / "console.log").read_bytes()
    c.drain(5.0)  # at EOF already, or with the socket gone: nothing to read, no error


def test_draining_a_console_whose_other_end_is_alive_stops_at_its_timeout(console):
    c, guest = console
    guest.sendall(b"still here\r\n")
    c.drain(0.3)
    assert "still here" in c.tail()
