"""The guest console and the framed command protocol spoken with guest_tests/init.

The harness sends "<id> <command>" on one line; the guest answers
    @@CK-BEGIN <id>
    <output>
    (a newline of the guest's own, so output without a final one cannot hide the marker)
    @@CK-END <id> <status>
Ids carry a per-session nonce, so output of an earlier, timed-out command can never be taken for
the answer to a later one. Parsing is a pure function (`parse_frame`) so it is unit-tested apart
from any guest.
"""

from __future__ import annotations

import json
import re
import secrets
import time
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import pexpect
import pexpect.expect
import pexpect.fdpexpect

from .errors import GuestPanic, GuestTimeout, ObserveError, QemuDied

READY_RE = re.compile(rb"CASKIT-READY kit=(\S+) cpus=(\d+)")
# Kernel messages that mean the guest will never reach the command loop.
PANIC_RE = re.compile(rb"Kernel panic - not syncing:[^\r\n]*")
MAX_COMMAND = 3000  # the guest tty's canonical line limit is 4095 bytes


# One read takes whatever the socket holds, up to this: a burst of console output (a boot log
# that arrived while the controller was busy) is one read and one search, not 2000-byte pieces.
MAXREAD = 65536


class _LineSearcher(pexpect.expect.searcher_re):
    """pexpect's regex searcher, searching only what a new chunk can complete.

    pexpect searches its whole buffer again for every chunk that arrives; until a boot's ready
    marker that buffer is the whole boot log, so reading it cost time quadratic in its size (the
    controller's CPU per cell, issue 23). Every pattern the console waits for matches within one
    line (it may begin with that line's newline and end with the next), so a match that the new
    bytes complete starts at or after the last newline before them: the search starts there. The
    bytes scanned are counted in `scanned` (a test checks that reading a boot log is linear)."""

    def __init__(self, patterns):
        super().__init__(patterns)
        self.scanned = 0

    def search(self, buffer, freshlen, searchwindowsize=None):
        old = len(buffer) - min(freshlen, len(buffer))
        start = max(buffer.rfind(b"\n", 0, old), 0) if old else 0
        first = None
        for index, s in self._searches:
            self.scanned += len(buffer) - start
            m = s.search(buffer, start)
            if m is not None and (first is None or m.start() < first[1].start()):
                first = (index, m)
        if first is None:
            return -1
        index, self.match = first
        self.start, self.end = self.match.start(), self.match.end()
        return index


class FrameError(ObserveError):
    """The guest's answer is not a well-formed frame."""


@dataclass(frozen=True)
class CommandResult:
    command: str
    status: int
    output: str

    @property
    def ok(self) -> bool:
        return self.status == 0


def parse_frame(text: str, frame_id: str) -> tuple[int, str]:
    """(status, output) of the frame `frame_id` in console text; FrameError if it is not whole."""
    text = text.replace("\r\n", "\n").replace("\r", "")
    begin = re.search(rf"^@@CK-BEGIN {re.escape(frame_id)}\n", text, re.M)
    if not begin:
        raise FrameError(f"no begin marker for frame {frame_id}")
    end = re.compile(rf"^@@CK-END {re.escape(frame_id)} (\d+)$", re.M).search(text, begin.end())
    if not end:
        raise FrameError(f"no end marker for frame {frame_id}")
    output = text[begin.end():end.start()]
    # The guest prints a newline of its own before the end marker (output may lack a final one).
    return int(end.group(1)), output[:-1] if output.endswith("\n") else output


