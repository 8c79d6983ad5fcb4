"""Real SSH test hosts: OpenSSH's sshd in network namespaces this module creates.

Two namespaces joined by a veth pair, with addresses that exist only inside them; one sshd in
each, with its own config, host key and authorized key, all generated here and pinned in a
known_hosts file of its own. The controller reaches each sshd through a proxy command that runs
inside the host's namespace (the addresses are unreachable from the root namespace on purpose);
QEMUs started over SSH run inside their host's namespace and migrate to each other over the veth.
Where network namespaces cannot be created, both sshds listen on 127.0.0.1 ports instead, and
`netns` says so.

Either way each sshd runs in a mount namespace of its own whose /tmp and /var/tmp are private
directories of that host (the remote kit dir, scratch and socket dirs live there): a file the
controller makes locally where it should have asked the host, or the other way round, is not where
the other side looks, and a test fails, as it would with a real remote host. Everything else (the
QEMU builds in /usr/bin and ~/.cache/caskit, this checkout) is shared. Everything is torn down by
PID and by name; a mount namespace and its mounts go away with its last process.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from harness.hosts import ssh

# The proxy command runs the bridge by path: an inventory value must be one line of text.
BRIDGE_SCRIPT = Path(ssh.__file__).resolve().parent / "remote" / "bridge.py"
RELAY_SCRIPT = Path(__file__).resolve().parent / "loopback_relay.py"

SSHD = "/usr/sbin/sshd"

# Run as `sh -c PRIVATE_TMP sh TMP VAR_TMP [SRC DST]... -- ARGV` in a new mount namespace: make
# TMP and VAR_TMP the namespace's /tmp and /var/tmp, with each SRC (the sshd's own files, which
# may live under the controller's /tmp) bound back at DST inside them first, then exec ARGV.
# /var/tmp before /tmp: both sources may live under /tmp. rbind keeps the binds made inside.
PRIVATE_TMP = '''set -e
tmp=$1 var_tmp=$2
shift 2
while [ "$1" != -- ]; do mount --bind "$1" "$2"; shift 2; done
shift
mount --rbind "$var_tmp" /var/tmp
mount --rbind "$tmp" /tmp
exec "$@"
'''

@dataclass
class TestHost:
    name: str
    address: str
    port: int
    netns: str | None
    dir: Path
    known_hosts: Path
    tmp: Path  # the host's /tmp and /var/tmp, as the controller sees them
    var_tmp: Path
    sshd_pid: int | None = None
    mnt_ns: str | None = None  # its mount namespace ("mnt:[N]"), for finding what is left in it
    proc: subprocess.Popen | None = field(default=None, repr=False)
    relay_port: int | None = None  # 127.0.0.1 port of its loopback relay (start_relays)
    relay: subprocess.Popen | None = field(default=None, repr=False)
    relay_pid: int | None = None

    def proxy_command(self) -> list[str]:
        if not self.netns:
            return []
        return ["ip", "netns", "exec", self.netns, sys.executable, str(BRIDGE_SCRIPT), "tcp", self.address, str(self.port)]

    def in_ns(self, argv: list[str]) -> list[str]:
        """argv run as this host: in its network namespace (if any) and a private mount namespace
        whose /tmp and /var/tmp are the host's own; self.dir stays visible at its path."""
        binds = []
        for shared in self.shared():  # their mount points in the private dirs, where they are under them
            inside = self.controller_path(shared)
            if inside:
                binds += [str(shared), str(inside)]
        private = ["unshare", "--mount", "--propagation", "private", "sh", "-c", PRIVATE_TMP, "sh",
                   str(self.tmp), str(self.var_tmp), *binds, "--", *argv]
        return (["ip", "netns", "exec", self.netns] if self.netns else []) + private

    def shared(self) -> list[Path]:
        """What stays visible at its own path inside the host: the sshd's own files, and caskit's
        cache (the `backports` QEMU build runs from it), wherever CASKIT_CACHE puts it."""
        from harness.kit import cache_root

        cache = cache_root()
        cache.mkdir(parents=True, exist_ok=True)
        return [self.dir, cache.resolve()]

    def controller_path(self, path: Path) -> Path | None:
        """Where the controller sees a path of this host under /tmp or /var/tmp (None elsewhere:
        those paths are shared)."""
        path = Path(os.path.abspath(path))
        for root, mine in ((Path("/var/tmp"), self.var_tmp), (Path("/tmp"), self.tmp)):
            if path.is_relative_to(root):
                return mine / path.relative_to(root)
        return None

    def ns_pids(self) -> list[int]:
        """Every process in this host's mount namespace (it and its mounts live while one does)."""
        out = []
        for d in Path("/proc").iterdir():
            if d.name.isdigit():
                with contextlib.suppress(OSError):
                    if self.mnt_ns and os.readlink(d / "ns" / "mnt") == self.mnt_ns:
                        out.append(int(d.name))
        return out

    def sessions(self) -> list[int]:
        """PIDs of the per-connection sshd processes the listener forked."""
        out = []
        for d in Path("/proc").iterdir():
            if d.name.isdigit():
                with contextlib.suppress(OSError, IndexError, ValueError):
                    if int((d / "stat").read_text().rsplit(")", 1)[1].split()[1]) == self.sshd_pid:
                        out.append(int(d.name))
        return out

    def start_relay(self) -> None:
        """A route to this host from 127.0.0.1 that is not the controller's child (tests/
        loopback_relay.py): the listening socket is made here, in the root namespace, and the
        relay inherits it inside the host's namespace. Its host key is pinned for that address."""
        import socket

        if not self.netns or self.relay is not None:
            return
        with socket.socket() as ls:
            ls.bind(("127.0.0.1", 0))
            ls.listen(64)
            self.relay_port = ls.getsockname()[1]
            self.relay = subprocess.Popen(["ip", "netns", "exec", self.netns, sys.executable, "-I", str(RELAY_SCRIPT),
                                           str(ls.fileno()), self.address, str(self.port)],
                                          stdin=subprocess.PIPE, pass_fds=(ls.fileno(),), start_new_session=True)
            self.relay_pid = self.relay.pid  # ip netns exec execs: the relay's own PID
        key = " ".join((self.dir / "host_key.pub").read_text().split()[:2])
        with open(self.known_hosts, "a") as f:
            f.write(f"[127.0.0.1]:{self.relay_port} {key}\n")

    def stop_relay(self) -> None:
        if self.relay is None:
            return
        with contextlib.suppress(OSError):
            self.relay.stdin.close()  # its stdin closing ends it
        try:
            self.relay.wait(5)
        except subprocess.TimeoutExpired:
            self.relay.kill()
            self.relay.wait()
        self.relay = None

    def stop_sshd(self) -> None:
        """Kill this host's sshd by PID: its open sessions first, then the listener."""
        for pid in self.sessions() if self.sshd_pid else []:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@dataclass
