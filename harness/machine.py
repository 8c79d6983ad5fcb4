"""One QEMU guest on a host: launched paused, console and QMP attached, then started.

Modelled on QEMU's python/qemu QEMUMachine: a context manager that owns its socket directory on
the host; a failed launch stops QEMU and raises one error saying why (QEMU's refusal, a crash, a
kill); shutdown in layers (QMP quit, bounded wait, SIGKILL by PID), console closed first so QEMU
never blocks writing to it, and the socket directory removed whatever happened.

`resolve()` turns what a caller saw (a console timeout, a closed console, a lost QMP connection)
into why it happened, by asking the process and QMP: the one place a timeout becomes a guest
hang (FAIL) or a silent firmware (ERROR), and a dead QEMU a crash (FAIL) or a kill (ERROR).
"""

from __future__ import annotations

import functools
import socket
import struct
import time
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path

from . import elf, guestlog, host_cpus, qemu_exit
from .console import Console
from .errors import (CaskitError, GuestHang, GuestTimeout, HostError, KitError, LaunchFailure, NoGuestOutput, QemuDied,
                     QemuHung, QmpLost, Unresolved)
from .heartbeat import HeartbeatReader, Stream
from .hosts import Host, Process
from .hosts.scripts import script
from .qmp import QmpClient


# A stuck guest's shell is given this long to write its backtraces: it answers in well under a
# second when it answers at all (measured 0.04 s), and a hang's forensics must not hold the run.
SYSRQ_TIMEOUT = 5.0
# The host side of the same forensics: one short command; a host that cannot answer it in this
# long is itself part of what went wrong, and the message says so.
HOST_STATE_TIMEOUT = 15.0
HOST_LOG_LINES = 120
# The emulating QEMU's (L0's) registers of an emulated host's vCPUs, sampled: its vCPUs switch
# between the L1 and the L1's guest every few milliseconds. nested-papr's undelivered interrupt
# showed in 7 of 25 samples a second apart and in 10 of 30 a fifth of a second apart
# (docs/hosts.md); at that rate 30 samples miss the two that host_cpus.findings needs about once
# in a thousand hangs, and take about 3 s.
L0_SAMPLES = 30
L0_MAX_SAMPLES = 120
L0_SAMPLE_GAP = 0.1
PROCESS_STATE = script("process_state.sh")


@functools.lru_cache(maxsize=4)
def _kernel_symbols(path: str) -> host_cpus.Symbols | None:
    """The functions of an emulated host's kernel (read once per process: 0.3 s for Debian's
    45 MB vmlinux here), or None without a readable ELF symbol table."""
    try:
        functions = elf.function_symbols(Path(path).read_bytes()) if path else []
    except (OSError, struct.error, ValueError):
        return None
    return host_cpus.Symbols(functions) if functions else None


