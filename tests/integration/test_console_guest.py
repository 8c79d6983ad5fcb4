"""The framed console protocol against a real guest, and the machine's layered shutdown."""

from __future__ import annotations

import pytest

from harness import config
from harness import probe
from harness.console import GuestTimeout
from harness.hosts import LocalHost
from harness.machine import GuestMachine, MachineFiles
from harness.qemu_cmd import qemu_argv
from integration.helpers import pid_alive
from integration.test_failures import one_cell

pytestmark = pytest.mark.guest


@pytest.fixture(scope="module")
def guest(tmp_path_factory, kit):
    facts = probe.probe(config.load_hosts()["local"], tmp_path_factory.mktemp("probe"))
    host = LocalHost("local", 2)
    logs = tmp_path_factory.mktemp("guest")
    with host.lease():
        socks = host.tempdir("ck-t-")
        argv = qemu_argv(one_cell(smp=1), facts.build("system"), kit.kernel, kit.initrd, qmp_sock=socks / "qmp.sock",
                         console_sock=socks / "console.sock", run_tag="caskit:consoletest:x")
        m = GuestMachine(host, argv, MachineFiles(logs, socks))
        with m:
            m.cont()
            m.console.wait_ready(90)
            yield m
        assert not pid_alive(m.proc.pid)
        assert not socks.exists()  # the machine removes its socket directory


def test_output_and_status(guest):
    r = guest.console.run("echo one; echo two >&2; exit 3")
    assert (r.status, r.output) == (3, "one\ntwo\n")


def test_output_without_final_newline(guest):
    assert guest.console.run("printf abc").output == "abc"


def test_syntax_error_ends_only_that_command(guest):
    r = guest.console.run('echo "unterminated')
    assert r.status == 2 and "unterminated" in r.output
    assert guest.console.run("echo still here").output == "still here\n"


def test_large_output_arrives_whole(guest):
    r = guest.console.run("seq 1 3000")
    assert r.output.split() == [str(i) for i in range(1, 3001)]


def test_a_command_that_hangs_times_out_and_the_next_command_is_not_confused(guest):
    with pytest.raises(GuestTimeout):
        guest.console.run("sleep 4; echo late", timeout=1)
    # The late answer of the timed-out frame must not be taken for this one.
    r = guest.console.run("echo fresh", timeout=20)
    assert r.output == "fresh\n"


def test_guest_sees_the_cpus_and_kit(guest):
    assert guest.console.run("grep -c ^processor /proc/cpuinfo").output.strip() == "1"
    assert guest.console.run("ls /lib/modules/caskit/order && cat /etc/caskit-kit").status == 0