class TestHosts:
    hosts: list[TestHost]
    key_file: Path
    dir: Path
    netns: bool
    links: list[str] = field(default_factory=list)
    stragglers: list[str] = field(default_factory=list)  # what close() had to kill besides the sshds

    def inventory(self, qemu: dict | None = None, slots: int = 2, domain: str = "pair", direct: bool = False) -> dict:
        """A host inventory (hosts.yaml content) naming both hosts and a domain of the two.
        `direct`: reach each host at 127.0.0.1 through its loopback relay (started here), not
        through a proxy command the controller runs: for measuring the controller alone."""
        hosts = {}
        for h in self.hosts:
            # kit_dir is left at its default, /var/tmp/caskit: each host's /var/tmp is its own.
            hosts[h.name] = {"kind": "ssh", "address": h.address, "port": h.port, "user": "root",
                             "key_file": str(self.key_file), "known_hosts": str(h.known_hosts), "slots": slots}
            if direct and h.netns:
                h.start_relay()
                hosts[h.name].update(address="127.0.0.1", port=h.relay_port)
            elif h.proxy_command():
                hosts[h.name]["proxy_command"] = h.proxy_command()
            if qemu:
                hosts[h.name]["qemu"] = qemu
        return {"hosts": hosts, "domains": {domain: {"hosts": [h.name for h in self.hosts]}}}

    def write_inventory(self, path: Path, **kw) -> Path:
        path.write_text(yaml.safe_dump(self.inventory(**kw), sort_keys=False))
        return path

    def close(self) -> None:
        """Stop every sshd by PID, then anything still running in a host's mount namespace (by PID,
        recorded in `stragglers`: sessions end by themselves once their sshd is gone, anything else
        was leaked), and delete the network namespaces."""
        for h in self.hosts:
            h.stop_relay()
            h.stop_sshd()
        for h in self.hosts:
            self.stragglers += _drain(h)
        for ns in [h.netns for h in self.hosts if h.netns]:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)

    def leftovers(self) -> list[str]:
        """What is still there after close(): sshds, processes holding a host's mount namespace
        (and so its mounts) alive, mounts of ours in the controller's namespace, namespaces."""
        left = [f"sshd {h.sshd_pid} of {h.name}" for h in self.hosts if h.sshd_pid and _alive(h.sshd_pid)]
        left += [f"relay {h.relay_pid} of {h.name}" for h in self.hosts if h.relay_pid and _alive(h.relay_pid)]
        left += [f"pid {p} in {h.name}'s mount namespace" for h in self.hosts for p in h.ns_pids()]
        with open("/proc/self/mountinfo") as f:
            left += [f"mount: {line.strip()}" for line in f if str(self.dir) in line]
        if self.netns:
            names = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
            left += [f"netns {h.netns}" for h in self.hosts if h.netns and h.netns in names]
        return left


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def _cmdline(pid: int) -> str:
    with contextlib.suppress(OSError):
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    return "?"