class Console:
    """A pexpect session on the guest console socket, logged to a transcript file."""

    def __init__(self, sock: socket.socket, transcript: Path):
        self.sock = sock
        self.log: BinaryIO = open(transcript, "ab")
        # Every byte sent to the guest, with the wall time, so a run can prove when it sent nothing.
        self.sent_log = open(transcript.with_name("console-sent.jsonl"), "a")
        self.child = pexpect.fdpexpect.fdspawn(sock.fileno(), timeout=30, maxread=MAXREAD, logfile=None)
        self.child.logfile_read = self.log
        self.nonce = secrets.token_hex(3)
        self.counter = 0
        # What the console showed of the latest boot, up to the ready marker: the kernel's own
        # lines until /init took its messages off the console (see ck-kmsg).
        self.boot_text: str | None = None
        self.scanned = 0  # bytes the searches of every wait so far went over (a test reads it)

    def close(self) -> None:
        try:
            self.sock.close()
        finally:
            self.log.close()
            self.sent_log.close()

    def note(self, text: str) -> None:
        """A harness line in the transcript, set apart from guest output."""
        self.log.write(f"\n#caskit# {text}\n".encode())
        self.log.flush()

    def drain(self, timeout: float) -> None:
        """Read what the socket still holds, into the transcript and `tail()`, until its other end
        closes or `timeout`. A QEMU that died leaves its guest's last words (an oops printed right
        after an incoming migration's `cont`) unread in the socket when nothing waited on the
        console then."""
        try:
            self.child.expect([pexpect.EOF, pexpect.TIMEOUT], timeout=timeout)
        except (OSError, ValueError):  # the socket is gone, or closed on our side: nothing to read
            pass

    def tail(self, n: int = 2000) -> str:
        before = self.child.before if isinstance(self.child.before, bytes) else b""
        return before[-n:].decode(errors="replace")

    def _expect(self, patterns: list, timeout: float, what: str) -> int:
        """pexpect's expect, with the socket's own errors (ECONNRESET, EPIPE: QEMU, the console's
        other end, went away) raised as QemuDied, which the machine then explains by how QEMU
        ended: a crash (FAIL) or a kill (ERROR), never a harness error."""
        searcher = _LineSearcher(self.child.compile_pattern_list(patterns))
        try:
            return self.child.expect_loop(searcher, timeout)
        except OSError as e:
            raise QemuDied(f"console lost while waiting for {what} ({e.strerror or e})", None, self.tail()) from e
        finally:
            self.scanned += searcher.scanned

    def expect(self, patterns: list, timeout: float, what: str) -> int:
        """The index of the first of `patterns` (compiled bytes regexes that match within one line,
        which may begin with its newline; pexpect.EOF, pexpect.TIMEOUT) to show up; `match` and
        `seen()` say what it was and what came before it. For consoles that are not the kit's (an
        emulated host's), whose markers are their own."""
        return self._expect(patterns, timeout, what)

    @property
    def match(self):
        return self.child.match

    def seen(self) -> bytes:
        """What the console showed before the last match (or until its end or a timeout)."""
        return self.child.before if isinstance(self.child.before, bytes) else b""

    def wait_ready(self, timeout: float) -> dict:
        """Wait for the kit's ready marker; a panic or QEMU exit ends the wait early."""
        i = self._expect([READY_RE, PANIC_RE, pexpect.EOF, pexpect.TIMEOUT], timeout, "the ready marker")
        if i == 0:
            self.boot_text = self.child.before.decode(errors="replace")
            return {"kit": self.child.match.group(1).decode(), "cpus": int(self.child.match.group(2))}
        if i == 1:
            raise self._panic("boot")
        if i == 2:
            raise QemuDied("console closed before the guest was ready", None, self.tail())
        raise GuestTimeout("the guest's ready marker", timeout, self.tail())

    def _panic(self, during: str) -> GuestPanic:
        """Read what the kernel prints after the panic line (its reason, a backtrace) briefly."""
        text = self.child.before + self.child.after
        try:
            self.child.expect([pexpect.TIMEOUT, pexpect.EOF], timeout=1.0)
        except OSError:
            pass  # the console is gone after the panic: what came before is all there is
        if isinstance(self.child.before, bytes):
            text += self.child.before
        return GuestPanic(during, text[-6000:].decode(errors="replace"))

    def run(self, command: str, timeout: float = 30.0) -> CommandResult:
        if "\n" in command or len(command) > MAX_COMMAND:
            raise ValueError("a framed command is one line of at most %d bytes" % MAX_COMMAND)
        self.counter += 1
        fid = f"{self.nonce}.{self.counter}"
        line = f"{fid} {command}\n"
        self.sent_log.write(json.dumps({"t": round(time.time(), 3), "sent": line}) + "\n")
        self.sent_log.flush()
        try:
            self.child.send(line.encode())
        except OSError as e:  # BrokenPipeError and kin: QEMU, the console's other end, is gone
            raise QemuDied(f"console closed before {command!r} could be sent ({e.strerror or e})", None,
                           self.tail()) from e
        end = re.compile(rf"\n@@CK-END {re.escape(fid)} \d+\r?\n".encode())
        i = self._expect([end, PANIC_RE, pexpect.EOF, pexpect.TIMEOUT], timeout, f"the answer to {command!r}")
        if i == 0:
            raw = (self.child.before + self.child.after).decode(errors="replace")
            status, output = parse_frame(raw, fid)
            return CommandResult(command, status, output)
        if i == 1:
            raise self._panic(command)
        if i == 2:
            raise QemuDied(f"console closed while running {command!r}", None, self.tail())
        raise GuestTimeout(f"answer to {command!r}", timeout, self.tail())
