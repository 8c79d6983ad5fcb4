"""SSH hosts for real: two OpenSSH servers in network namespaces (tests/sshhosts.py), caskit
driving QEMU on them over paramiko, and the cross-host plan migrating guests between them over
TCP on the veth that joins the namespaces. Each host has its own /tmp and /var/tmp, so a file
made on the wrong side (the controller instead of the host) is not where QEMU looks."""

from __future__ import annotations

import contextlib
import hashlib
import os
import select
import shutil
import socket
import struct
import tempfile
import threading
import time
from pathlib import Path

import pytest
import yaml

import sshhosts
from conftest import run_cli, write_matrix
from harness.config import parse_hosts
from harness.errors import InfraError
from integration.helpers import assert_no_qemu_left, pid_alive

pytestmark = pytest.mark.guest


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    th = sshhosts.start(tmp_path_factory.mktemp("sshhosts"))
    yield th
    pids = [h.sshd_pid for h in th.hosts] + [p for h in th.hosts for p in h.sessions()]
    th.close()
    assert not [p for p in pids if pid_alive(p)], "sshd processes left after teardown"
    # No process left in a host's mount namespace (so the namespace and its private /tmp mounts
    # are gone), no mount of ours in the controller's, no network namespace.
    assert not th.leftovers(), th.leftovers()
    assert not th.stragglers, f"close() had to kill these: {th.stragglers}"


@pytest.fixture(scope="module")
def backports():
    from harness.qemu_builds import suite_build

    binary, fw, _ = suite_build("bookworm-backports")
    return {"backports": {"binary": str(binary), "firmware_dir": str(fw)}}


@pytest.fixture(scope="module")
def inventory(pair, backports, tmp_path_factory):
    return pair.write_inventory(tmp_path_factory.mktemp("inv") / "hosts.yaml", qemu=backports)


def host(pair, inventory, name, **changes):
    from harness.hosts.ssh import SshHost

    spec = parse_hosts(yaml.safe_load(inventory.read_text()), str(inventory))[name]
    if changes:
        from dataclasses import replace
        spec = replace(spec, **{k: v for k, v in changes.items() if k != "ssh"},
                       ssh=replace(spec.ssh, **changes.get("ssh", {})))
    return SshHost(spec)  # a fresh connection, not the process-wide one


CROSS = """
name: xh
hosts: [hosta, hostb]
domain: pair
axes: {guest_xive: [default, "off"], smp: [1], firmware: [vof], qemu: [backports]}
workloads: [ipi, virtio-net]
migration: [cross-host]
timeouts: {liveness: 5, command: 30}
"""


CROSS_IDLE = """
name: xh-idle
hosts: [hosta]
domain: pair
axes: {guest_xive: [default, "off"], smp: [1], firmware: [vof], qemu: [backports]}
migration: [cross-host]
timeouts: {liveness: 5, command: 30}
"""


@pytest.fixture(scope="module")
def cross(pair, inventory, tmp_path_factory, kit):
    d = tmp_path_factory.mktemp("xh")
    files = [str(write_matrix(d / "xh.yaml", CROSS)), str(write_matrix(d / "xh-idle.yaml", CROSS_IDLE))]
    r = run_cli(["run", *files, "--hosts", str(inventory), "-n", "2"], d / "out")
    assert_no_qemu_left(r.results["run"]["id"])
    return r


def test_idle_guests_cross_hosts_and_back_in_both_modes(cross):
    cells = [c for c in cross.results["cells"] if c["matrix"] == "xh-idle"]
    assert sorted(c["observed"]["mode"] for c in cells) == ["xics", "xive"]
    for c in cells:
        assert c["verdict"] == "PASS", c["reason"]
        assert [(h["source_host"], h["destination_host"]) for h in c["migration"]["hops"]] == [
            ("hosta", "hostb"), ("hostb", "hosta")]
        for h in c["migration"]["hops"]:
            assert h["liveness"]["beats"] > 5 and not h["liveness"]["seq_gaps"] and not h["kernel_log"]
            assert (h["mode_after"]["guest"], h["mode_after"]["host"]) == (c["observed"]["mode"],) * 2


