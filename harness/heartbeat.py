"""The guest's heartbeat: read-only watching of its second console, and what the beats say.

A thread reads the socket of the guest's hvc1 and keeps every line with the host's clock; it
never writes. `liveness()` is pure: given the beats and the moment a hop ended, it tells how long
the guest took to show life again and where its sequence has gaps.
"""

from __future__ import annotations

import re
import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

HB_RE = re.compile(r"^HB (\d+) ([\d.]+)$")
KMSG_RE = re.compile(r"^(\d+),(\d+),(\d+),[^;]*;(.*)$")


@dataclass(frozen=True)
class Beat:
    t: float  # host monotonic time the line arrived
    seq: int
    uptime: float  # the guest's own clock


@dataclass
class Stream:
    """Everything that arrived on the heartbeat console, with host times."""

    beats: list[Beat] = field(default_factory=list)
    kmsg: list[tuple[float, str]] = field(default_factory=list)  # (host time, text)
    other: list[tuple[float, str]] = field(default_factory=list)


class HeartbeatReader:
    def __init__(self, sock: socket.socket, log_path: Path):
        self.sock = sock
        self.stream = Stream()
        self._log = open(log_path, "a")
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self.bytes_written = 0  # stays 0: the reader never sends anything (a test checks)
        self._thread = threading.Thread(target=self._run, name="heartbeat", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        buf = b""
        self.sock.settimeout(0.2)
        while not self._stop.is_set():
            try:
                data = self.sock.recv(65536)
            except socket.timeout:
                continue
            except OSError:
                break
            if not data:
                break
            buf += data
            *lines, buf = buf.split(b"\n")
            now = time.monotonic()
            for raw in lines:
                self._take(now, raw.decode(errors="replace").strip("\r\x00 "))

    def _take(self, now: float, line: str) -> None:
        if not line:
            return
        self._log.write(f"{now:.3f} {line}\n")
        self._log.flush()
        with self._lock:
            m = HB_RE.match(line)
            if m:
                self.stream.beats.append(Beat(now, int(m.group(1)), float(m.group(2))))
                return
            k = KMSG_RE.match(line)
            if k:
                self.stream.kmsg.append((now, k.group(4)))
            else:
                self.stream.other.append((now, line))

    def snapshot(self) -> Stream:
        with self._lock:
            return Stream(list(self.stream.beats), list(self.stream.kmsg), list(self.stream.other))

    def close(self) -> None:
        """Called once QEMU has ended: the reader drains what is left up to the end of the
        stream by itself (the last beats before a hop count), then stops."""
        self._thread.join(timeout=2)
        self._stop.set()
        self._thread.join(timeout=2)
        try:
            self.sock.close()
        finally:
            self._log.close()


# A beat torn in two by the hop (its first bytes written on the source, the rest on the
# destination) reaches neither reader whole: one missing sequence number at the hop is allowed.
TORN_AT_HOP = 1


def continuity(prev: Beat, first: Beat) -> str | None:
    """Why the first beat after a hop does not continue the guest's sequence, or None.
    A sequence from 1 or a guest clock that went back means the guest booted again."""
    if first.seq <= prev.seq:
        if first.seq <= 2 or first.uptime + 1.0 < prev.uptime:
            return (f"the heartbeat restarted: beat {first.seq} (uptime {first.uptime:.1f}s) after beat "
                    f"{prev.seq} (uptime {prev.uptime:.1f}s): the guest rebooted")
        return f"the heartbeat went back: beat {first.seq} after beat {prev.seq}"
    if first.seq > prev.seq + 1 + TORN_AT_HOP:
        return f"beats {prev.seq + 1}..{first.seq - 1} lost across the hop"
    return None


def liveness(beats: list[Beat], since: float, until: float, source_last: Beat | None = None) -> dict:
    """What the beats between `since` and `until` (host times) say about the guest's life.
    `source_last` is the last beat the guest printed before the hop (on its source machine)."""
    window = [b for b in beats if since <= b.t <= until]
    before = [b for b in beats if b.t < since]
    prev = before[-1] if before else source_last
    out: dict = {"beats": len(window), "first_beat_s": None, "seq_gaps": [], "max_silence_s": None,
                 "last_seq_before": prev.seq if prev else None, "continuity": None}
    if not window:
        out["max_silence_s"] = round(until - since, 3)
        return out
    out["first_beat_s"] = round(window[0].t - since, 3)
    if prev is not None:
        out["continuity"] = continuity(prev, window[0])
    out["first_seq"] = window[0].seq
    out["seq_gaps"] = [(a.seq, b.seq) for a, b in zip(window, window[1:]) if b.seq != a.seq + 1]
    times = [since] + [b.t for b in window] + [until]
    out["max_silence_s"] = round(max(b - a for a, b in zip(times, times[1:])), 3)
    # Silence once the guest had shown life again: a guest that beats once and stops is not alive.
    after = [b.t for b in window] + [until]
    out["max_silence_after_first_s"] = round(max(b - a for a, b in zip(after, after[1:])), 3) if len(after) > 1 else 0.0
    out["guest_clock_advance_s"] = round(window[-1].uptime - window[0].uptime, 3)
    return out
