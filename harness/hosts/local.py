"""Hosts behind one small interface: spawn and stop processes, temp dirs, sockets, slot leases.

`LocalHost` is this machine; `ssh.SshHost` implements the same methods over paramiko, and
everything above this module is the same for a laptop and a farm host.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Protocol

from ..errors import HostError, SlotsBusy
from ..kit import Kit


class Process(Protocol):
    pid: int

    def poll(self) -> int | None: ...
    def wait(self, timeout: float) -> int | None: ...
    def kill(self) -> None: ...


@dataclass
class LocalProcess:
    popen: subprocess.Popen

    @property
    def pid(self) -> int:
        return self.popen.pid

    def poll(self) -> int | None:
        return self.popen.poll()

    def wait(self, timeout: float) -> int | None:
        try:
            return self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def kill(self) -> None:
        """SIGKILL by PID (the process only: QEMU has no children of ours), then reap it."""
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.popen.pid, signal.SIGKILL)
            self.popen.wait()


class Host(Protocol):
    name: str
    slots: int
    # Where the host's own console is logged on the controller, if anywhere (an emulated host).
    console_log: Path | None

    def spawn(self, argv: list[str], stdout: Path, stderr: Path) -> Process: ...
    def tempdir(self, prefix: str) -> Path: ...
    def remove_tree(self, path: Path) -> None: ...
    def make_sparse(self, path: Path, size: int) -> None: ...
    def file_size(self, path: Path) -> int | None: ...
    def connect_unix(self, path: Path, timeout: float, batch: bool = False) -> socket.socket: ...
    def wait_paths(self, paths: list[Path], proc: Process, timeout: float) -> bool: ...
    def lease(self, timeout: float) -> contextlib.AbstractContextManager[int]: ...
    def run(self, argv: list[str], timeout: float = 60.0, check: bool = False) -> tuple[int, str, str]: ...
    def stage_kit(self, kit: Kit) -> Kit: ...
    def kill_tagged(self, tag_prefix: str) -> list[int]: ...


def lock_dir() -> Path:
    base = os.environ.get("CASKIT_LOCK_DIR") or ("/run/caskit" if os.access("/run", os.W_OK) else tempfile.gettempdir() + "/caskit")
    return Path(base)


@dataclass
class LocalHost:
    name: str = "local"
    slots: int = os.cpu_count() or 1
    console_log: Path | None = None

    def spawn(self, argv: list[str], stdout: Path, stderr: Path) -> LocalProcess:
        exe = argv[0]
        if not (os.path.isabs(exe) and os.access(exe, os.X_OK)) and not shutil.which(exe):
            raise HostError(f"host {self.name}: {exe} not found")
        with open(stdout, "ab") as out, open(stderr, "ab") as err:
            p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=err, start_new_session=True)
        return LocalProcess(p)

    def run(self, argv: list[str], timeout: float = 60.0, check: bool = False) -> tuple[int, str, str]:
        try:
            r = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
        except (OSError, subprocess.TimeoutExpired) as e:
            raise HostError(f"host {self.name}: {argv[0]}: {e}") from e
        if check and r.returncode != 0:
            raise HostError(f"host {self.name}: {' '.join(argv)[:200]} exited {r.returncode}: {r.stderr.strip()[-500:]}")
        return r.returncode, r.stdout, r.stderr

    def stage_kit(self, kit: Kit) -> Kit:
        return kit  # already here

    def kill_tagged(self, tag_prefix: str) -> list[int]:
        return kill_tagged(tag_prefix)

    def tempdir(self, prefix: str) -> Path:
        # Short paths: unix socket paths must stay under 108 bytes.
        return Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))

    def remove_tree(self, path: Path) -> None:
        shutil.rmtree(path, ignore_errors=True)

    def make_sparse(self, path: Path, size: int) -> None:
        """A file of `size` bytes at `path`, like `truncate -s`: created sparse if missing, an
        existing one keeps its contents up to `size` (a migration destination shares its source's
        disk, so making it again must not wipe it)."""
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o644)
            try:
                os.ftruncate(fd, size)
            finally:
                os.close(fd)
        except OSError as e:
            raise HostError(f"host {self.name}: cannot make {path}: {e}") from e

    def file_size(self, path: Path) -> int | None:
        """The size of the file at `path` in bytes, None if there is none."""
        try:
            return os.stat(path).st_size
        except FileNotFoundError:
            return None
        except OSError as e:
            raise HostError(f"host {self.name}: cannot stat {path}: {e}") from e

    def wait_paths(self, paths: list[Path], proc: Process, timeout: float) -> bool:
        """True once every path exists; False if `proc` exits first or the time runs out."""
        deadline = time.monotonic() + timeout
        while not all(p.exists() for p in paths):
            if proc.poll() is not None or time.monotonic() > deadline:
                return False
            proc.wait(0.02)  # a process exit ends the wait at once; file creation has no event here
        return True

    def connect_unix(self, path: Path, timeout: float, batch: bool = False) -> socket.socket:
        """Connect, retrying while the path exists but nobody listens yet: QEMU binds its socket
        (the file appears) a moment before it listens, and no event marks the second step.
        `batch` matters only through SSH (a local socket has no packets to save)."""
        deadline = time.monotonic() + timeout
        delay = 0.005
        while True:
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.settimeout(timeout)
            try:
                s.connect(str(path))
            except ConnectionRefusedError:
                s.close()
                if time.monotonic() > deadline:
                    raise
                time.sleep(delay)
                delay = min(delay * 2, 0.1)
                continue
            s.settimeout(None)
            return s

    @contextlib.contextmanager
    def lease(self, timeout: float = 3600.0) -> Iterator[int]:
        """Hold one of the host's slots: an flock on a file on the host itself.

        The kernel drops the lock when its holder dies, so a crashed controller never leaves a
        slot taken, and every controller, xdist worker or farm job sharing the host sees it.
        """
        d = lock_dir() / self.name
        d.mkdir(parents=True, exist_ok=True)
        deadline = time.monotonic() + timeout
        delay = 0.05
        while True:
            for i in range(self.slots):
                f = open(d / f"slot-{i}.lock", "w")
                try:
                    fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    f.close()
                    continue
                try:
                    f.write(f"{os.getpid()}\n")
                    f.flush()
                    yield i
                finally:
                    fcntl.flock(f, fcntl.LOCK_UN)
                    f.close()
                return
            if time.monotonic() > deadline:
                raise SlotsBusy(f"host {self.name}: no free slot of {self.slots} within {timeout:.0f}s")
            time.sleep(delay)  # flock offers no wait-for-any-of-N; back off and retry
            delay = min(delay * 2, 0.25)  # a freed slot is noticed within a quarter second


def tagged_pids(tag_prefix: str) -> list[int]:
    """PIDs of local processes started with `-name <tag>` where the tag starts with tag_prefix."""
    pids = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            argv = (d / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        for i, a in enumerate(argv[:-1]):
            if a == b"-name" and argv[i + 1].decode(errors="replace").startswith(tag_prefix):
                pids.append(int(d.name))
    return pids


def kill_tagged(tag_prefix: str) -> list[int]:
    """Stop (by PID) every local QEMU carrying the tag, e.g. after a controller crash."""
    killed = []
    for pid in tagged_pids(tag_prefix):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)
    return killed