def test_cross_host_round_trip_of_a_xive_guest_passes(cross, pair):
    cells = [c for c in cross.results["cells"] if c["observed"]["mode"] == "xive" and c["matrix"] == "xh"]
    assert {c["host"] for c in cells} == {"hosta", "hostb"}
    for c in cells:
        assert c["verdict"] == "PASS", c["reason"]
        other = ({"hosta", "hostb"} - {c["host"]}).pop()
        assert c["migration"]["peer"]["host"] == other
        b, a2 = c["migration"]["hops"]
        assert (b["source_host"], b["destination_host"]) == (c["host"], other)
        assert (a2["source_host"], a2["destination_host"]) == (other, c["host"])
        dest_addr = {h.name: h.address for h in pair.hosts}
        assert b["uri"].startswith(f"tcp:{dest_addr[other]}:") and a2["uri"].startswith(f"tcp:{dest_addr[c['host']]}:")
        for h in (b, a2):
            assert h["qmp"]["status"] == "completed" and h["liveness"]["beats"] > 5
            assert h["progress"]["virtio-net"]["received"] == h["progress"]["virtio-net"]["sent"] > 0
            assert not h["progress"]["problems"]


def test_cross_host_xics_guest_is_the_known_msi_defect(cross):
    cells = [c for c in cross.results["cells"] if c["observed"]["mode"] == "xics" and c["matrix"] == "xh"]
    assert len(cells) == 2
    for c in cells:
        assert c["verdict"] == "XFAIL", c["reason"]
        assert c["migration"]["known_issues"] == ["qemu10.0-tcg-xics-msi-lost-after-migration"]


def test_ssh_host_facts_are_probed_over_ssh(cross, pair):
    facts = cross.results["run"]["hosts"]
    for h in pair.hosts:
        f = facts[h.name]
        assert f["arch"] == os.uname().machine and f["kvm_mode"] == "tcg-only"
        assert {b["name"]: b["version"][:3] for b in f["qemu"]}["backports"] == "10."


def test_commands_reach_the_remote_shell_quoted(pair, inventory):
    h = host(pair, inventory, "hosta")
    marker = h.tempdir("ck-q-") / "pwned"  # where an unquoted `touch` would succeed: on the host
    tricky = f"$(touch {marker}); `touch {marker}` ; touch {marker} ' \""
    code, out, _ = h.run(["echo", tricky])
    assert code == 0 and out == tricky + "\n" and h.file_size(marker) is None
    h.remove_tree(marker.parent)
    h.close()


