"""Real SSH test hosts: OpenSSH's sshd in network namespaces this module creates.

Two namespaces joined by a veth pair, with addresses that exist only inside them; one sshd in
each, with its own config, host key and authorized key, all generated here and pinned in a
known_hosts file of its own. The controller reaches each sshd through a proxy command that runs
inside the host's namespace (the addresses are unreachable from the root namespace on purpose);
QEMUs started over SSH run inside their host's namespace and migrate to each other over the veth.
Everything is torn down by PID and by name. Where namespaces cannot be created, both sshds listen
on 127.0.0.1 ports instead, and `netns` says so.
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

from harness.hosts.ssh import BRIDGE

SSHD = "/usr/sbin/sshd"

@dataclass
class TestHost:
    name: str
    address: str
    port: int
    netns: str | None
    dir: Path
    known_hosts: Path
    sshd_pid: int | None = None
    proc: subprocess.Popen | None = field(default=None, repr=False)

    def proxy_command(self) -> list[str]:
        if not self.netns:
            return []
        return ["ip", "netns", "exec", self.netns, sys.executable, "-c", BRIDGE, "tcp", self.address, str(self.port)]

    def in_ns(self, argv: list[str]) -> list[str]:
        return (["ip", "netns", "exec", self.netns] if self.netns else []) + argv

    def sessions(self) -> list[int]:
        """PIDs of the per-connection sshd processes the listener forked."""
        out = []
        for d in Path("/proc").iterdir():
            if d.name.isdigit():
                with contextlib.suppress(OSError, IndexError, ValueError):
                    if int((d / "stat").read_text().rsplit(")", 1)[1].split()[1]) == self.sshd_pid:
                        out.append(int(d.name))
        return out

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

    def inventory(self, qemu: dict | None = None, slots: int = 2, domain: str = "pair") -> dict:
        """A host inventory (hosts.yaml content) naming both hosts and a domain of the two."""
        hosts = {}
        for h in self.hosts:
            hosts[h.name] = {"kind": "ssh", "address": h.address, "port": h.port, "user": "root",
                             "key_file": str(self.key_file), "known_hosts": str(h.known_hosts), "slots": slots,
                             "kit_dir": str(self.dir / "remote" / h.name)}
            if h.proxy_command():
                hosts[h.name]["proxy_command"] = h.proxy_command()
            if qemu:
                hosts[h.name]["qemu"] = qemu
        return {"hosts": hosts, "domains": {domain: {"hosts": [h.name for h in self.hosts]}}}

    def write_inventory(self, path: Path, **kw) -> Path:
        path.write_text(yaml.safe_dump(self.inventory(**kw), sort_keys=False))
        return path

    def close(self) -> None:
        for h in self.hosts:
            h.stop_sshd()
        for ns in [h.netns for h in self.hosts if h.netns]:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)


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


def start(base: Path, names: tuple[str, ...] = ("hosta", "hostb")) -> TestHosts:
    """Create the hosts; the caller must close() the result (a fixture's finalizer)."""
    base.mkdir(parents=True, exist_ok=True)
    for tool in (SSHD, "ssh-keygen"):
        if not shutil.which(tool):
            raise RuntimeError(f"{tool} not found: install openssh-server (scripts/bootstrap.sh does)")
    Path("/run/sshd").mkdir(exist_ok=True)  # sshd's privilege separation directory
    key = base / "client_key"
    _run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "caskit-tests", "-f", str(key)])
    (base / "authorized_keys").write_text((base / "client_key.pub").read_text())
    os.chmod(base / "authorized_keys", 0o600)
    use_netns = _netns_ok()
    tag = secrets.token_hex(3)
    th = TestHosts([], key, base, use_netns)
    try:
        if use_netns:
            nss = [f"ck{tag}{i}" for i in range(len(names))]
            for ns in nss:
                _run(["ip", "netns", "add", ns])
                _run(["ip", "-n", ns, "link", "set", "lo", "up"])
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
            _run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", name, "-f", str(d / "host_key")])
            address, port, ns = (f"{subnet}.{i + 1}", 22, nss[i]) if use_netns else ("127.0.0.1", _free_port(), None)
            (d / "sshd_config").write_text("\n".join([
                f"ListenAddress {address}", f"Port {port}", f"HostKey {d / 'host_key'}",
                f"PidFile {d / 'sshd.pid'}", f"AuthorizedKeysFile {base / 'authorized_keys'}",
                "PermitRootLogin prohibit-password", "PasswordAuthentication no", "KbdInteractiveAuthentication no",
                "UsePAM no", "StrictModes no", "Subsystem sftp internal-sftp", "LogLevel VERBOSE",
                "ClientAliveInterval 5", "MaxSessions 100", "MaxStartups 100", ""]))
            target = address if port == 22 else f"[{address}]:{port}"
            kh = d / "known_hosts"
            kh.write_text(f"{target} {' '.join((d / 'host_key.pub').read_text().split()[:2])}\n")
            h = TestHost(name, address, port, ns, d, kh)
            log = d / "sshd.log"
            h.proc = subprocess.Popen(h.in_ns([SSHD, "-D", "-f", str(d / "sshd_config"), "-E", str(log)]),
                                      stdin=subprocess.DEVNULL, start_new_session=True)
            h.sshd_pid = h.proc.pid
            th.hosts.append(h)
            deadline = time.monotonic() + 15
            while "Server listening" not in (log.read_text() if log.exists() else ""):
                if h.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"sshd for {name} did not start: {log.read_text() if log.exists() else ''}")
                with contextlib.suppress(subprocess.TimeoutExpired):
                    h.proc.wait(0.05)
    except BaseException:
        th.close()
        raise
    return th