@dataclass(frozen=True)
class MachineFiles:
    """Where a machine keeps its logs (on the controller) and sockets (on the host)."""

    log_dir: Path
    sock_dir: Path
    # A machine on its cell's own host keeps its sockets in the cell's scratch directory, named
    # apart by this prefix (every directory made or removed on an emulated host is a remote
    # command under TCG); elsewhere it has a directory of its own, removed at shutdown.
    sock_prefix: str = ""
    owns_sock_dir: bool = True
    # The transcript caskit writes of what it read on the console. An emulated host's QEMU logs
    # its console itself (console.log, which outlives any one controller): its boot's transcript
    # has another name.
    transcript_name: str = "console.log"

    def sock(self, name: str) -> Path:
        return self.sock_dir / f"{self.sock_prefix}{name}"

    @property
    def qmp_sock(self) -> Path:
        return self.sock("qmp.sock")

    @property
    def console_sock(self) -> Path:
        return self.sock("console.sock")

    @property
    def heartbeat_sock(self) -> Path:
        return self.sock("heartbeat.sock")

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
        return self.log_dir / self.transcript_name

    @property
    def qmp_log(self) -> Path:
        return self.log_dir / "qmp.jsonl"

    @property
    def forensics(self) -> Path:
        return self.log_dir / "forensics.txt"


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
    ready_seen: bool = False  # the guest's ready marker arrived (its kernel and init ran)
    final_heartbeat: Stream | None = None  # what the heartbeat console carried, kept after shutdown
    forensics_saved: bool = False
    # What the host's side of a hang proved beyond this machine ({kind, line}: the L0's view of
    # an emulated host's vCPUs); a known issue about the host checks these, nothing else.
    host_findings: list = field(default_factory=list)
    stopped_by_us: bool = False  # shutdown() ran: an exit after it says nothing about QEMU
    host_console_from: int | None = None  # where the host's own console log stood at launch

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

    def console_text(self) -> str:
        try:
            return self.files.transcript.read_text(errors="replace")
        except OSError:
            return ""

    def launch(self) -> None:
        """Start QEMU paused and attach to it. Whatever goes wrong after the spawn, QEMU is
        stopped before the error leaves (nothing is left running with its slot released)."""
        if self.proc is not None:
            raise RuntimeError("a GuestMachine is launched once")
        self.files.log_dir.mkdir(parents=True, exist_ok=True)
        (self.files.log_dir / "qemu-argv.txt").write_text("\n".join(self.argv) + "\n")
        self.started_at = time.monotonic()
        console = getattr(self.host, "console_log", None)
        if console is not None:
            try:
                self.host_console_from = Path(console).stat().st_size
            except OSError:
                self.host_console_from = 0
        early = getattr(self.host, "console_early", None)
        pending = None
        try:
            if early is not None:
                pending = early(self.files.console_sock, self.launch_timeout)
            self.proc = self.host.spawn(self.argv, self.files.stdout, self.files.stderr)
            self._attach(pending)
        except BaseException as e:
            if pending is not None:
                pending.cancel()
            exited = self.proc is not None and self.proc.poll() is not None
            self.shutdown()
            if exited and isinstance(e, (Unresolved, OSError)):
                raise self._exit_cause("qemu-start") from e
            raise

    def _attach(self, pending=None) -> None:
        assert self.proc is not None
        # QEMU creates its listening sockets before machine init; a refused configuration
        # exits right after. Wait for the sockets, or the exit, whichever comes first.
        socks = [self.files.qmp_sock, self.files.console_sock] + ([self.files.heartbeat_sock] if self.with_heartbeat else [])
        if not self.host.wait_paths(socks, self.proc, self.launch_timeout):
            if self.proc.poll() is not None:
                raise LaunchFailure("QEMU exited at start", self.proc.poll(), self.stderr_text(), self.argv)
            raise LaunchFailure(f"QEMU created no sockets within {self.launch_timeout:.0f}s", None,
                                self.stderr_text(), self.argv)
        try:
            # All at once (each costs a remote command on an SSH host); with -S the guest has not
            # run, so nothing it prints is missed before its console is read.
            qmp_conn, console_conn, *hb_conn = self._connect_all(socks, {self.files.console_sock}, pending)
            self.console = Console(console_conn, self.files.transcript)
            if hb_conn:
                self.heartbeat = HeartbeatReader(hb_conn[0], self.files.heartbeat_log)
            self.qmp = QmpClient(qmp_conn, self.files.qmp_log)
            # Machine init finishes before QMP answers; a late refusal shows up as an exit here.
            self.qmp.execute("query-status")
        except (OSError, QmpLost) as e:
            self.proc.wait(2.0)
            raise LaunchFailure(f"cannot attach to QEMU: {e}", self.proc.poll(), self.stderr_text(), self.argv) from e

    def _connect_all(self, paths: list[Path], batched: set[Path], pending=None) -> list:
        # The console is batched on its way (its bytes' arrival times decide nothing); QMP and the
        # heartbeat, whose arrival times are measured, are not. A console bridge started with QEMU
        # (`pending`) is only waited for.
        with ThreadPoolExecutor(len(paths)) as pool:
            futures = [pool.submit(pending.connect, self.launch_timeout) if pending is not None and p in batched
                       else pool.submit(self.host.connect_unix, p, 5, p in batched) for p in paths]
            if pending is not None:
                # A QEMU refused after it made its sockets leaves them unanswered, and the bridge
                # would wait for a listener until launch_timeout: its exit ends the wait.
                while wait(futures, timeout=0.05).not_done:  # either of two events, so in short waits
                    if self.proc is not None and self.proc.poll() is not None:
                        pending.cancel_unless_connected()
                        break
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

    def detach(self) -> None:
        """Let go of a QEMU meant to outlive this process (an emulated host): its console and
        monitor connections closed, QEMU left running, to be stopped later by its PID."""
        if self.console is not None:
            self.console.close()
            self.console = None
        if self.qmp is not None:
            self.qmp.close()
            self.qmp = None

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def wait_ready(self, timeout: float) -> dict:
        assert self.console is not None
        info = self.console.wait_ready(timeout)
        self.ready_seen = True
        return info

    # -- why something went wrong ----------------------------------------------------------

    def _exit_cause(self, stage: str) -> CaskitError:
        assert self.proc is not None
        code = self.proc.poll()
        e = qemu_exit.cause(code, self.stderr_text(), dropped=bool(getattr(self.proc, "dropped", False)),
                            host=self.host.name if self.host.name != "local" else "")
        e.stage = e.stage or stage
        return e

    def resolve(self, exc: CaskitError, stage: str = "guest") -> CaskitError:
        """Why `exc` happened, as one of the error tree's concrete kinds. Saves the forensics of a
        hang while QEMU still runs. Anything already concrete is returned as it is."""
        if not isinstance(exc, Unresolved) or self.proc is None or self.stopped_by_us:
            return exc
        # A QEMU that went away exits within moments; give it that long before calling it alive.
        if self.proc.wait(3.0 if isinstance(exc, (QemuDied, QmpLost)) else 0.0) is not None:
            out = self._exit_cause(stage)
        elif getattr(self.proc, "dropped", False):
            out = HostError(f"lost the connection to host {self.host.name}")
        elif isinstance(exc, QmpLost):
            self.save_forensics(f"QEMU alive, QMP lost: {exc}", ask_qmp=False)
            out = QemuHung(f"QEMU runs but its monitor stopped answering: {exc}")
        elif isinstance(exc, QemuDied):
            out = HostError(f"the console of a running QEMU closed: {exc}")
        elif isinstance(exc, GuestTimeout):
            out = self._timeout_cause(exc)
        else:
            out = exc
        out.stage = out.stage or exc.stage or stage
        if out is not exc:
            out.__cause__ = exc
        return out

    def _timeout_cause(self, exc: GuestTimeout) -> CaskitError:
        """A timeout with QEMU alive: the guest hung if its kernel ran (FAIL); ours if nothing
        ever came from it, or if the kernel started some other program than the kit's /init."""
        if self.qmp is not None:
            try:
                self.qmp.execute("query-status")
            except (QmpLost, CaskitError) as e:
                self.save_forensics(f"QEMU alive, QMP does not answer: {e}", ask_qmp=False)
                found = guestlog.findings(self.host_console())
                host = (f"; host {self.host.name}'s own kernel logged {found[0]['kind']}: {found[0]['line']!r}"
                        if found else "")
                return QemuHung(f"{exc.what}: the guest gave no answer in {exc.timeout:.0f}s and QEMU's "
                                f"monitor does not answer either: {e}{host}")
        stage, init = guestlog.boot_stage(self.console_text())
        if self.ready_seen or stage in ("kernel", "init", "firmware"):
            if not self.ready_seen and stage == "init" and init != "/init":
                return KitError(f"the guest kernel ran {init} as its first process, not the kit's /init "
                                f"(is rdinit= or init= in the cell's `append`?)")
            where = ("after it was ready" if self.ready_seen else
                     {"init": "after starting /init", "kernel": "after its kernel started",
                      "firmware": "in firmware, before its kernel printed"}[stage])
            path = self.save_forensics(f"hang: no answer to {exc.what} in {exc.timeout:.0f}s")
            return GuestHang(f"the guest hung {where}: no {exc.what} within {exc.timeout:.0f}s "
                             f"(QEMU alive; forensics in {path.name})"
                             + "".join(f"; host {self.host.name}: {f['line']}" for f in self.host_findings),
                             exc.tail, str(path), list(self.host_findings))
        return NoGuestOutput(f"nothing came from the guest within {exc.timeout:.0f}s (QEMU alive): "
                             f"the firmware never printed")

    def save_forensics(self, why: str, *, ask_qmp: bool = True) -> Path:
        """The host's view of a stuck guest, saved before QEMU is stopped: the last console
        lines, `info pic`, and every vCPU's registers (the decrementer and timebase show whether
        the guest's clock still runs)."""
        parts = [f"# {why}", f"# {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}", "",
                 "## last console lines", *self.console_text().replace("\r", "").splitlines()[-60:]]
        if ask_qmp and self.qmp is not None:
            # `info irq` is asked even though pseries answers "IRQ statistics not available for
            # pseries-7.2-machine." (measured): the answer records that, and another machine or
            # a later QEMU may count.
            for cmd in ("info status", "info pic", "info irq", "info registers -a"):
                try:
                    text = self.qmp.hmp(cmd)
                except CaskitError as e:
                    text = f"(not available: {e})"
                parts += ["", f"## {cmd}", text.replace("\r", "").rstrip()]
        parts += ["", "## sysrq l, w (guest backtraces)", self._sysrq_backtraces()]
        parts += ["", f"## QEMU on host {self.host.name} (pid {self.proc.pid if self.proc else '?'}): "
                      "its threads in the host's kernel", self._host_side()]
        if getattr(self.host, "monitor", None) is not None:
            text, self.host_findings = self._l0_side()
            parts += ["", f"## the emulating QEMU's (L0's) view of host {self.host.name}'s vCPUs", text]
        self.files.forensics.write_text("\n".join(parts) + "\n")
        self.forensics_saved = True
        return self.files.forensics

    def _sysrq_backtraces(self, timeout: float = SYSRQ_TIMEOUT) -> str:
        """Every CPU's backtrace (SysRq l) and the blocked tasks (SysRq w), where the guest's shell
        still answers: written to /proc/sysrq-trigger, read back from its kernel log.

        Why not the other ways in: a pseries guest started with -nodefaults has no keyboard, so
        QMP's send-key of alt-sysrq-l reaches no one (QEMU answers {} and nothing happens), and
        the hvc console's own SysRq (^O then a key) obeys kernel.sysrq, which is 438 (0x1b6) on
        the kit's Debian kernel: l and w are refused ("This sysrq operation is disabled.", all
        measured). /proc/sysrq-trigger is not subject to that mask."""
        if self.console is None or not self.ready_seen:
            return ("(not taken: the guest's shell never came up, so nothing can write /proc/sysrq-trigger; "
                    "its console SysRq is limited by kernel.sysrq)")
        try:
            r = self.console.run("echo l > /proc/sysrq-trigger; echo w > /proc/sysrq-trigger; dmesg | tail -n 400",
                                 timeout)
        except CaskitError as e:
            return f"(not taken: the guest's shell did not answer within {timeout:.0f}s: {type(e).__name__})"
        return r.output.replace("\r", "").rstrip()

    def _host_side(self, timeout: float = HOST_STATE_TIMEOUT) -> str:
        """Where QEMU's threads wait in the host's kernel, and on a remote host (where the kernel
        runs KVM for this guest) the end of that kernel's log: a QEMU whose monitor stopped
        answering is a main thread blocked in a KVM ioctl or a vCPU thread that never came back,
        and only the host says which."""
        if self.proc is None:
            return "(QEMU never started)"
        log_lines = 0 if self.host.name == "local" else HOST_LOG_LINES
        try:
            code, out, err = self.host.run(["sh", "-c", PROCESS_STATE, "sh", str(self.proc.pid), str(log_lines)],
                                           timeout=timeout)
            text = (out + (f"\n(exit {code}: {err.strip()})" if code else "")).rstrip()
        except CaskitError as e:
            text = f"(not taken: host {self.host.name} did not answer within {timeout:.0f}s: {e})"
        console = getattr(self.host, "console_log", None)
        if console is not None:
            # An emulated host's kernel console, read on the controller: it speaks when SSH no
            # longer does (a wedged L1 logs its own lockups and stalls there).
            lines = self.host_console()
            tail = lines[-HOST_LOG_LINES:] or ["(nothing since this guest started)"]
            text += (f"\n\n## host {self.host.name}'s own console ({console}, since this guest started)\n"
                     + "\n".join(tail))
            found, noise = guestlog.findings(lines), guestlog.host_noise(lines)
            text += "\n\n## the host console's health\n" + "\n".join(
                [f"finding {f['kind']}: {f['line']}" for f in found]
                + [f"known noise {n['kind']} x{n['count']}: {n['why']}" for n in noise]
                or ["nothing of note"])
        return text

    def _l0_side(self) -> tuple[str, list[dict]]:
        """An emulated host's vCPUs as its own QEMU (the L0, on this controller) sees them, sampled
        while the guest inside hangs, and what the samples prove (host_cpus.findings)."""
        monitor = self.host.monitor
        samples: list[list[host_cpus.VcpuState]] = []
        try:
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.settimeout(HOST_STATE_TIMEOUT)
            s.connect(str(monitor))
            # A second client of the L0's monitor waits until the first one leaves: the timeout
            # bounds that wait too.
            c = QmpClient(s, self.files.log_dir / "l0-qmp.jsonl", timeout=HOST_STATE_TIMEOUT)
            try:
                # Past L0_SAMPLES, only while a guest's interrupt request (MER) shows without
                # the proof yet: its guest may have had interrupts off in every sample so far
                # (measured once in 30 nested-papr hangs: MER in 17 of 30 samples, EE in none).
                while len(samples) < L0_SAMPLES or (len(samples) < L0_MAX_SAMPLES and host_cpus.mer_seen(samples)
                                                    and not host_cpus.findings(samples)):
                    if samples:
                        time.sleep(L0_SAMPLE_GAP)  # sampling over time: nothing to wait on
                    samples.append(host_cpus.parse(c.hmp("info registers -a")))
            finally:
                c.close()
        except (OSError, CaskitError) as e:
            if not samples:
                return f"(not taken: the L0's monitor {monitor} did not answer: {e})", []
        symbols = _kernel_symbols(str(getattr(self.host, "host_kernel", None) or ""))
        found = host_cpus.findings(samples, symbols)
        lines = ([] if symbols else ["(no symbols: the host's kernel is not known here or has no symbol table)"])
        lines += [f"sample {i + 1}: " + "; ".join(v.line(symbols) for v in sample) for i, sample in enumerate(samples)]
        lines += [f"finding {f['kind']}: {f['line']}" for f in found] or ["nothing of note"]
        return "\n".join(lines), found

    def host_console(self) -> list[str]:
        """What the host's own console (an emulated host's, logged on the controller) showed since
        this machine was launched: the host kernel's lockups and stalls while it ran."""
        console = getattr(self.host, "console_log", None)
        if console is None:
            return []
        try:
            with open(console, "rb") as f:
                f.seek(self.host_console_from or 0)
                data = f.read()
        except OSError as e:
            return [f"(cannot read {console}: {e.strerror or e})"]
        return data.decode(errors="replace").replace("\r", "").splitlines()

    # -- stopping ------------------------------------------------------------------------------

    def shutdown(self) -> int | None:
        """Stop QEMU for sure, remove its socket directory, and return its exit code. Safe to
        call twice, and on a machine whose launch failed half way."""
        try:
            if self.proc is None:
                return None
            self.stopped_by_us = self.stopped_by_us or self.proc.poll() is None
            if self.console is not None:
                self.console.close()
                self.console = None
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
            return self.exit_code
        finally:
            if self.heartbeat is not None:
                # Closed after QEMU ended, so every beat it sent has been read.
                self.heartbeat.close()
                self.final_heartbeat = self.heartbeat.snapshot()
                self.heartbeat = None
            if self.files.owns_sock_dir:
                self.host.remove_tree(self.files.sock_dir)

    def last_beat(self):
        """The newest heartbeat this machine's guest printed, while it runs or after shutdown."""
        s = self.heartbeat.snapshot() if self.heartbeat is not None else self.final_heartbeat
        return s.beats[-1] if s and s.beats else None