def _descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                ppid = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(d.name))
    out, todo = [], [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            out.append(c)
            todo.append(c)
    return out


def test_a_host_whose_sshd_stops_answering_fails_a_command_in_time(pair, inventory):
    # A host whose sshd is stuck in its kernel (seen on a powernv9 L1 whose other CPU had
    # hard-locked) never answers an exec request, and paramiko alone waits for that for ever: a
    # hang's forensics held a run for minutes. Here the processes of our connection are stopped.
    import signal

    from harness.errors import HostError

    h = host(pair, inventory, "hosta")
    assert h.run(["true"])[0] == 0
    th = next(x for x in pair.hosts if x.name == "hosta")
    stuck = _descendants(th.sshd_pid)
    assert stuck
    for p in stuck:
        os.kill(p, signal.SIGSTOP)
    try:
        t0 = time.monotonic()
        with pytest.raises(HostError, match=r"was not started within 3s: the host's sshd does not answer"):
            h.run(["true"], timeout=3)
        assert time.monotonic() - t0 < 10
    finally:
        for p in stuck:
            os.kill(p, signal.SIGCONT)
    assert h.run(["echo", "back"])[1] == "back\n"  # on a new connection
    h.close()


def test_an_ssh_hosts_tmp_is_its_own(pair, inventory, tmp_path):
    """Files made through a host are on that host only: not on the controller at the same path,
    not on the other host; and the controller's files are not on the host."""
    a, b = host(pair, inventory, "hosta"), host(pair, inventory, "hostb")
    d = a.tempdir("ck-own-")
    a.make_sparse(d / "f", 12345)
    assert a.file_size(d / "f") == 12345
    assert not (d / "f").exists() and b.file_size(d / "f") is None
    assert pair.hosts[0].controller_path(d / "f").stat().st_size == 12345  # in hosta's private /tmp
    assert a.run(["sh", "-c", 'echo x > "$1"', "sh", "/var/tmp/ck-own-var"])[0] == 0
    assert not Path("/var/tmp/ck-own-var").exists() and b.file_size(Path("/var/tmp/ck-own-var")) is None
    (tmp_path / "mine").write_text("controller")
    assert a.file_size(tmp_path / "mine") is None
    a.remove_tree(d)
    a.remove_tree(Path("/var/tmp/ck-own-var"))
    a.close()
    b.close()


def _echo_through(h, th_host, name: str, batch: bool = False) -> str:
    """Connect through `h` to a unix socket listening in the host's /tmp; echo a line through it
    and return the name of the program at the other end (the socket's peer, by SO_PEERCRED)."""
    d = h.tempdir("ck-sl-")
    path = th_host.controller_path(d / name)
    srv = socket.socket(socket.AF_UNIX)
    srv.bind(str(path))
    srv.listen(1)
    srv.settimeout(30)
    try:
        conn = h.connect_unix(d / name, 5, batch=batch)
        peer, _ = srv.accept()
        pid = struct.unpack("3i", peer.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12))[0]
        exe = os.path.basename(os.readlink(f"/proc/{pid}/exe"))
        conn.sendall(b"ping\n")
        peer.settimeout(30)
        assert peer.recv(5) == b"ping\n"
        peer.sendall(b"pong\n")
        conn.settimeout(30)
        assert conn.recv(5) == b"pong\n"
        conn.close()
        peer.close()
        return exe
    finally:
        srv.close()
        h.remove_tree(d)


def test_qemus_sockets_are_reached_through_sshd_without_a_process_on_the_host(pair, inventory):
    """Every remote process costs a TCG start on an emulated host: sshd connects to the socket
    itself (OpenSSH's direct-streamlocal channel), no bridge program runs."""
    h = host(pair, inventory, "hosta")
    try:
        assert _echo_through(h, pair.hosts[0], "s").startswith("sshd")
    finally:
        h.close()


def test_a_console_through_ssh_arrives_in_batches_and_whole(pair, inventory):
    """A guest's hvc console writes 16 bytes at a time. Through an SSH host it comes in the
    host-side bridge's batches (each piece is otherwise one SSH packet for the controller to
    handle), byte for byte and in order, and what the controller types still reaches the guest."""
    h = host(pair, inventory, "hosta")
    d = h.tempdir("ck-bt-")
    path = pair.hosts[0].controller_path(d / "c")
    srv = socket.socket(socket.AF_UNIX)
    srv.bind(str(path))
    srv.listen(1)
    srv.settimeout(30)
    pieces = [b"%015d\n" % i for i in range(120)]
    try:
        conn = h.connect_unix(d / "c", 5, batch=True)
        peer, _ = srv.accept()
        pid = struct.unpack("3i", peer.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12))[0]
        assert os.path.basename(os.readlink(f"/proc/{pid}/exe")).startswith("python3")
        conn.sendall(b"typed\n")
        peer.settimeout(30)
        assert peer.recv(6) == b"typed\n"
        conn.settimeout(30)
        reads = []

        def read():  # as the console reader does, while the guest prints
            while b := conn.recv(65536):
                reads.append(b)

        reader = threading.Thread(target=read)
        reader.start()
        for p in pieces:  # as a guest prints a boot log: a piece, then a little while
            peer.sendall(p)
            time.sleep(0.004)
        peer.shutdown(socket.SHUT_WR)
        reader.join(30)
        assert b"".join(reads) == b"".join(pieces)
        # 120 pieces over about 0.5 s: forwarded as they come they are about 120 reads; in 20 ms
        # batches about 25 (and never more than one per piece).
        assert len(reads) <= 50, [len(r) for r in reads]
        conn.close()
        peer.close()
    finally:
        srv.close()
        h.remove_tree(d)
        h.close()


