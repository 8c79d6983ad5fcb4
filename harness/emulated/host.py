"""Emulated POWER9 KVM hosts: an L1 machine caskit boots under TCG on this machine, then reaches
over SSH like any remote host.

Two kinds, for the two KVM HV (hypervisor-mode KVM) setups a POWER9 host can be in
(see cas-rules sections 5 and 8):

- `nested-hv`: a pseries guest whose L0 QEMU (the host's 7.2) offers nested HV
  (`cap-nested-hv=on`); KVM inside it has no in-kernel XIVE (eXternal Interrupt Virtualization
  Engine), so its L2 guests get XIVE emulated in QEMU, or XICS (the older eXternal Interrupt
  Controller Specification) in the kernel.
- `powernv9`: a PowerNV machine (bare metal as QEMU emulates it, with skiboot, the OPAL firmware)
  under QEMU 10 from Debian's backports (7.2 as L0 hard-locked most boots); KVM inside it offers
  in-kernel XIVE.
- `nested-papr` (and `nested-papr-p9`): a POWER10 pseries guest whose L0 offers the PAPR nested
  API v2, as PowerVM does; its L0 is a QEMU caskit builds with its own patch (qemu_build.py: TCG
  never delivered LPCR[MER], so L2s there got no external interrupts).

The L1 boots the image of harness/emulated/image.py with a small per-host archive (host key,
controller key, name) before it. QEMU's user network forwards a loopback port to its sshd.
Its PID and state live in a state file under the caskit cache, so another process can find it
and stop it by PID (`down`): a clean power-off first (QMP system_powerdown reaches /sbin/poweroff
inside through EPOW on pseries or an IPMI event on PowerNV), SIGKILL when that takes too long.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import select
import signal
import socket
import subprocess
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pexpect

from . import image as l1image
from . import qemu_build
from ..specs import HostSpec, QemuBuildSpec, SshSpec
from ..errors import HostError
from ..templating import render_lines
from ..hosts import LocalHost, LocalProcess
from ..hosts.ssh import SshHost
from ..machine import GuestMachine, MachineFiles
from ..qmp import QmpClient
from ..qemu_builds import suite_build
from ..axes import AXIS_NAMES
from ..cell import Cell, HostFacts, QemuBuild
from ..errors import CaskitError, LaunchFailure
from ..observe import guest_view, host_view
from ..qemu_cmd import qemu_argv

READY_RE = re.compile(rb"CASKIT-L1-READY name=(?P<name>\S*) kind=(?P<kind>\S*) image=(?P<image>\S+) kvm=(?P<kvm>\d) "
                      rb"kvm_hv=(?P<kvm_hv>\d) kvm_pr=(?P<kvm_pr>\d) uptime=(?P<uptime>[\d.]+)")
# A kernel message on the L1's console: it can land inside the ready line, which /init writes
# while the kernel still prints (measured: "uptime=[   14.620341] IPv6: ADDRCONF(NETDEV_CHANGE):
# eth0: link becomes ready" then "12.14" on the next line, and the boot was taken for a timeout).
# The L1 keeps its kernel messages on the console (its lockups are evidence), so the marker is
# read with them taken out.
PRINTK_LINE = re.compile(rb"\[\s*\d+\.\d+\] [^\r\n]*\r?\n")
READY_LINE = re.compile(READY_RE.pattern + rb"\r?\n")
MARKER_WINDOW = 8192  # the ready line and whatever the kernel printed into it
NEWLINE = re.compile(rb"\n")
FAIL_RE = re.compile(rb"(CASKIT-L1-FAIL[^\r\n]*|Kernel panic - not syncing:[^\r\n]*)")
WARN_RE = re.compile(rb"CASKIT-L1-WARN[^\r\n]*")
TAG_PREFIX = "caskit-l1:"  # not "caskit:": a run's cleanup must never stop a host it did not start
SSH_USER = "root"
MAX_SOCK_PATH = 107  # sun_path


@dataclass(frozen=True)
class L1Kind:
    """How one kind of emulated host is made."""

    name: str
    template: str
    qemu_suite: str | None  # L0 QEMU fetched from this Debian suite; None: the host's qemu-system-ppc64
    memory_mib: int
    smp: int
    machine_options: tuple[str, ...] = ()
    cmdline: str = "console=hvc0"
    # -machine options a pseries L2 needs under this host's KVM (its cap-* defaults ask for
    # mitigations an emulated CPU does not report, and KVM refuses a level it cannot provide).
    l2_machine_options: tuple[str, ...] = ()
    kernel_suite: str | None = None  # the Debian suite of the L1's kernel; None: the guest kit's
    # A kernel caskit builds from Debian's source (l1/kernels/<name>.config), where no Debian
    # kernel has what the mode needs; None: a Debian package's.
    kernel_build: str | None = None
    # Kernel command line for every L2: TCG starves an L2's vCPUs for tens of seconds on a loaded
    # machine (measured on nested-papr: "soft lockup - CPU#1 stuck for 23s", and it went on), so
    # the soft-lockup watchdog (2 x watchdog_thresh) waits 2 minutes rather than 20 s.
    l2_append: str = "watchdog_thresh=60"
    kvm_mode: str = "hv-nested"  # what its probe must find; a host whose facts disagree is ERROR
    # The L0 is caskit's own build of this recipe (qemu_build.RECIPES) rather than the suite's
    # binary; the suite's package still gives the firmware (-L). None: the binary as shipped.
    l0_build: str | None = None

    @property
    def image_recipe(self) -> dict:
        """What tells its image apart: the arguments of image.build() and image.current_key()."""
        return {"kernel_suite": self.kernel_suite, "kernel_build": self.kernel_build}


SPECTRE_CAPS = ("cap-cfpc=broken", "cap-sbbc=broken", "cap-ibs=broken", "cap-ccf-assist=off")

KINDS = {
    "nested-hv": L1Kind("nested-hv", "l1-nested-hv.argv.j2", None, memory_mib=3072, smp=2, kvm_mode="hv-nested"),
    "powernv9": L1Kind("powernv9", "l1-powernv9.argv.j2", "bookworm-backports", memory_mib=3072, smp=2,
                       l2_machine_options=SPECTRE_CAPS, kvm_mode="hv"),
    # The L0 delivers LPCR[MER] (caskit's patch, qemu_build.py): a 6.12 L1 on the nested API v2
    # hands every external interrupt of its L2s to the L0 that way, and stock QEMU drops them.
    "nested-papr": L1Kind("nested-papr", "l1-nested-papr.argv.j2", "bookworm-backports", memory_mib=3072, smp=2,
                          kernel_suite="bookworm-backports", kvm_mode="hv-nested-papr", l0_build="mer"),
    # The same LPAR in POWER9 compatibility mode (a POWER10 partition an administrator pinned to
    # POWER9 for migration): the situation of linuxppc issue 498, where the L1 asks the L0 for
    # L2 elements above its compatibility level.
    "nested-papr-p9": L1Kind("nested-papr-p9", "l1-nested-papr.argv.j2", "bookworm-backports", memory_mib=3072,
                             smp=2, machine_options=("max-cpu-compat=power9",), kernel_suite="bookworm-backports",
                             kvm_mode="hv-nested-papr", l0_build="mer"),
    # PR KVM: kvm_pr built into a kernel of caskit's own (no Debian kernel has it) in a POWER9
    # pseries L1 whose MMU is the hashed page table: PR refuses to create a VM under radix
    # (measured: EINVAL, no message, /dev/kvm still there; docs/pr-kvm.md). The L0 offers no
    # nested HV: the L1 runs its guests in problem state.
    "pr": L1Kind("pr", "l1-pr.argv.j2", None, memory_mib=3072, smp=2, cmdline="console=hvc0 disable_radix",
                 kernel_build="pr", kvm_mode="pr"),
}


def hosts_dir() -> Path:
    return l1image.cache_dir() / "hosts"


@dataclass
class L1State:
    """What the state file says about one emulated host."""

    name: str
    kind: str
    status: str  # booting | up | failed | stopped
    pid: int
    port: int
    tag: str
    image: str
    dir: str
    started_at: float  # epoch seconds at spawn
    argv: list[str] = field(default_factory=list)
    ready_s: float | None = None  # spawn to the ready marker on the console
    guest_uptime_s: float | None = None  # the L1 kernel's own uptime at its ready marker
    ssh_s: float | None = None  # spawn to the first command answered over SSH
    warnings: list[str] = field(default_factory=list)
    stopped: str | None = None  # how it was stopped
    l0_qemu: str | None = None  # what runs as its L0: the QEMU build, and for caskit's own, why
    l0_patches: list[str] = field(default_factory=list)  # caskit's patches in that L0 (their ids)
    l0_key: str | None = None  # the cache key of caskit's L0 build (qemu_build), None: a shipped binary

    @staticmethod
    def path(name: str) -> Path:
        return hosts_dir() / name / "state.json"

    def save(self) -> None:
        p = self.path(self.name)
        tmp = p.with_name(".state.json.part")
        tmp.write_text(json.dumps(asdict(self), indent=2) + "\n")
        os.replace(tmp, p)

    @classmethod
    def load(cls, name: str) -> "L1State | None":
        try:
            return cls(**json.loads(cls.path(name).read_text()))
        except (OSError, ValueError, TypeError):
            return None


def render_argv(kind: L1Kind, *, binary: str, firmware_dir: str | None, tag: str, port: int, kernel: Path,
                initrd: Path, console_sock: Path, console_log: Path, qmp_sock: Path) -> list[str]:
    """The L1's QEMU argv (pure). QEMU splits option values at commas, so no path may hold one."""
    for p in (kernel, initrd, console_sock, console_log, qmp_sock):
        if "," in str(p):
            raise HostError(f"emulated host: QEMU cannot take the path {p} (it contains a comma)")
    return render_lines(kind.template, binary=binary, firmware_dir=firmware_dir, tag=tag,
                        machine_options=list(kind.machine_options), smp=kind.smp, memory_mib=kind.memory_mib,
                        console_sock=console_sock, console_log=console_log, qmp_sock=qmp_sock, port=port,
                        kernel=kernel, initrd=initrd, cmdline=kind.cmdline)


