"""One QEMU guest on a host: launched paused, console and QMP attached, then started.

Modelled on QEMU's python/qemu QEMUMachine: a context manager whose failed launch cleans up
and raises one error carrying the exit code, argv and stderr; shutdown in layers (QMP quit,
bounded wait, SIGKILL by PID), console closed first so QEMU never blocks writing to it.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from .console import Console
from .errors import LaunchFailure
from .heartbeat import HeartbeatReader
from .hosts import Host, Process
from .qmp import QmpClient, QmpLost


@dataclass(frozen=True)
class MachineFiles:
    """Where a machine keeps its logs (on the controller) and sockets (on the host)."""

    log_dir: Path
    sock_dir: Path

    @property
    def qmp_sock(self) -> Path:
        return self.sock_dir / "qmp.sock"

    @property
    def console_sock(self) -> Path:
        return self.sock_dir / "console.sock"

    @property
    def heartbeat_sock(self) -> Path:
        return self.sock_dir / "heartbeat.sock"

    @property
    def heartbeat_log(self) -> Path:
        return self.log_dir / "heartbeat.log"

    @property
    def stderr(self) -> Path:
        return self.log_dir / "qemu-stderr.log"

    @property
    def stdout(self) -> Path:
        return self.log_dir / "qemu-stdout.log"

    @property
    def transcript(self) -> Path:
        return self.log_dir / "console.log"

    @property
    def qmp_log(self) -> Path:
        return self.log_dir / "qmp.jsonl"


@dataclass
class GuestMachine:
    host: Host
    argv: list[str]
    files: MachineFiles
    launch_timeout: float = 30.0
    shutdown_timeout: float = 10.0
    proc: Process | None = None
    qmp: QmpClient | None = None
    console: Console | None = None
    heartbeat: HeartbeatReader | None = None
    with_heartbeat: bool = False  # the argv has a second console for the guest's heartbeat
    build: str = ""  # the QEMU build's name and version, for the record ("backports 10.0.2")
    exit_code: int | None = None
    started_at: float = field(default_factory=time.monotonic)

    def __enter__(self) -> "GuestMachine":
        self.launch()
        return self

    def __exit__(self, *exc) -> None:
        self.shutdown()

    def stderr_text(self) -> str:
        try:
            return self.files.stderr.read_text(errors="replace")
        except OSError:
            return ""

    def _fail_launch(self, message: str) -> LaunchFailure:
        self.shutdown()
        return LaunchFailure(message, self.exit_code, self.stderr_text(), self.argv)

    def launch(self) -> None:
        self.files.log_dir.mkdir(parents=True, exist_ok=True)
        (self.files.log_dir / "qemu-argv.txt").write_text("\n".join(self.argv) + "\n")
        self.started_at = time.monotonic()
        self.proc = self.host.spawn(self.argv, self.files.stdout, self.files.stderr)
        # QEMU creates its listening sockets before machine init; a refused configuration
        # exits right after. Wait for both sockets, or the exit, whichever comes first.
        socks = [self.files.qmp_sock, self.files.console_sock] + ([self.files.heartbeat_sock] if self.with_heartbeat else [])
        if not self.host.wait_paths(socks, self.proc, self.launch_timeout):
            if self.proc.poll() is not None:
                raise self._fail_launch("QEMU exited at start")
            raise self._fail_launch(f"QEMU created no sockets within {self.launch_timeout:.0f}s")
        try:
            # All at once (each costs a remote command on an SSH host); with -S the guest has not
            # run, so nothing it prints is missed before its console is read.
            qmp_conn, console_conn, *hb_conn = self._connect_all(socks)
            self.console = Console(console_conn, self.files.transcript)
            if hb_conn:
                self.heartbeat = HeartbeatReader(hb_conn[0], self.files.heartbeat_log)
            self.qmp = QmpClient(qmp_conn, self.files.qmp_log)
            # Machine init finishes before QMP answers; a late refusal shows up as an exit here.
            self.qmp.execute("query-status")
        except (OSError, QmpLost) as e:
            if self.proc.wait(2.0) is not None:
                raise self._fail_launch("QEMU exited at start") from None
            raise self._fail_launch(f"cannot attach to QEMU: {e}") from None

    def _connect_all(self, paths: list[Path]) -> list:
        with ThreadPoolExecutor(len(paths)) as pool:
            futures = [pool.submit(self.host.connect_unix, p, 5) for p in paths]
        failed = [f.exception() for f in futures if f.exception() is not None]
        if failed:
            for f in futures:
                if f.exception() is None:
                    f.result().close()
            raise failed[0]
        return [f.result() for f in futures]

    def cont(self) -> None:
        assert self.qmp is not None
        self.qmp.execute("cont")

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def shutdown(self) -> int | None:
        """Stop QEMU for sure and return its exit code. Safe to call twice."""
        if self.proc is None:
            return None
        if self.console is not None:
            self.console.close()
            self.console = None
        if self.heartbeat is not None:
            self.heartbeat.close()
            self.heartbeat = None
        if self.proc.poll() is None and self.qmp is not None:
            try:
                self.qmp.execute("quit")
            except Exception:  # QEMU may be wedged or gone; the kill below covers it
                pass
        if self.qmp is not None:
            self.qmp.close()
            self.qmp = None
        self.proc.wait(self.shutdown_timeout if self.proc.poll() is None else 0)
        # A no-op for a process that exited; by PID for one still running, or one a dropped SSH
        # connection hid from us.
        self.proc.kill()
        self.exit_code = self.proc.poll()
        self.host.remove_tree(self.files.sock_dir)
        return self.exit_code