@contextlib.contextmanager
def _one_host(tmp_path, prefix: str, name: str, sshd_extra: list[str]):
    """A test bed of one sshd with `sshd_extra` in its config, and an SshHost on it; everything
    it started is checked gone afterwards."""
    from harness.hosts.ssh import SshHost

    # A short base: the test socket's path, seen from the controller, must fit AF_UNIX's 108 bytes.
    base = Path(tempfile.mkdtemp(prefix=prefix))
    th = sshhosts.start(base / "h", names=(name,), sshd_extra={name: sshd_extra})
    try:
        inv = th.write_inventory(tmp_path / "hosts.yaml")
        h = SshHost(parse_hosts(yaml.safe_load(inv.read_text()), str(inv))[name])
        try:
            yield th, h
        finally:
            h.close()
    finally:
        th.close()
        left = th.leftovers()
        shutil.rmtree(base, ignore_errors=True)
        assert not left, left


def test_a_server_that_refuses_streamlocal_forwarding_gets_the_bridge(tmp_path):
    with _one_host(tmp_path, "ck-lk-", "locked", ["AllowStreamLocalForwarding no"]) as (th, h):
        assert _echo_through(h, th.hosts[0], "s").startswith("python3")
        assert not h._streamlocal_ok  # remembered: the next socket goes straight to the bridge
        assert _echo_through(h, th.hosts[0], "t").startswith("python3")


def _bridges_for(path: Path) -> list[int]:
    """PIDs of processes on this machine (the netns hosts' too) whose argv names `path`."""
    pids = []
    for d in Path("/proc").iterdir():
        try:
            if d.name.isdigit() and str(path).encode() in (d / "cmdline").read_bytes().split(b"\0"):
                pids.append(int(d.name))
        except OSError:
            pass
    return pids


def test_a_console_bridge_started_before_its_qemu_waits_for_it_or_ends_when_dropped(pair, inventory):
    """The console's bridge starts with QEMU's spawn (its python3 start overlaps QEMU's): it
    connects once the socket appears; if QEMU never makes it, dropping the bridge ends it."""
    h = host(pair, inventory, "hosta")
    d = h.tempdir("ck-early-")
    try:
        gone = d / "never"
        pending = h.console_early(gone, 60)
        theirs = pair.hosts[0].controller_path(d / "c")
        late = h.console_early(d / "c", 60)
        (pid,) = _wait_for(lambda: _bridges_for(gone), 30)
        srv = socket.socket(socket.AF_UNIX)  # the socket appears after the bridge started
        srv.bind(str(theirs))
        srv.listen(1)
        srv.settimeout(30)
        conn = late.connect(30)
        peer, _ = srv.accept()
        peer.sendall(b"up\n")
        conn.settimeout(30)
        assert conn.recv(3) == b"up\n"
        conn.close()
        peer.close()
        srv.close()
        fd = os.pidfd_open(pid)
        pending.cancel()  # QEMU failed at start: the bridge waiting for it ends, not at its 60 s
        assert select.select([fd], [], [], 10)[0], f"bridge {pid} still waits for {gone}"
        os.close(fd)
    finally:
        h.remove_tree(d)
        h.close()


def _wait_for(probe, timeout: float):
    """probe()'s first truthy answer; the bridge's process appears at a time no event marks."""
    deadline = time.monotonic() + timeout
    while not (got := probe()):
        assert time.monotonic() < deadline, "not seen in time"
        time.sleep(0.05)
    return got