def _drain(h: TestHost, grace: float = 10.0) -> list[str]:
    """Wait for h's mount namespace to empty (an sshd session notices its monitor is gone, the
    shells under it their closed channels), then SIGKILL by PID whatever stays; those are returned."""
    deadline = time.monotonic() + grace
    while (pids := [p for p in h.ns_pids() if _alive(p)]) and time.monotonic() < deadline:
        time.sleep(0.1)  # no event for "a namespace emptied"
    killed = []
    for pid in pids:
        killed.append(f"{h.name} pid {pid}: {_cmdline(pid)}")
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while [p for p in h.ns_pids() if _alive(p)] and time.monotonic() < deadline:
        time.sleep(0.05)
    return killed


def _run(argv: list[str]) -> None:
    subprocess.run(argv, check=True, capture_output=True, text=True)


def _netns_ok() -> bool:
    if os.environ.get("CASKIT_TEST_NO_NETNS"):  # exercise the loopback fallback on purpose
        return False
    probe = f"ckprobe{secrets.token_hex(3)}"
    ok = subprocess.run(["ip", "netns", "add", probe], capture_output=True).returncode == 0
    if ok:
        subprocess.run(["ip", "netns", "del", probe], capture_output=True)
    return ok


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start_sshd(h: TestHost) -> None:
    """Start h's sshd (its PID is the Popen's: ip netns exec, unshare and sh all exec) and wait
    until it listens."""
    log, errors = h.dir / "sshd.log", h.dir / "sshd.stderr"
    with open(errors, "wb") as err:
        h.proc = subprocess.Popen(h.in_ns([SSHD, "-D", "-f", str(h.dir / "sshd_config"), "-E", str(log)]),
                                  stdin=subprocess.DEVNULL, stderr=err, start_new_session=True)
    h.sshd_pid = h.proc.pid
    deadline = time.monotonic() + 15
    while "Server listening" not in (log.read_text() if log.exists() else ""):
        if h.proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"sshd for {h.name} did not start: {errors.read_text()}"
                               f"{log.read_text() if log.exists() else ''}")
        with contextlib.suppress(subprocess.TimeoutExpired):
            h.proc.wait(0.05)
    h.mnt_ns = os.readlink(f"/proc/{h.sshd_pid}/ns/mnt")
    if h.mnt_ns == os.readlink("/proc/self/ns/mnt"):
        raise RuntimeError(f"sshd for {h.name} shares the controller's mount namespace: its /tmp is not private")


