"""Every workload in XIVE and in XICS mode on real TCG guests, asserting the metrics; and the
checks shown to fail when the system misbehaves."""

from __future__ import annotations

import pytest

from conftest import run_cli
from harness import config, workloads
from harness import probe
from harness.hosts import LocalHost
from harness.machine import GuestMachine, MachineFiles
from harness.qemu_cmd import qemu_argv
from harness.workloads import affinity, blk, net
from harness.workloads.base import GuestSession, WorkloadFailed
from harness.workloads.devices import DISK_MIB, nic_up
from integration.helpers import assert_no_qemu_left
from integration.test_failures import one_cell

pytestmark = pytest.mark.guest


@pytest.fixture(scope="module")
def run(tmp_path_factory, kit):
    out = tmp_path_factory.mktemp("workloads") / "run"
    r = run_cli(["run", "workloads", "-n", "2"], out)
    assert_no_qemu_left(r.results["run"]["id"])
    return r


def by_mode(run):
    return {c["observed"]["mode"]: {w["name"]: w for w in c["workloads"]} for c in run.results["cells"]}


def test_both_modes_pass_every_workload(run):
    assert run.rc == 0, run.stdout[-3000:]
    cells = run.results["cells"]
    assert {c["observed"]["mode"] for c in cells} == {"xive", "xics"}
    for c in cells:
        assert c["verdict"] == "PASS", c["reason"]
        assert [w["name"] for w in c["workloads"]] == list(workloads.REGISTRY)
        assert all(w["verdict"] == "PASS" for w in c["workloads"]), c["workloads"]


@pytest.mark.parametrize("mode", ["xive", "xics"])
def test_metrics(run, mode):
    w = by_mode(run)[mode]
    ipi = w["ipi"]["metrics"]
    assert ipi["line"].endswith("IPI-0" if mode == "xive" else "IPI")
    assert all(ipi["ipi_delta"][cpu] > 0 for cpu in ("0", "1"))
    assert ipi["ipis_per_s"] > 0
    for kind, trigger in (("msix", "Edge"), ("lsi", "Level")):
        n = w["virtio-net"]["metrics"][kind]
        assert n["sent"] == n["received"] > 0
        assert n["irq_total"] > 0 and n["triggers"] == [trigger]
    assert w["virtio-net"]["metrics"]["lsi"]["chips"] == (["XIVE-IRQ"] if mode == "xive" else ["XICS"])
    b = w["virtio-blk"]["metrics"]
    assert b["irq_total"] > 0 and len(b["sha256"]) == 64
    aff = w["affinity"]["metrics"]["deltas"]
    assert set(aff) == {"0", "1"}
    for target, counts in aff.items():
        assert counts[target] > 0 and all(n == 0 for cpu, n in counts.items() if cpu != target)
    hp = w["cpu-hotplug"]["metrics"]
    assert set(hp["while_offline"]) == {"0"} and hp["while_offline"]["0"] > 0
    assert hp["after_online"]["1"] > 0
    assert hp["background_received"] == hp["background_sent"] > 0
    assert "Invalid argument" in hp["offline_affinity_error"]
    dh = w["device-hotplug"]["metrics"]
    assert dh["ras_hotplug"]["after_add"] > dh["ras_hotplug"]["before"]  # the guest saw the event
    assert dh["ras_hotplug"]["after_remove"] > dh["ras_hotplug"]["after_add"]
    assert dh["traffic"]["received"] == dh["traffic"]["sent"] > 0 and dh["traffic"]["irq_total"] > 0
    assert dh["device_deleted"] is True
    switches = w["reboot"]["metrics"]["switches"]  # dual machine: XIVE <-> XICS at runtime
    assert [(x["guest_mode"], x["host_mode"]) for x in switches] == (
        [("xics", "xics"), ("xive", "xive")] if mode == "xive" else [("xive", "xive"), ("xics", "xics")])
    boots = w["reboot"]["metrics"]["boots"]
    assert len(boots) == 3 and all(b["guest_mode"] == b["host_mode"] == mode for b in boots)
    assert all(b["ipis_per_s"] > 0 for b in boots)
    if mode == "xics":
        assert all(x["metrics"]["spurious_delta"] == 0 for x in w.values() if "spurious_delta" in x["metrics"])


def test_html_report_shows_workloads(run):
    html = (run.out / "report.html").read_text()
    for name in workloads.REGISTRY:
        assert name in html


# ---------------------------------------------------------------- the checks can fail


@pytest.fixture(scope="module")
def guest(tmp_path_factory, kit):
    """One XIVE guest with the workloads' NICs and disk, driven step by step."""
    cell = one_cell(ic_mode="xive", smp=2)
    facts = probe.probe(config.load_hosts()["local"], tmp_path_factory.mktemp("probe"))
    host = LocalHost("local", 2)
    with host.lease():
        socks = host.tempdir("ck-w-")
        extra = workloads.device_args(("virtio-net", "virtio-blk"), workloads.LaunchContext(cell, socks))
        argv = qemu_argv(cell, facts.build("system"), kit.kernel, kit.initrd, qmp_sock=socks / "qmp.sock",
                         console_sock=socks / "console.sock", run_tag="caskit:wltest:x", extra_args=tuple(extra))
        with GuestMachine(host, argv, MachineFiles(tmp_path_factory.mktemp("wlguest"), socks)) as m:
            m.cont()
            m.console.wait_ready(90)
            g = GuestSession(cell, m.console, m.qmp, 30, m.console.wait_ready, 90, mode="xive")
            g.disk = socks / "disk.raw"
            yield g


def test_traffic_through_a_nic_whose_link_is_down_fails(guest):
    nic = nic_up(guest, "nic")
    assert net.traffic(guest, nic, 10)["received"] == 10
    guest.qmp.execute("set_link", name="cknic0", up=False)
    try:
        with pytest.raises(WorkloadFailed, match=r"0/10 echo replies"):
            net.traffic(guest, nic, 10)
    finally:
        guest.qmp.execute("set_link", name="cknic0", up=True)


def test_a_corrupted_read_back_fails(guest):
    dev, _ = blk.find_disk(guest)
    blk.write(guest, dev)
    assert blk.verify(guest, dev)["read"]  # intact: passes
    with open(guest.disk, "r+b") as f:  # flip bytes behind the guest's back, inside the pattern
        f.seek((DISK_MIB // 32) << 20)
        f.write(b"\xff" * 4096)
    with pytest.raises(WorkloadFailed, match="read-back differs"):
        blk.verify(guest, dev)


def test_affinity_to_an_offline_cpu_is_refused_with_a_clear_error(guest):
    nic = nic_up(guest, "nic")
    irq = affinity.input_line(guest, nic).label
    guest.sh("echo 0 > /sys/devices/system/cpu/cpu1/online")
    try:
        with pytest.raises(WorkloadFailed, match=rf"refused IRQ {irq} affinity to CPU 1: .*Invalid argument"):
            affinity.set_affinity(guest, irq, 1)
    finally:
        guest.sh("echo 1 > /sys/devices/system/cpu/cpu1/online")


def test_a_workload_needing_two_cpus_is_skipped_on_one(guest):
    from dataclasses import replace

    one = replace(guest, cell=one_cell(smp=1))
    res = workloads.execute(workloads.REGISTRY["ipi"], one)
    assert res.verdict == "SKIP" and "2 vCPUs" in res.reason