def test_a_host_without_python_gets_its_console_unbatched(tmp_path):
    """Batching needs python3 on the host; a host without it still gets the console, through
    sshd, and is remembered. The host's sshd forces every command through a shell that has no
    python3 (it answers as sh does for a missing command: status 127)."""
    shell = Path("/tmp/ck-nopy-sh")  # in the host's own /tmp
    with _one_host(tmp_path, "ck-np-", "nopy", [f"ForceCommand {shell}"]) as (th, h):
        theirs = th.hosts[0].controller_path(shell)
        theirs.write_text('#!/bin/sh\ncase "$SSH_ORIGINAL_COMMAND" in python3*) '
                          'echo "sh: 1: python3: not found" >&2; exit 127;; esac\n'
                          'exec /bin/sh -c "$SSH_ORIGINAL_COMMAND"\n')
        theirs.chmod(0o755)
        assert h.run(["python3", "-c", "pass"])[0] == 127  # the host as the test means it
        assert _echo_through(h, th.hosts[0], "s", batch=True).startswith("sshd")
        assert not h._batch_ok  # remembered: the next console goes straight to sshd
        assert _echo_through(h, th.hosts[0], "t", batch=True).startswith("sshd")


def test_an_unknown_host_key_is_refused_with_a_way_to_add_it(pair, inventory, tmp_path):
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    h = host(pair, inventory, "hosta", ssh={"known_hosts": str(empty)})
    with pytest.raises(InfraError) as e:
        h.run(["true"])
    msg = str(e.value)
    assert "hosta" in msg and "not in" in msg and str(empty) in msg and "ssh-keyscan" in msg


def test_a_changed_host_key_is_refused(pair, inventory):
    a, b = pair.hosts
    # hosta's address, but hostb's key: what a reinstalled or impersonated host looks like.
    forged = b.known_hosts.read_text().split(None, 1)[1]
    target = a.address if a.port == 22 else f"[{a.address}]:{a.port}"
    b_kh = b.dir / "forged_known_hosts"
    b_kh.write_text(f"{target} {forged}")
    h = host(pair, inventory, "hosta", ssh={"known_hosts": str(b_kh)})
    with pytest.raises(InfraError) as e:
        h.run(["true"])
    assert "CHANGED" in str(e.value) and "refusing" in str(e.value)


def test_remote_slot_leases_never_exceed_the_slots_and_die_with_their_holder(pair, inventory):
    h1 = host(pair, inventory, "hostb")
    h1.slots = 1
    h2 = host(pair, inventory, "hostb")
    h2.slots = 1
    with h1.lease():
        t0 = time.monotonic()
        with pytest.raises(InfraError, match="no free slot of 1"):
            with h2.lease(timeout=1.0):
                pass
        assert time.monotonic() - t0 >= 1.0
    with h2.lease(timeout=5.0) as slot:
        assert slot == 0
    # A holder whose connection dies (a killed controller) frees the slot on the host.
    cm = h1.lease()
    cm.__enter__()
    h1.transport().close()
    with h2.lease(timeout=10.0) as slot:
        assert slot == 0
    h1.close()
    h2.close()


def test_the_kit_is_sent_once_and_checked(pair, inventory, kit):
    h = host(pair, inventory, "hostb")

    def on_host(*argv: str) -> str:
        return h.run(list(argv), check=True)[1].strip()

    want = hashlib.sha256(kit.kernel.read_bytes()).hexdigest()
    staged = h.stage_kit(kit)
    assert str(staged.kernel).startswith("/var/tmp/caskit/kits/")  # the default kit_dir, on the host
    assert not staged.kernel.exists()  # hostb's /var/tmp is its own
    assert on_host("sha256sum", str(staged.kernel)).split()[0] == want
    mtime = on_host("stat", "-c", "%y", str(staged.kernel))
    again = host(pair, inventory, "hostb").stage_kit(kit)
    assert on_host("stat", "-c", "%y", str(again.kernel)) == mtime  # found by hash, not sent again
    # Damage it on the host: the next staging repairs it.
    on_host("dd", "if=/dev/zero", f"of={staged.kernel}", "bs=4", "count=1", "conv=notrunc", "status=none")
    assert on_host("sha256sum", str(staged.kernel)).split()[0] != want
    repaired = host(pair, inventory, "hostb").stage_kit(kit)
    assert on_host("sha256sum", str(repaired.kernel)).split()[0] == want
    h.close()


