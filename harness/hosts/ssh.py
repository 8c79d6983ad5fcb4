"""A host reached over SSH (paramiko): the same Host interface as LocalHost, run remotely.

Every command goes to the remote shell as one `shlex.join` of an argv, so no value from a config
ever reaches a shell unquoted. Host keys are checked against the inventory's known_hosts file
only; an unknown or changed key is refused, never learnt.

What a remote host needs besides sshd and QEMU: `sh`, `flock` (util-linux, for slot leases),
`sha256sum`, `truncate` and `stat` (coreutils: the cell's disk image, the migration state file)
and, only where sshd refuses streamlocal forwarding (QEMU's sockets are reached through
OpenSSH's direct-streamlocal channels otherwise), `python3` for a few lines that bridge a unix
socket to the SSH channel.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import select
import shlex
import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import paramiko

from ..specs import HostSpec
from ..errors import HostError, SlotsBusy
from ..kit import Kit
from .scripts import script as _script
from .streamlocal import CONNECT_FAILED, StreamLocalUnsupported, open_streamlocal


# paramiko logs a failed connection (with its traceback) and every refused channel open (QEMU's
# bind-then-listen gap makes a few on purpose) at ERROR; with no handler of the program's,
# Python's last-resort handler would print them on the terminal. caskit reports each failure
# itself, in one line naming the host; a program that configures logging still gets the records.
logging.getLogger("paramiko").addHandler(logging.NullHandler())

CONNECT_TIMEOUT = 15.0
# QEMU listens right after it binds; a socket sshd cannot connect to for this long is either not
# listening or sshd forbids the channel (the bridge, which retries longer, tells which).
STREAMLOCAL_RETRY_S = 0.5
COMMAND_TIMEOUT = 60.0
KEEPALIVE_S = 5
# How long the host gathers a batched stream (a guest's console) before sending it. A guest's hvc
# console writes at most 16 bytes at a time, each one SSH packet for the controller to decrypt and
# dispatch when forwarded as it comes: about a thousand a boot, most of the controller's CPU per
# cell (bench/README.md, issue 23). 20 ms is far below any console deadline.
BATCH_S = 0.02
# The shell's status for a command it cannot find: the host has no python3 for the batching bridge.
NOT_FOUND = 127

BRIDGE = _script("bridge.py")

# Starts the command in the background and reports its PID first, so that the controller can
# stop it by PID; the shell's own exit status is then the command's (128+N after signal N).
SPAWN = '"$@" </dev/null & echo "$!"; wait "$!"'


KILL_TAGGED = _script("kill_tagged.sh")


WAIT_PATHS = _script("wait_paths.sh")

# A file's size, or nothing at all when there is no file: one command tells "missing" (None)
# from "cannot look" (an error), which stat's exit status alone does not.
FILE_SIZE = '[ -e "$1" ] || exit 0; exec stat -L -c %s -- "$1"'


class _ProxyCommand(paramiko.ProxyCommand):
    """paramiko's, except that a command that has exited is a closed connection at once. paramiko's
    own recv() goes on reading the empty pipe until its timeout: 15 s of a busy loop for every
    connect to a host that is down behind a proxy command (measured on the pools' down member)."""

    def recv(self, size: int) -> bytes:
        buffer = b""
        deadline = None if self.timeout is None else time.monotonic() + self.timeout
        try:
            while len(buffer) < size:
                wait = None if deadline is None else deadline - time.monotonic()
                if wait is not None and wait <= 0:
                    break
                ready, _, _ = select.select([self.process.stdout], [], [], wait)
                if ready:
                    chunk = os.read(self.process.stdout.fileno(), size - len(buffer))
                    if not chunk:  # EOF: the command exited; paramiko reads b"" as a closed socket
                        return buffer
                    buffer += chunk
        except OSError as e:
            raise paramiko.ProxyCommandFailure(" ".join(self.cmd), e.strerror) from e
        if not buffer:
            raise socket.timeout()
        return buffer

    def exit_detail(self) -> str:
        """", the proxy command exited N: its last stderr line" once it has exited, else ""."""
        code = self.process.poll()
        if code is None:
            return ""
        err = b""
        with contextlib.suppress(OSError, ValueError):
            os.set_blocking(self.process.stderr.fileno(), False)
            err = self.process.stderr.read() or b""
        last = err.decode(errors="replace").strip().splitlines()[-1:] or [""]
        return f"; the proxy command exited {code}" + (f": {last[0][:200]}" if last[0] else "")


class SshCommandError(HostError):
    pass


def _pump(src, dst_write) -> None:
    try:
        while True:
            b = src.recv(65536)
            if not b:
                break
            dst_write(b)
    except (OSError, EOFError, paramiko.SSHException):
        pass


@dataclass
class SshProcess:
    host: SshHost
    channel: paramiko.Channel
    pid: int
    pumps: list[threading.Thread] = field(default_factory=list)
    code: int | None = None
    dropped: bool = False  # we lost sight of it, which does not mean it stopped

    def poll(self) -> int | None:
        if self.code is None and self.channel.exit_status_ready():
            status = self.channel.recv_exit_status()
            if status == -1:  # the channel closed without a status: the connection dropped
                self.code, self.dropped = -1, True
            else:
                self.code = -(status - 128) if status > 128 else status
            for t in self.pumps:
                t.join(2.0)  # the last stderr lines, before anyone reads them
        return self.code

    def wait(self, timeout: float) -> int | None:
        deadline = time.monotonic() + timeout
        while self.poll() is None:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            self.channel.status_event.wait(min(left, 0.5))
        return self.code

    def kill(self) -> None:
        """SIGKILL by PID on the host (over a new connection if the old one dropped)."""
        if self.poll() is None or self.dropped:
            with contextlib.suppress(HostError):
                self.host.run(["kill", "-9", str(self.pid)], timeout=10)
            if not self.dropped and self.wait(10) is None:
                self.channel.close()
                self.code = -9
            self.dropped = False


class SshHost:
    """One inventory host over one SSH connection (reconnected when it drops)."""

    def __init__(self, spec: HostSpec):
        if spec.ssh is None:
            raise ValueError(f"host {spec.name} is not an ssh host")
        self.name, self.slots, self.spec, self.ssh = spec.name, spec.slots, spec, spec.ssh
        self.console_log = Path(spec.console_log) if spec.console_log else None
        self.monitor = Path(spec.monitor) if spec.monitor else None
        self.host_kernel = Path(spec.host_kernel) if spec.host_kernel else None
        self._client: paramiko.SSHClient | None = None
        self._lock = threading.Lock()
        self._kits: dict[str, Kit] = {}
        self._streamlocal_ok = True
        self._batch_ok = spec.console_batch
        self._python: str | None = None  # the host's python3 as a path, once asked

    # -- connection --------------------------------------------------------------------------

    def _where(self) -> str:
        return f"{self.ssh.user}@{self.ssh.address}:{self.ssh.port}"

    def transport(self) -> paramiko.Transport:
        with self._lock:
            t = self._client.get_transport() if self._client else None
            if t is not None and t.is_active():
                return t
            self._client = self._connect()
            t = self._client.get_transport()
            assert t is not None
            return t

    def _connect(self) -> paramiko.SSHClient:
        s = self.ssh
        client = paramiko.SSHClient()
        client.load_host_keys(s.known_hosts)  # this file only: never ~/.ssh/known_hosts
        client.set_missing_host_key_policy(paramiko.RejectPolicy())
        sock = _ProxyCommand(shlex.join(s.proxy_command)) if s.proxy_command else None
        try:
            client.connect(s.address, s.port, username=s.user, key_filename=s.key_file, look_for_keys=False,
                           allow_agent=False, timeout=CONNECT_TIMEOUT, banner_timeout=CONNECT_TIMEOUT,
                           auth_timeout=CONNECT_TIMEOUT, sock=sock)
        except paramiko.BadHostKeyException as e:
            _close_failed(client)
            raise HostError(f"host {self.name} ({self._where()}): its host key CHANGED "
                             f"(got {e.key.get_name()} {e.key.fingerprint}, {s.known_hosts} has "
                             f"{e.expected_key.fingerprint}); refusing to connect. If the host was reinstalled, "
                             f"check the new key out of band and replace its line in {s.known_hosts}") from e
        except paramiko.SSHException as e:
            _close_failed(client)
            if "not found in known_hosts" in str(e):
                target = s.address if s.port == 22 else f"[{s.address}]:{s.port}"
                raise HostError(f"host {self.name} ({self._where()}): its host key is not in {s.known_hosts}; "
                                 f"refusing an unknown host. Check its fingerprint out of band, then add it, e.g. "
                                 f"`ssh-keyscan -p {s.port} {s.address} >> {s.known_hosts}` "
                                 f"(the line starts with {target})") from e
            raise HostError(f"host {self.name} ({self._where()}): SSH failed: {e}"
                            f"{sock.exit_detail() if sock is not None else ''}") from e
        except (OSError, EOFError) as e:
            _close_failed(client)
            raise HostError(f"host {self.name} ({self._where()}): cannot connect: {e}") from e
        t = client.get_transport()
        assert t is not None
        t.set_keepalive(KEEPALIVE_S)
        return client

    def close(self) -> None:
        with self._lock:
            if self._client is not None:
                self._client.close()
                self._client = None

    def _exec(self, argv: list[str], timeout: float = CONNECT_TIMEOUT) -> paramiko.Channel:
        """A channel running `argv` on the host. Any way SSH can fail here is the host's failure
        (HostError), so no paramiko exception reaches the callers.

        paramiko waits for the answer to an exec request without a deadline, and a host whose
        sshd is stuck in its kernel never answers (measured: a powernv9 L1 whose other CPU had
        hard-locked held a hang's forensics for minutes). So the channel is opened and the
        request sent from a thread, both within `timeout`; past it the connection is dropped,
        which ends that thread too."""
        command = shlex.join(argv)
        transport = self.transport()

        def start() -> paramiko.Channel:
            ch = transport.open_session(timeout=timeout)
            ch.exec_command(command)
            return ch

        return self._within(f"`{command[:120]}`", timeout, start)

    def _within(self, what: str, timeout: float, request):
        """`request()` (an SSH request paramiko waits on without a deadline) from a thread, given
        `timeout`; past it the connection is dropped (which ends the thread) and HostError says so."""
        done: list = []
        finished = threading.Event()

        def call() -> None:
            try:
                done.append(request())
            except BaseException as e:  # noqa: BLE001 -- handed to the caller's thread below
                done.append(e)
            finally:
                finished.set()

        threading.Thread(target=call, name=f"ssh-request {self.name}", daemon=True).start()
        if not finished.wait(timeout):
            self.close()
            raise HostError(f"host {self.name}: {what} was not started within {timeout:.0f}s: "
                            f"the host's sshd does not answer (the connection was dropped)")
        if not isinstance(done[0], BaseException):
            return done[0]
        if isinstance(done[0], (paramiko.SSHException, EOFError, OSError)):
            raise HostError(f"host {self.name}: cannot run {what} over SSH: {done[0]!r}") from done[0]
        raise done[0]

    # -- commands ----------------------------------------------------------------------------

    def run(self, argv: list[str], timeout: float = COMMAND_TIMEOUT, check: bool = False) -> tuple[int, str, str]:
        """Run an argv on the host; returns (exit status, stdout, stderr)."""
        ch = self._exec(argv, timeout)
        ch.settimeout(timeout)
        out, err = bytearray(), bytearray()
        try:
            ch.shutdown_write()
            t = threading.Thread(target=_pump, args=(_Stderr(ch), err.extend), daemon=True)
            t.start()
            _pump(ch, out.extend)
            t.join(timeout)
            deadline = time.monotonic() + timeout
            while not ch.exit_status_ready():
                if time.monotonic() > deadline:
                    raise HostError(f"host {self.name}: `{shlex.join(argv)[:200]}` still running after {timeout:.0f}s")
                ch.status_event.wait(0.5)
            code = ch.recv_exit_status()
        except socket.timeout as e:
            raise HostError(f"host {self.name}: `{shlex.join(argv)[:200]}` still running after {timeout:.0f}s") from e
        except (paramiko.SSHException, EOFError, OSError) as e:
            raise HostError(f"host {self.name}: SSH failed during `{shlex.join(argv)[:200]}`: {e!r}") from e
        finally:
            ch.close()
        if code == -1:
            raise HostError(f"host {self.name}: the SSH connection dropped during `{shlex.join(argv)[:200]}`")
        if check and code != 0:
            raise SshCommandError(f"host {self.name}: `{shlex.join(argv)[:200]}` exited {code}: "
                                  f"{err.decode(errors='replace').strip()[-500:]}")
        return code, out.decode(errors="replace"), err.decode(errors="replace")

    def spawn(self, argv: list[str], stdout: Path, stderr: Path) -> SshProcess:
        ch = self._exec(["sh", "-c", SPAWN, "sh", *argv])
        ch.shutdown_write()
        line = _first_line(ch, CONNECT_TIMEOUT)
        if not line.strip().isdigit():
            ch.close()
            raise HostError(f"host {self.name}: could not start {argv[0]}: no PID reported ({line[:100]!r})")
        out_f, err_f = open(stdout, "ab", buffering=0), open(stderr, "ab", buffering=0)
        pumps = [threading.Thread(target=_pump_to_file, args=(ch, out_f), daemon=True),
                 threading.Thread(target=_pump_to_file, args=(_Stderr(ch), err_f), daemon=True)]
        for t in pumps:
            t.start()
        return SshProcess(self, ch, int(line), pumps)

    def tempdir(self, prefix: str) -> Path:
        _, out, _ = self.run(["mktemp", "-d", f"/tmp/{prefix}XXXXXX"], check=True)
        return Path(out.strip())

    def remove_tree(self, path: Path) -> None:
        with contextlib.suppress(HostError):
            self.run(["rm", "-rf", "--", str(path)], timeout=30)

    def make_sparse(self, path: Path, size: int) -> None:
        """A file of `size` bytes at `path` on the host, created sparse if missing, an existing one
        keeping its contents (`truncate -s`, as LocalHost does)."""
        self.run(["truncate", "-s", str(int(size)), "--", str(path)], check=True)

    def file_size(self, path: Path) -> int | None:
        """The size of the file at `path` on the host in bytes, None if there is none."""
        _, out, _ = self.run(["sh", "-c", FILE_SIZE, "sh", str(path)], check=True)
        return int(out) if out.strip() else None

    def wait_paths(self, paths: list[Path], proc: SshProcess, timeout: float) -> bool:
        """One remote command polls for the paths (every remote command costs a login shell)."""
        code, _, _ = self.run(["sh", "-c", WAIT_PATHS, "sh", str(proc.pid), str(int(timeout / 0.02)),
                               *map(str, paths)], timeout=timeout + 30)
        return code == 0

    def connect_unix(self, path: Path, timeout: float, batch: bool = False) -> socket.socket:
        """A local socket whose other end is the host's unix socket (through an SSH channel):
        sshd connects to it itself where it allows streamlocal forwarding (no process on the host),
        else a python3 bridge on the host does. `batch` (a guest's console): a python3 bridge that
        sends what the socket gives in BATCH_S batches, where the host has python3."""
        if batch and self._batch_ok:  # the same bridge as a console started with its QEMU
            return self.console_early(path, timeout).connect(timeout)
        ch = self._streamlocal(path, timeout) if self._streamlocal_ok else None
        if ch is None:
            try:
                ch = self._bridge(path, timeout)
            except _NoPython as e:  # no streamlocal, no python3: nothing can join the socket
                raise OSError(str(e)) from e
            # The socket listens (the bridge got in) and sshd would not connect to it: this sshd
            # forbids streamlocal forwarding, which OpenSSH words like a failed connect.
            self._streamlocal_ok = False
        return _spliced(ch)

    def _streamlocal(self, path: Path, timeout: float) -> paramiko.Channel | None:
        """The channel, or None when sshd would not open it within STREAMLOCAL_RETRY_S (then the
        bridge tells a forbidding sshd from a socket that is not there)."""
        deadline = time.monotonic() + min(timeout, STREAMLOCAL_RETRY_S)
        while True:
            try:
                return open_streamlocal(self.transport(), str(path), max(1.0, timeout))
            except StreamLocalUnsupported:
                return None
            except paramiko.ChannelException as e:
                # QEMU binds (the file appears) a moment before it listens: retry while refused.
                if e.code != CONNECT_FAILED:
                    raise OSError(f"host {self.name}: cannot connect to {path}: {e.text}") from e
                if time.monotonic() > deadline:
                    return None
                time.sleep(0.01)
            except (paramiko.SSHException, EOFError) as e:
                raise OSError(f"host {self.name}: cannot connect to {path}: {e}") from e

    def console_early(self, path: Path, wait: float) -> "PendingConsole | None":
        """Start the batching bridge for a console whose QEMU is not started yet: it waits up to
        `wait` for the socket, so its own start (a python3, 0.2-0.8 s on a busy host) overlaps
        QEMU's. None where this host does not batch."""
        if not self._batch_ok:
            return None
        return PendingConsole(self, path, self._exec(self._bridge_argv(path, BATCH_S, wait)))

    def _bridge_argv(self, path: Path, batch_s: float, wait: float | None = None) -> list[str]:
        return [self._python_path(), "-I", "-S", "-c", BRIDGE, "unix", str(path), repr(batch_s),
                *([repr(wait)] if wait is not None else [])]

    def _python_path(self) -> str:
        """The interpreter `python3` names on the host, asked once per connection's host: a
        `python3` on PATH may be a wrapper (a pyenv shim here costs 0.2 s of a busy host's CPU at
        every start, against 0.03 s for the interpreter itself). `python3` when it cannot tell."""
        if self._python is None:
            code, out, _ = self.run(["python3", "-I", "-S", "-c", "import sys; print(sys.executable)"], timeout=30)
            exe = out.strip()
            self._python = exe if code == 0 and exe.startswith("/") and "\n" not in exe else "python3"
        return self._python

    def _bridge(self, path: Path, timeout: float) -> paramiko.Channel:
        return self._bridge_ready(self._exec(self._bridge_argv(path, 0.0)), path, timeout)

    def _bridge_ready(self, ch: paramiko.Channel, path: Path, timeout: float) -> paramiko.Channel:
        """`ch`, a bridge, once it says it is connected; else _NoPython or OSError saying why."""
        line = _first_line(ch, timeout)
        if line != b"ck-bridge-ok\n":
            if not line:  # ended: its exit status follows the end of its output
                ch.status_event.wait(min(timeout, 5.0))
            err = ch.recv_stderr(4096).decode(errors="replace") if ch.recv_stderr_ready() else ""
            missing = ch.exit_status_ready() and ch.recv_exit_status() == NOT_FOUND
            ch.close()
            why = f"host {self.name}: cannot connect to {path}: {err.strip()[-300:] or 'no answer'}"
            raise _NoPython(why) if missing else OSError(why)
        return ch

    def kill_tagged(self, tag_prefix: str) -> list[int]:
        """Stop (by PID) every process on the host started with `-name <tag>` under this prefix."""
        code, out, err = self.run(["sh", "-c", KILL_TAGGED, "sh", tag_prefix], timeout=60)
        return [int(x) for x in out.split() if x.isdigit()]

    # -- slots -------------------------------------------------------------------------------

    @contextlib.contextmanager
    def lease(self, timeout: float = 3600.0) -> Iterator[int]:
        """Hold one of the host's slots: an flock on the host, held by a process whose stdin is an
        SSH channel. Closing the channel, the controller dying or the connection dropping ends
        `cat`, and the kernel on the host drops the lock: a slot is never left taken."""
        d = f"{self.ssh.kit_dir}/slots"
        owner = f"{socket.gethostname()} pid {os.getpid()} since {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}"
        deadline = time.monotonic() + timeout
        delay = 0.05
        while True:
            for i in range(self.slots):
                f = f"{d}/slot-{i}.lock"
                ch = self._exec(["sh", "-c", 'mkdir -p "$1" && exec flock -n -E 75 "$2" sh -c '
                                 '\'printf "%s\\n" "$1" > "$2" && echo held && exec cat\' sh "$3" "$2"',
                                 "sh", d, f, owner])
                if _first_line(ch, CONNECT_TIMEOUT) == b"held\n":
                    try:
                        yield i
                    finally:
                        ch.close()
                    return
                ch.close()
            if time.monotonic() > deadline:
                raise SlotsBusy(f"host {self.name}: no free slot of {self.slots} within {timeout:.0f}s")
            time.sleep(delay)  # flock -n offers no wait-for-any-of-N; back off and retry
            delay = min(delay * 2, 0.5)

    # -- the guest kit -----------------------------------------------------------------------

    def stage_kit(self, kit: Kit) -> Kit:
        """The kit's files on this host, sent once per content key over SFTP and checked by hash."""
        if kit.key in self._kits:
            return self._kits[kit.key]
        d = f"{self.ssh.kit_dir}/kits/{kit.key}"
        files = {p.name: p for p in (kit.kernel, kit.initrd) if p is not None}
        want = {name: hashlib.sha256(p.read_bytes()).hexdigest() for name, p in files.items()}
        if not self._kit_ok(d, want):
            self.run(["mkdir", "-p", d], check=True)
            try:
                transport = self.transport()
                sftp = self._within("the SFTP subsystem", CONNECT_TIMEOUT, transport.open_sftp_client)
                # Each SFTP request (a write, the rename) then waits at most this long.
                sftp.get_channel().settimeout(COMMAND_TIMEOUT)
                try:
                    for name, p in files.items():
                        tmp = f"{d}/.{name}.{os.getpid()}.part"
                        sftp.put(str(p), tmp)
                        sftp.posix_rename(tmp, f"{d}/{name}")
                finally:
                    sftp.close()
            except (paramiko.SSHException, EOFError, OSError) as e:
                raise HostError(f"host {self.name}: sending the guest kit to {d} failed: {e!r}") from e
            if not self._kit_ok(d, want):
                raise HostError(f"host {self.name}: the guest kit in {d} does not match what was sent")
        staged = Kit(kit.key, Path(d) / kit.kernel.name, Path(d) / kit.initrd.name if kit.initrd else None,
                     {**kit.manifest, "staged_on": self.name})
        self._kits[kit.key] = staged
        return staged

    def _kit_ok(self, d: str, want: dict[str, str]) -> bool:
        code, out, _ = self.run(["sh", "-c", 'cd "$1" 2>/dev/null && shift && sha256sum "$@"', "sh", d, *want])
        if code != 0:
            return False
        have = {line.split()[1]: line.split()[0] for line in out.splitlines() if len(line.split()) == 2}
        return have == want


def _close_failed(client: paramiko.SSHClient) -> None:
    """Close a client whose connect failed, and wait for its transport thread to end. That thread
    formats a traceback of the failure, and on Python 3.11 formatting parses source with `ast`;
    `ast` in two threads at once can fail with "AST constructor recursion depth mismatch" (a
    CPython 3.11 bug: the depth counter is shared between threads), which is what pytest's
    assertion rewriting ran into beside it (seen on CI: a run of a host-down test lost its
    results to that SystemError)."""
    t = client.get_transport()
    client.close()
    if t is not None and t is not threading.current_thread():
        t.join(10)


class PendingConsole:
    """A batching bridge started ahead of its QEMU (SshHost.console_early)."""

    def __init__(self, host: SshHost, path: Path, ch: paramiko.Channel):
        self.host, self.path, self.ch = host, path, ch
        self._lock = threading.Lock()
        self._connected = False

    def connect(self, timeout: float) -> socket.socket:
        """The console's local socket once the bridge got in, as `connect_unix` gives it."""
        try:
            ch = self.host._bridge_ready(self.ch, self.path, timeout)
        except _NoPython:  # remembered: this and every later console goes through sshd
            self.host._batch_ok = False
            return self.host.connect_unix(self.path, timeout)
        with self._lock:
            if self.ch.closed:
                raise OSError(f"host {self.host.name}: {self.path}: QEMU exited while its console was joined")
            self._connected = True
        return _spliced(ch)

    def cancel(self) -> None:
        """Closing its stdin ends a bridge still waiting for the socket (QEMU did not start)."""
        self.ch.close()

    def cancel_unless_connected(self) -> None:
        """QEMU exited: end the wait, but keep a console already joined (its last words)."""
        with self._lock:
            if not self._connected:
                self.ch.close()


def _spliced(ch: paramiko.Channel) -> socket.socket:
    ch.settimeout(None)
    mine, theirs = socket.socketpair()
    threading.Thread(target=_splice, args=(ch, theirs), daemon=True).start()
    return mine


class _NoPython(HostError):
    """The host has no python3 for a bridge. Never leaves SshHost, which falls back to sshd (or,
    where sshd forbids that too, says it cannot connect)."""


def _first_line(ch: paramiko.Channel, timeout: float) -> bytes:
    """The first line a remote command prints (byte by byte: what follows belongs to the caller),
    or what came before EOF or the timeout."""
    line = b""
    ch.settimeout(timeout)
    try:
        while not line.endswith(b"\n"):
            b = ch.recv(1)
            if not b:
                break
            line += b
    except socket.timeout:
        pass
    ch.settimeout(None)
    return line


class _Stderr:
    """A channel's stderr with the recv() interface of its stdout."""

    def __init__(self, ch: paramiko.Channel):
        self.ch = ch

    def recv(self, n: int) -> bytes:
        return self.ch.recv_stderr(n)


def _pump_to_file(src, f) -> None:
    try:
        _pump(src, f.write)
    finally:
        f.close()


def _splice(ch: paramiko.Channel, sock: socket.socket) -> None:
    """Copy both ways between an SSH channel and a local socket until either side closes."""

    def down():
        _pump(ch, sock.sendall)
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_WR)

    t = threading.Thread(target=down, daemon=True)
    t.start()
    try:
        while True:
            b = sock.recv(65536)
            if not b:
                break
            ch.sendall(b)
    except (OSError, EOFError, paramiko.SSHException):
        pass
    with contextlib.suppress(Exception):
        ch.shutdown_write()
    t.join(5)
    ch.close()
    sock.close()


_HOSTS: dict[str, SshHost] = {}


def ssh_host(spec: HostSpec) -> SshHost:
    """One SshHost (one connection) per inventory host per process."""
    h = _HOSTS.get(spec.name)
    if h is None or h.spec != spec:
        h = _HOSTS[spec.name] = SshHost(spec)
    return h