def free_port() -> int:
    """A loopback port nobody listens on now (QEMU binds it a moment later; a lost race shows as
    QEMU's hostfwd error, and up() tries another)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _keygen(path: Path, comment: str) -> None:
    if path.is_file() and path.with_suffix(".pub").is_file():
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    for p in (path, path.with_suffix(".pub")):
        p.unlink(missing_ok=True)
    r = subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)],
                       capture_output=True, text=True, stdin=subprocess.DEVNULL)
    if r.returncode != 0:
        raise HostError(f"ssh-keygen for {path} failed: {r.stderr.strip()}")


def _cmdline_of(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return []


def running(state: L1State) -> bool:
    """The state's PID is alive and still the QEMU that carries its tag (PIDs get reused)."""
    argv = _cmdline_of(state.pid)
    if not any(argv[i] == "-name" and argv[i + 1] == state.tag for i in range(len(argv) - 1)):
        return False
    with contextlib.suppress(OSError, IndexError):
        return Path(f"/proc/{state.pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    return False


def _wait_exit(pid: int, timeout: float) -> bool:
    """True once `pid` has exited: a pidfd becomes readable then, whoever its parent is."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    try:
        return bool(select.select([fd], [], [], max(timeout, 0))[0])
    finally:
        os.close(fd)


class EmulatedHost:
    """One emulated host by name: its files under the cache, its QEMU, its SSH view."""

    def __init__(self, name: str, kind: str, *, slots: int = 1):
        if kind not in KINDS:
            raise HostError(f"emulated host {name}: kind {kind!r} is not one of {', '.join(KINDS)}")
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,39}", name):
            raise HostError(f"emulated host name {name!r}: letters, digits, '.', '_' and '-' only")
        self.name, self.kind, self.slots = name, KINDS[kind], slots
        self.dir = hosts_dir() / name
        self.proc: LocalProcess | None = None
        self._ssh = None

    # -- files --------------------------------------------------------------------------------

    @property
    def key_file(self) -> Path:
        return self.dir / "keys" / "id_ed25519"

    @property
    def host_key(self) -> Path:
        return self.dir / "keys" / "ssh_host_ed25519_key"

    @property
    def known_hosts(self) -> Path:
        return self.dir / "known_hosts"

    def _sock(self, name: str) -> Path:
        p = self.dir / name
        if len(str(p)) > MAX_SOCK_PATH:
            raise HostError(f"emulated host {self.name}: socket path {p} is longer than {MAX_SOCK_PATH} bytes; "
                            f"set CASKIT_CACHE to a shorter directory")
        return p

    def identity(self) -> l1image.HostIdentity:
        _keygen(self.host_key, f"caskit-l1 host {self.name}")
        _keygen(self.key_file, f"caskit controller for {self.name}")
        return l1image.HostIdentity(self.name, self.kind.name, self.host_key.read_bytes(),
                                    self.host_key.with_suffix(".pub").read_bytes(),
                                    self.key_file.with_suffix(".pub").read_bytes())

    def _write_known_hosts(self, port: int) -> None:
        """Only this host's key, at the forwarded port: SshHost trusts this file and nothing else."""
        kind, key = self.host_key.with_suffix(".pub").read_text().split()[:2]
        self.known_hosts.write_text(f"[127.0.0.1]:{port} {kind} {key}\n")

    # -- the SSH view -------------------------------------------------------------------------

    def spec(self, port: int) -> HostSpec:
        """The host as an inventory entry of kind ssh, pointing at the forwarded port."""
        return HostSpec(self.name, "ssh", self.slots, (QemuBuildSpec("system", "qemu-system-ppc64"),), "127.0.0.1",
                        SshSpec("127.0.0.1", port, SSH_USER, str(self.key_file), str(self.known_hosts)),
                        console_log=str(self.dir / "console.log"), monitor=str(self.dir / "qmp.sock"),
                        host_kernel=self._kernel(),
                        # A python3 started in the L1 runs under TCG: it would cost each cell more
                        # than its batching saves the controller.
                        console_batch=False)

    def _kernel(self) -> str | None:
        """The kernel this host booted (its `-kernel`), to name where its vCPUs are in a hang."""
        st = L1State.load(self.name)
        argv = st.argv if st is not None else []
        return next((argv[i + 1] for i, a in enumerate(argv[:-1]) if a == "-kernel"), None)

    def up_spec(self) -> HostSpec:
        """The SSH view of this host while it is up; the host's error when it is not."""
        st = L1State.load(self.name)
        if st is None or st.status != "up" or not running(st):
            raise HostError(f"emulated host {self.name} is down: `caskit hosts up {self.name}`, or a run that "
                            f"names it boots it for the run")
        self._write_known_hosts(st.port)
        return self.spec(st.port)

    def ssh(self):

        st = L1State.load(self.name)
        if st is None or st.status != "up":
            raise HostError(f"emulated host {self.name} is not up")
        if self._ssh is None or self._ssh.ssh.port != st.port:
            self._ssh = SshHost(self.spec(st.port))
        return self._ssh

    # -- up -----------------------------------------------------------------------------------

    def up(self, image: l1image.Image | None = None, *, port: int | None = None, timeout: float = 300.0,
           log=print) -> L1State:
        """Boot the host and wait until its sshd answers. Refuses a host that is already running
        or being started by another process."""
        self.dir.mkdir(parents=True, exist_ok=True)
        with open(self.dir / ".up.lock", "w") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise HostError(f"emulated host {self.name} is being started by another process") from None
            old = L1State.load(self.name)
            if old is not None and old.status in ("booting", "up") and running(old):
                raise HostError(f"emulated host {self.name} is already running (pid {old.pid}, port {old.port})")
            return self._up_locked(image or l1image.build(log=log, **self.kind.image_recipe), port,
                                   timeout, log)

    def _up_locked(self, image: l1image.Image, port: int | None, timeout: float, log) -> L1State:
        initrd = l1image.host_initrd(image, self.identity(), self.dir / "initrd")
        binary, fw, l0 = "qemu-system-ppc64", None, ("this machine's qemu-system-ppc64", [], None)
        if self.kind.qemu_suite:
            b, f, version = suite_build(self.kind.qemu_suite, log=log)
            binary, fw, l0 = str(b), str(f), (f"Debian's qemu-system-ppc {version} ({self.kind.qemu_suite})", [], None)
        if self.kind.l0_build:
            built = qemu_build.build(self.kind.l0_build, log=log)
            binary, l0 = str(built.binary), (built.describe(), list(built.patch_ids), built.key)
        tries = 1 if port else 3
        for attempt in range(tries):
            p = port or free_port()
            try:
                return self._boot(image, initrd, binary, fw, p, timeout, log, l0)
            except _PortTaken:
                if attempt == tries - 1:
                    raise HostError(f"emulated host {self.name}: port {p} is taken") from None
        raise AssertionError("unreachable")

    def _boot(self, image: l1image.Image, initrd: Path, binary: str, fw: str | None, port: int, timeout: float,
              log, l0: tuple[str, list[str], str | None] = ("?", [], None)) -> L1State:
        # The machine layer's own launch (spawn paused, await the sockets, attach, cont); then the
        # L1's own ready marker, and the machine is let go of with QEMU running.
        self._sock("console.sock"), self._sock("qmp.sock")  # within sun_path, or a clear error
        files = MachineFiles(self.dir, self.dir, owns_sock_dir=False, transcript_name="console-boot.log")
        console_log = self.dir / "console.log"
        for f in (files.console_sock, files.qmp_sock, console_log, files.stderr, files.transcript):
            f.unlink(missing_ok=True)
        tag = f"{TAG_PREFIX}{self.name}"
        argv = render_argv(self.kind, binary=binary, firmware_dir=fw, tag=tag, port=port, kernel=image.kernel,
                           initrd=initrd, console_sock=files.console_sock, console_log=console_log,
                           qmp_sock=files.qmp_sock)
        self._write_known_hosts(port)
        m = GuestMachine(LocalHost(self.name), argv, files, launch_timeout=30)
        t0 = time.monotonic()
        try:
            m.launch()
        except CaskitError as e:
            stderr = m.stderr_text()
            # QEMU sets its network up after its sockets: a port taken meanwhile ends it there.
            if "host forwarding" in stderr:
                raise _PortTaken() from None
            raise HostError(f"emulated host {self.name}: QEMU did not start: {e}: {stderr.strip()[-800:]}") from None
        self.proc = m.proc
        state = L1State(self.name, self.kind.name, "booting", m.proc.pid, port, tag, image.key, str(self.dir),
                        time.time(), argv, l0_qemu=l0[0], l0_patches=l0[1], l0_key=l0[2])
        state.save()  # from here on, `down` in any process can stop it
        try:
            try:
                m.cont()
                marker, warnings = self._await_ready(m, console_log, t0 + timeout)
            finally:
                m.detach()
            state.ready_s = round(time.monotonic() - t0, 2)
            state.guest_uptime_s = float(marker.group("uptime"))
            state.warnings = warnings
            if marker.group("image").decode() != image.key:
                raise HostError(f"emulated host {self.name} booted image {marker.group('image').decode()}, not {image.key}")
            if (missing := missing_kvm(marker, self.kind.kvm_mode)):
                raise HostError(f"emulated host {self.name} came up without {missing} (its ready line: "
                                f"{marker.group(0).decode(errors='replace')}): an emulated KVM host without KVM "
                                f"is the host's failure; its console is in {console_log}")
            state.status = "up"
            state.save()
            self._ssh = None
            self._await_ssh(t0 + timeout)
            state.ssh_s = round(time.monotonic() - t0, 2)
            state.save()
            log(f"l1 {self.name}: {self.kind.name} up (pid {state.pid}, ssh 127.0.0.1:{port}): ready "
                f"{state.ready_s}s, ssh {state.ssh_s}s"
                + (f"; L0 patched by caskit: {', '.join(state.l0_patches)}" if state.l0_patches else "")
                + (f"; {'; '.join(warnings)}" if warnings else ""))
            return state
        except BaseException:
            exited = m.proc.wait(2) is not None
            if not exited:
                m.proc.kill()
            state.status, state.stopped = "failed", "exited during boot" if exited else "killed after a failed boot"
            state.save()
            raise

    def _await_ready(self, m: GuestMachine, console_log: Path, deadline: float) -> tuple[re.Match, list[str]]:
        """The L1's ready marker on its console; a firmware or kernel that fails, or a QEMU that
        exits, ends the wait at once with the console's last lines."""
        assert m.console is not None and m.proc is not None
        seen = b""
        while True:
            try:
                # Line by line: the marker is judged on whole lines (ready_marker).
                i = m.console.expect([NEWLINE, FAIL_RE, pexpect.EOF, pexpect.TIMEOUT],
                                     max(deadline - time.monotonic(), 0.0), "the L1's ready marker")
            except CaskitError:  # the console's socket reset: QEMU went away
                i = 2
            seen += m.console.seen() + (m.console.match.group(0) if i in (0, 1) else b"")
            if i != 0:
                break
            if (marker := ready_marker(seen)) is not None:
                return marker, [w.decode(errors="replace") for w in WARN_RE.findall(seen)]
        if i == 1:
            raise HostError(f"emulated host {self.name}: {m.console.match.group(1).decode(errors='replace')}; "
                            f"console ends: {_tail(seen)}")
        if i == 2:
            raise HostError(f"emulated host {self.name}: QEMU closed the console (exit {m.proc.wait(5)}); console "
                            f"ends: {_tail(seen)}; stderr: {m.stderr_text().strip()[-500:]}")
        raise HostError(f"emulated host {self.name}: no ready marker within the boot timeout; console ends: "
                        f"{_tail(seen)} (whole console: {console_log})")

    def _await_ssh(self, deadline: float) -> None:
        """The first command over SSH. sshd listened before the marker; a refused connection can
        only be QEMU's forwarder catching up, so retry until the deadline."""
        delay = 0.05
        while True:
            try:
                self.ssh().run(["true"], timeout=60, check=True)
                return
            except HostError as e:
                if time.monotonic() > deadline or "cannot connect" not in str(e):
                    raise
            time.sleep(delay)  # a refused TCP connect has no event to wait on
            delay = min(delay * 2, 1.0)

    def _qmp(self, sock: Path, command: str, **args) -> dict:
        """One QMP command on a fresh connection (the L1 outlives any one controller process)."""
        s = LocalHost(self.name).connect_unix(sock, 10)
        c = QmpClient(s, self.dir / "qmp.jsonl", timeout=30)
        try:
            return c.execute(command, **args)
        finally:
            c.close()

    # -- down ---------------------------------------------------------------------------------

    def down(self, grace: float = 20.0, log=print) -> str:
        """Stop the host by PID: a clean power-off first, SIGKILL if it takes longer than `grace`."""
        if self._ssh is not None:
            self._ssh.close()
            self._ssh = None
        st = L1State.load(self.name)
        if st is None:
            return "unknown"
        if not running(st):
            if self.proc is not None:
                self.proc.poll()  # ours, stopped by another process: reap it
            if st.status in ("booting", "up"):
                st.status, st.stopped = "stopped", "found gone"
                st.save()
            return "not running"
        t0 = time.monotonic()
        how = None
        with contextlib.suppress(Exception):  # a QEMU whose monitor is gone is killed below
            self._qmp(Path(st.dir) / "qmp.sock", "system_powerdown")
            if _wait_exit(st.pid, grace):
                how = f"powered off in {time.monotonic() - t0:.1f}s"
        if how is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(st.pid, signal.SIGKILL)
            _wait_exit(st.pid, 10)
            how = f"killed (SIGKILL) after {time.monotonic() - t0:.1f}s"
        if self.proc is not None and self.proc.pid == st.pid:
            self.proc.popen.wait()  # ours: reap it
        st.status, st.stopped = "stopped", how
        st.save()
        log(f"l1 {self.name}: {how}")
        return how


class _PortTaken(Exception):
    pass


def ready_marker(console: bytes) -> re.Match | None:
    """The L1's whole ready line in the end of what its console showed, with the kernel's
    messages that the console interleaved into it taken out; None until the line is complete."""
    return READY_LINE.search(PRINTK_LINE.sub(b"", console[-MARKER_WINDOW:]))


def missing_kvm(marker: re.Match, kvm_mode: str = "hv") -> str | None:
    """What of KVM the L1's ready line says is missing for its kind's mode (pure): /dev/kvm, the
    kvm_hv module, or for PR a VM that kvm_pr creates."""
    mode = ("kvm_pr", "kvm_pr") if kvm_mode == "pr" else ("kvm_hv", "kvm_hv")
    missing = [what for what, g in (("/dev/kvm", "kvm"), mode) if marker.group(g) != b"1"]
    return " and ".join(missing) or None


def _tail(buf: bytes, n: int = 600) -> str:
    return buf[-n:].decode(errors="replace").replace("\r", "")


def list_states() -> list[L1State]:
    d = hosts_dir()
    out = [L1State.load(p.name) for p in sorted(d.iterdir()) if (p / "state.json").is_file()] if d.is_dir() else []
    return [s for s in out if s is not None]


def is_up(name: str) -> bool:
    st = L1State.load(name)
    return st is not None and st.status == "up" and running(st)


def save_facts(name: str, facts) -> None:
    """The facts of the host's last probe, for `caskit matrix` while it is down."""
    d = hosts_dir() / name
    d.mkdir(parents=True, exist_ok=True)
    (d / "facts.json").write_text(json.dumps(facts.to_dict(), indent=2) + "\n")


def last_facts(name: str):

    p = hosts_dir() / name / "facts.json"
    try:
        return HostFacts.from_dict(json.loads(p.read_text()))
    except (OSError, ValueError, TypeError):
        return None


def down(name: str, grace: float = 20.0, log=print) -> str:
    """Stop an emulated host by name, from any process (reads its state file)."""
    st = L1State.load(name)
    if st is None:
        return "unknown"
    return EmulatedHost(name, st.kind).down(grace, log)


# -- one L2 guest, to show what the host's KVM offers -------------------------------------------

@dataclass
class L2Outcome:
    """One pseries guest started with `-accel kvm` inside an emulated host, and what it got."""

    ic_mode: str
    kernel_irqchip: str
    started: bool = False
    error: str | None = None  # QEMU's own error line when it refused or stopped
    stage: str | None = None  # where it stopped: qemu-start | boot
    stderr: list[str] = field(default_factory=list)  # QEMU's warnings (the fallback to emulation)
    configured_ic_mode: str | None = None
    guest_mode: str | None = None  # from the guest's own view (chips, device tree, dmesg)
    host_mode: str | None = None  # from QEMU's `info pic`
    irqchip: str | None = None  # `info pic`'s last line: in-kernel | emulated
    platform_support: str | None = None  # byte 23 of ibm,arch-vec-5-platform-support
    launch_s: float | None = None  # spawn to QMP answering (over SSH: includes the socket bridges)
    boot_s: float | None = None  # `cont` to the guest's ready marker
    total_s: float | None = None


def run_l2(host, kind: L1Kind, kit, *, ic_mode: str = "default", kernel_irqchip: str = "default", smp: int = 1,
           log_dir: Path, boot_timeout: float = 180.0) -> L2Outcome:
    """Start one L2 on `host` (an SshHost of an emulated host) from the guest kit, observe its
    interrupt controller from both sides, stop it. A QEMU refusal is an outcome, not an error."""

    axes = {"accel": "kvm", "ic_mode": ic_mode, "kernel_irqchip": kernel_irqchip, "cpu": "POWER9",
            "cpu_compat": "default", "guest_xive": "default", "smp": smp, "firmware": "vof", "qemu": "system"}
    cell = Cell(host.name, tuple((n, axes[n]) for n in AXIS_NAMES),
                pinned=("pseries", *kind.l2_machine_options) if kind.l2_machine_options else ())
    out = L2Outcome(ic_mode, kernel_irqchip)
    t0 = time.monotonic()
    staged = host.stage_kit(kit)
    sock_dir = host.tempdir("ck-l2-")
    argv = qemu_argv(cell, QemuBuild("system", "qemu-system-ppc64"), staged.kernel, staged.initrd,
                     qmp_sock=sock_dir / "qmp.sock", console_sock=sock_dir / "console.sock",
                     run_tag=f"caskit-l2:{host.name}:{ic_mode}:{kernel_irqchip}")
    m = GuestMachine(host, argv, MachineFiles(log_dir, sock_dir), launch_timeout=120)
    try:
        t_launch = time.monotonic()
        try:
            m.launch()
        except CaskitError as e:  # QEMU refused the configuration at start (resolved by the machine)
            stderr = e.stderr if isinstance(e, LaunchFailure) else m.stderr_text()
            out.error, out.stage = _error_line(stderr) or f"{type(e).__name__}: {str(e)[:300]}", "qemu-start"
            return out
        out.launch_s = round(time.monotonic() - t_launch, 2)
        out.started = True
        assert m.qmp is not None and m.console is not None
        out.configured_ic_mode = str(m.qmp.execute("qom-get", path="/machine", property="ic-mode"))
        t_boot = time.monotonic()
        m.cont()
        try:
            m.wait_ready(boot_timeout)
        except CaskitError as e:
            assert m.proc is not None
            m.proc.wait(2)
            out.error = _error_line(m.stderr_text()) or f"{type(e).__name__}: {str(e)[:300]}"
            out.stage = "boot"  # the guest ran: CAS (when QEMU makes the KVM device) or later
            return out
        out.boot_s = round(time.monotonic() - t_boot, 2)
        r = m.console.run("ck-observe", 60)
        g = guest_view(r.output)
        h = host_view(m.qmp.hmp("info pic"), out.configured_ic_mode)
        out.guest_mode, out.host_mode, out.irqchip = g.mode, h.mode, h.irqchip
        out.platform_support = g.platform_support
        return out
    finally:
        m.shutdown()
        out.stderr = [l for l in m.stderr_text().splitlines() if l.strip()][-10:]
        out.total_s = round(time.monotonic() - t0, 2)


def _error_line(stderr: str) -> str | None:
    """QEMU's own error (`qemu-system-ppc64: ...`), the last one: what it stopped on."""
    lines = [l for l in stderr.splitlines() if l.startswith("qemu-system-ppc64:") and "warning:" not in l]
    return lines[-1] if lines else None