BLK_FILE = """
name: xh-blk
hosts: [hosta]
axes: {ic_mode: [dual], smp: [1], firmware: [vof], qemu: [backports]}
workloads: [virtio-blk]
migration: [file]
timeouts: {liveness: 5, command: 30}
"""


def test_virtio_blk_and_the_file_plan_make_their_files_on_the_ssh_host(pair, inventory, tmp_path, kit):
    """The disk image and the migration state file live in the cell's scratch dir on the host:
    made and measured through the host, they work there (made locally, they would not exist
    where QEMU opens them)."""
    r = run_cli(["run", str(write_matrix(tmp_path / "m.yaml", BLK_FILE)), "--hosts", str(inventory), "-n", "1"],
                tmp_path / "out")
    assert (tmp_path / "out" / "results.json").exists(), r.stdout[-3000:] + r.stderr[-3000:]
    (c,) = r.results["cells"]
    assert c["verdict"] == "PASS", c["reason"]
    assert c["host"] == "hosta" and c["observed"]["mode"] == "xive"
    (blk,) = [w for w in c["workloads"] if w["name"] == "virtio-blk"]
    assert blk["verdict"] == "PASS", blk["reason"]
    (hop,) = c["migration"]["hops"]
    assert hop["name"] == "file" and hop["qmp"]["status"] == "completed"
    assert hop["qmp"]["file_bytes"] > 1 << 20  # the state file, measured on the host
    assert hop["progress"]["virtio-blk"]["read"] == hop["progress"]["virtio-blk"]["wrote"]  # the same disk after restore
    assert_no_qemu_left(r.results["run"]["id"])


def test_cleanup_stops_tagged_processes_on_ssh_hosts(pair, inventory, tmp_path):
    h = host(pair, inventory, "hosta")
    # A process (without children) carrying a run tag the way caskit's QEMUs do.
    p = h.spawn(["python3", "-c", "import time; time.sleep(120)", "-name", "caskit:cleanup-test-run:cell"],
                tmp_path / "o", tmp_path / "e")
    assert pid_alive(p.pid)
    r = run_cli(["cleanup", "cleanup-test-run", "--hosts", str(inventory)])
    assert r.rc == 0, r.stderr
    assert "hosta: stopped" in r.stdout and str(p.pid) in r.stdout
    assert p.wait(10) is not None and not pid_alive(p.pid)
    h.close()


def test_a_hangs_host_side_shows_where_each_thread_of_the_process_waits(pair, inventory, tmp_path):
    """What a hang's forensics ask an SSH host about its QEMU: every thread's state and wait
    channel (a stuck monitor is a main thread in a KVM ioctl) and the end of the host's kernel log."""
    from harness.machine import PROCESS_STATE

    import time

    h = host(pair, inventory, "hosta")
    p = h.spawn(["python3", "-c", "import threading, time; threading.Thread(target=time.sleep, args=(120,)).start(); "
                                  "time.sleep(120)"], tmp_path / "o", tmp_path / "e")
    try:
        # Sampled until both threads are seen asleep, within 30 s: the first sample can come
        # before python3 has started its second thread or put it to sleep.
        deadline = time.monotonic() + 30
        while True:
            code, out, err = h.run(["sh", "-c", PROCESS_STATE, "sh", str(p.pid), "5"], timeout=30)
            assert code == 0, err
            threads = [ln for ln in out.splitlines() if ln.startswith("thread ")]
            if len(threads) == 2 and all("(python3): S (sleeping), wchan " in t for t in threads):
                break
            assert time.monotonic() < deadline, out
        assert "## the host's kernel log (last 5 lines)" in out
    finally:
        p.kill()
        h.close()
    assert "(process 999999999 is gone)" in h.run(["sh", "-c", PROCESS_STATE, "sh", "999999999", "0"])[1]