def start(base: Path, names: tuple[str, ...] = ("hosta", "hostb"),
          sshd_extra: dict[str, list[str]] | None = None) -> TestHosts:
    """Create the hosts; the caller must close() the result (a fixture's finalizer). `sshd_extra`:
    more sshd_config lines per host name (a hardened server, say)."""
    base.mkdir(parents=True, exist_ok=True)
    base = base.resolve()  # the private /tmp binds the sshd's files back at their real paths
    for tool, package in ((SSHD, "openssh-server"), ("ssh-keygen", "openssh-client"), ("unshare", "util-linux")):
        if not shutil.which(tool):
            raise RuntimeError(f"{tool} not found: install {package}")
    Path("/run/sshd").mkdir(exist_ok=True)  # sshd's privilege separation directory
    key = base / "client_key"
    _run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "caskit-tests", "-f", str(key)])
    use_netns = _netns_ok()
    tag = secrets.token_hex(3)
    th = TestHosts([], key, base, use_netns)
    try:
        if use_netns:
            nss = [f"ck{tag}{i}" for i in range(len(names))]
            for ns in nss:
                _run(["ip", "netns", "add", ns])
                _run(["ip", "-n", ns, "link", "set", "lo", "up"])
        if use_netns and len(nss) >= 2:
            # A veth pair between the two namespaces only: no address in the root namespace.
            _run(["ip", "link", "add", f"ck{tag}a", "netns", nss[0], "type", "veth", "peer", "name", f"ck{tag}b",
                  "netns", nss[1]])
            subnet = f"10.{200 + int(tag[:2], 16) % 50}.{int(tag[2:4], 16)}"
            for i, ns in enumerate(nss):
                dev = f"ck{tag}{'ab'[i]}"
                _run(["ip", "-n", ns, "addr", "add", f"{subnet}.{i + 1}/24", "dev", dev])
                _run(["ip", "-n", ns, "link", "set", dev, "up"])
        for i, name in enumerate(names):
            d = base / name
            d.mkdir()
            # Everything this sshd reads lives in d: only d is visible inside its private /tmp.
            (d / "authorized_keys").write_text((base / "client_key.pub").read_text())
            os.chmod(d / "authorized_keys", 0o600)
            _run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", name, "-f", str(d / "host_key")])
            if use_netns:  # a lone host listens on its namespace's own loopback
                address, port, ns = (f"{subnet}.{i + 1}" if len(nss) >= 2 else "127.0.0.1"), 22, nss[i]
            else:
                address, port, ns = "127.0.0.1", _free_port(), None
            (d / "sshd_config").write_text("\n".join([
                f"ListenAddress {address}", f"Port {port}", f"HostKey {d / 'host_key'}",
                f"PidFile {d / 'sshd.pid'}", f"AuthorizedKeysFile {d / 'authorized_keys'}",
                "PermitRootLogin prohibit-password", "PasswordAuthentication no", "KbdInteractiveAuthentication no",
                "UsePAM no", "StrictModes no", "Subsystem sftp internal-sftp", "LogLevel VERBOSE",
                "ClientAliveInterval 5", "MaxSessions 100", "MaxStartups 100",
                *(sshd_extra or {}).get(name, []), ""]))
            target = address if port == 22 else f"[{address}]:{port}"
            kh = d / "known_hosts"
            kh.write_text(f"{target} {' '.join((d / 'host_key.pub').read_text().split()[:2])}\n")
            private = base / "private" / name
            h = TestHost(name, address, port, ns, d, kh, tmp=private / "tmp", var_tmp=private / "var-tmp")
            for empty in (h.tmp, h.var_tmp, *(h.controller_path(x) for x in h.shared())):
                if empty:
                    empty.mkdir(parents=True, exist_ok=True)  # the private dirs, and the mount points in them
            th.hosts.append(h)  # before starting: close() stops a half-started sshd too
            _start_sshd(h)
    except BaseException:
        th.close()
        raise
    return th