def test_a_dropped_ssh_connection_mid_cell_is_error_and_a_retry_passes(pair, inventory, tmp_path, kit):
    """Kill hosta's sshd session processes while its guest boots: the cell is ERROR (the host
    failed, not the guest), its QEMU is stopped by PID over a new connection, and the same cell
    run again passes."""
    import signal
    import threading

    from harness import probe
    from harness.axes import AXIS_NAMES
    from harness.cellrun import CellContext, run_cell
    from harness.config import TIMEOUT_KEYS
    from harness.cell import Cell
    from harness.cell_machines import run_tag
    from harness.results import RunStore
    from harness.hosts.ssh import SshHost

    spec = parse_hosts(yaml.safe_load(inventory.read_text()), str(inventory))["hosta"]
    facts = probe.probe(spec, tmp_path / "probe", {"system"})
    ax = dict(accel="tcg", ic_mode="dual", kernel_irqchip="default", cpu="POWER9", cpu_compat="default",
              guest_xive="default", smp=1, firmware="vof", qemu="system")
    cell = Cell("hosta", tuple((n, ax[n]) for n in AXIS_NAMES))
    sshd = pair.hosts[0]

    def run(run_id: str, drop: bool) -> tuple[dict, list[int]]:
        store = RunStore(tmp_path / run_id)
        log = store.cell_dir(cell.id) / "console.log"
        killed: list[int] = []

        def dropper():
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and not (log.exists() and log.stat().st_size > 0):
                time.sleep(0.02)  # no event to wait on: the transcript file growing
            for pid in sshd.sessions():
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)

        t = threading.Thread(target=dropper, daemon=True)
        if drop:
            t.start()
        rec = run_cell(CellContext(cell, facts, SshHost(spec), kit, store, run_id, dict(TIMEOUT_KEYS)))
        if drop:
            t.join(70)
        return rec, killed

    rec, killed = run("dropped", drop=True)
    assert killed, "the test never saw the guest boot"
    assert rec["verdict"] == "ERROR", rec["reason"]
    assert rec["observed"]["infra"] is True
    assert not [p for p in killed if pid_alive(p)]
    assert_no_qemu_left("dropped")  # the namespaces share this PID namespace: /proc shows them
    rec, _ = run("retry", drop=False)
    assert rec["verdict"] == "PASS", rec["reason"]
    assert_no_qemu_left("retry")
    assert run_tag("retry", cell.id)  # the tag the check above looks for


def test_a_host_that_is_down_makes_its_cells_error_while_the_others_run(pair, inventory, tmp_path, kit):
    inv = yaml.safe_load(inventory.read_text())
    a = inv["hosts"]["hosta"]
    down = {**a, "port": 2222}  # nothing listens there: connection refused, like a host that is down
    if "proxy_command" in a:
        down["proxy_command"] = a["proxy_command"][:-1] + ["2222"]
    inv["hosts"]["hostc"] = down
    hosts_file = tmp_path / "hosts.yaml"
    hosts_file.write_text(yaml.safe_dump(inv))
    m = write_matrix(tmp_path / "m.yaml", """
name: one-down
hosts: [hosta, hostc]
axes: {ic_mode: [dual], smp: [1], firmware: [vof]}
""")
    r = run_cli(["run", str(m), "--hosts", str(hosts_file), "-n", "2"], tmp_path / "out")
    assert (tmp_path / "out" / "results.json").exists(), r.stdout[-3000:] + r.stderr[-3000:]
    assert r.rc == 3, r.stdout[-2000:] + r.stderr[-2000:]  # ERROR without FAIL
    cells = {c["host"]: c for c in r.results["cells"]}
    assert cells["hosta"]["verdict"] == "PASS", cells["hosta"]["reason"]
    assert cells["hostc"]["verdict"] == "ERROR"
    assert "hostc" in cells["hostc"]["reason"] and "unreachable" in cells["hostc"]["reason"]
    assert r.results["run"]["hosts"]["hostc"]["error"]
    assert (tmp_path / "out" / "report.html").exists()
    assert_no_qemu_left(r.results["run"]["id"])
