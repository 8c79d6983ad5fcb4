"""A green run means the system under test is well: with real guests and real QEMUs, nothing
that failed, hung or was never tried comes out PASS, XFAIL or SKIP, and what is ours or the
host's is ERROR, never FAIL. Nothing is left running on any path."""

from __future__ import annotations

import re
import signal

import pytest

from conftest import run_cli, write_matrix
from harness import cellrun, config, workloads
from harness.axes import AXIS_NAMES
from harness.cell import Cell
from harness.cellrun import CellContext, run_cell, run_tag
from harness.errors import HostError, QmpLost
from harness import probe
from harness.hosts import LocalHost
from harness.results import RunStore
from harness.workloads.base import Workload
from integration.helpers import KillWhen, assert_no_qemu_left

pytestmark = pytest.mark.guest

AXES = dict(accel="tcg", ic_mode="dual", kernel_irqchip="default", cpu="POWER9", cpu_compat="default",
            guest_xive="default", smp=1, firmware="vof", qemu="system")


def cell(workload_names=(), migration="none", **kw) -> Cell:
    ax = {**AXES, **kw}
    return Cell("local", tuple((n, ax[n]) for n in AXIS_NAMES), tuple(workload_names), migration)


@pytest.fixture(scope="module")
def facts(tmp_path_factory):
    return probe.probe(config.load_hosts()["local"], tmp_path_factory.mktemp("probe"))


def run(tmp_path, facts, kit, c: Cell, run_id: str, **timeouts) -> dict:
    ctx = CellContext(c, facts, LocalHost("local", 2), kit, RunStore(tmp_path), run_id,
                      {**config.TIMEOUT_KEYS, **timeouts})
    rec = run_cell(ctx)
    assert_no_qemu_left(run_id)
    return rec


# -- 1. a build or a kit that cannot run is ERROR, never SKIP -----------------------------------

def test_a_build_the_inventory_names_that_cannot_run_is_error(tmp_path):
    hosts = tmp_path / "hosts.yaml"
    hosts.write_text("hosts:\n  local:\n    kind: local\n    slots: 2\n"
                     "    qemu: {broken: {binary: /nonexistent/qemu-system-ppc64}}\n")
    m = write_matrix(tmp_path / "m.yaml", "axes: {qemu: [broken], ic_mode: [dual, xics]}\n")
    r = run_cli(["run", str(m), "--hosts", str(hosts)], tmp_path / "out")
    assert r.rc == 3, r.stderr[-2000:]
    for c in r.results["cells"]:
        assert c["verdict"] == "ERROR", c["reason"]
        assert "/nonexistent/qemu-system-ppc64" in c["reason"]
    listing = run_cli(["matrix", str(m), "--hosts", str(hosts)])
    assert listing.rc == 0 and "SKIP" not in listing.stdout and "ERROR (QEMU build 'broken'" in listing.stdout


def test_a_kit_that_cannot_be_built_is_error_not_usage(tmp_path):
    blocked = tmp_path / "cache-is-a-file"
    blocked.write_text("not a directory\n")
    m = write_matrix(tmp_path / "m.yaml", "axes: {ic_mode: [dual]}\n")
    r = run_cli(["run", str(m)], tmp_path / "out", env={"CASKIT_CACHE": str(blocked)})
    assert r.rc == 3, r.stderr[-2000:]
    (c,) = r.results["cells"]
    assert c["verdict"] == "ERROR" and "guest kit could not be built" in c["reason"]


# -- 5. a hang is FAIL with the host's view; what is ours stays ERROR ------------------------------

def test_a_guest_that_hangs_after_its_kernel_started_is_fail_with_forensics(tmp_path, facts, kit):
    # A boot timeout far below the boot time: the kernel prints, QEMU runs, no ready marker.
    rec = run(tmp_path, facts, kit, cell(), "hangtest", boot=2)
    assert rec["verdict"] == "FAIL", rec["reason"]
    assert "the guest hung" in rec["reason"] and "QEMU alive" in rec["reason"]
    forensics = (tmp_path / rec["logs"]["forensics"]).read_text()
    assert "## info pic" in forensics and "## info registers -a" in forensics
    assert "DECR" in forensics and "TB" in forensics  # the guest clock's registers, per vCPU
    assert "## last console lines" in forensics and "Linux" in forensics
    # The host's side: where each QEMU thread waits (TCG's vCPU threads run or sleep; none is gone).
    assert "## QEMU on host local (pid " in forensics
    assert re.search(r"^thread \d+ \(qemu-system-ppc[^)]*\): [RSD] ", forensics, re.M), forensics


def test_a_guest_that_ran_another_init_is_the_kits_error(tmp_path, facts, kit):
    c = Cell("local", cell().axes, append="rdinit=/bin/sh")
    rec = run(tmp_path, facts, kit, c, "initTest", boot=20)
    assert rec["verdict"] == "ERROR", rec["reason"]
    assert "ran /bin/sh as its first process, not the kit's /init" in rec["reason"]


def silent_kernel(path):
    """A little-endian ppc64 ELF "kernel" of branch-to-self instructions: it boots and never
    prints (no firmware banner under VOF, no kernel line)."""
    import struct
    code = bytes.fromhex("00000048") * 1024
    base = 0xc000000000000000
    header = b"\x7fELF" + bytes([2, 1, 1, 0]) + bytes(8)
    header += struct.pack("<HHIQQQIHHHHHH", 2, 21, 1, base, 64, 0, 2, 64, 56, 1, 64, 0, 0)
    header += struct.pack("<IIQQQQQQ", 1, 5, 0x1000, base, 0, len(code), len(code), 0x1000)
    path.write_bytes(header + bytes(0x1000 - len(header)) + code)
    return path


def test_a_guest_that_prints_nothing_is_error(tmp_path, facts):
    from harness.kit import user_kit
    kernel = silent_kernel(tmp_path / "silent.elf")
    rec = run(tmp_path, facts, user_kit(str(kernel), None), cell(), "silenttest", boot=8)
    assert rec["verdict"] == "ERROR", rec["reason"]
    assert "nothing came from the guest" in rec["reason"]


def test_a_kernel_qemu_cannot_load_is_the_kits_error(tmp_path, facts):
    from harness.kit import user_kit
    junk = tmp_path / "junk.bin"
    junk.write_bytes(b"\0" * 4096)
    rec = run(tmp_path, facts, user_kit(str(junk), None), cell(), "junktest")
    assert rec["verdict"] == "ERROR" and "cannot load the guest kit" in rec["reason"], rec["reason"]


@pytest.mark.parametrize("sig,verdict,words", [
    (signal.SIGSEGV, "FAIL", "crashed (SIGSEGV)"),   # QEMU's own fault: it is under test too
    (signal.SIGABRT, "FAIL", "crashed (SIGABRT)"),
    (signal.SIGTERM, "ERROR", "stopped from outside (SIGTERM"),  # someone stopped it
])
def test_qemu_ending_mid_boot(tmp_path, facts, kit, sig, verdict, words):
    c = cell()
    run_id = f"sig{int(sig)}"
    log = tmp_path / "cells" / c.id / "console.log"
    booting = lambda: log.exists() and log.stat().st_size > 0  # noqa: E731
    with KillWhen(run_tag(run_id, c.id), booting, sig=sig) as k:
        rec = run(tmp_path, facts, kit, c, run_id)
    assert k.killed, "the guest was never seen booting"
    assert rec["verdict"] == verdict, rec["reason"]
    assert words in rec["reason"]


# -- 4. the kernel's log is read at the end of every cell -------------------------------------------

def _guest_step(name: str, command: str, monkeypatch) -> None:
    """A workload that runs one guest command (what a real defect would do to the kernel log)."""
    def step(g):
        g.sh(command, check=False)
        return {}
    monkeypatch.setitem(workloads.REGISTRY, name, Workload(name, "test step", step))


def test_a_kernel_finding_fails_a_cell_that_otherwise_passed(tmp_path, facts, kit, monkeypatch):
    line = "watchdog: BUG: soft lockup - CPU#0 stuck for 22s! [swapper/0:0]"
    _guest_step("kmsg", f"echo '{line}' > /dev/kmsg", monkeypatch)
    rec = run(tmp_path, facts, kit, cell(["kmsg"]), "kmsgtest")
    assert rec["verdict"] == "FAIL", rec["reason"]
    assert "soft-lockup" in rec["reason"] and line in rec["reason"]
    assert rec["observed"]["kernel_findings"][0]["kind"] == "soft-lockup"


def test_a_kernel_warning_is_recorded_not_failed(tmp_path, facts, kit, monkeypatch):
    line = "WARNING: CPU: 0 PID: 1 at arch/powerpc/sysdev/xive/common.c:1321 xive_irq_eoi+0x4c/0x90"
    _guest_step("kwarn", f"echo '{line}' > /dev/kmsg", monkeypatch)
    rec = run(tmp_path, facts, kit, cell(["kwarn"]), "kwarntest")
    assert rec["verdict"] == "PASS", rec["reason"]
    assert any(line in w for w in rec["observed"]["kernel_warnings"])


def test_a_panic_during_a_workload_is_fail(tmp_path, facts, kit, monkeypatch):
    _guest_step("crash", "echo c > /proc/sysrq-trigger", monkeypatch)
    rec = run(tmp_path, facts, kit, cell(["crash"]), "panictest")
    assert rec["verdict"] == "FAIL", rec["reason"]
    (w,) = rec["workloads"]
    assert w["verdict"] == "FAIL" and "Kernel panic" in w["reason"]


# -- 7. a domain pin fits the CPU the cells run ------------------------------------------------------

def test_a_domain_pin_fits_a_power9_cell_on_a_build_that_emulates_power10(tmp_path):
    # QEMU 10.0 defaults cap-dawr1=on for its POWER10 default CPU and off for POWER9: a pin made
    # from the default CPU's caps made QEMU refuse the cell ("DAWR1 supported only on POWER10").
    hosts = tmp_path / "hosts.yaml"
    hosts.write_text("hosts:\n  local: {kind: local, slots: 2}\ndomains:\n  qemu10: {hosts: [local], qemu: [backports]}\n")
    m = write_matrix(tmp_path / "m.yaml", "domain: qemu10\naxes: {qemu: [backports], cpu: [POWER9], smp: [1], "
                                          "firmware: [vof]}\n")
    r = run_cli(["run", str(m), "--hosts", str(hosts)], tmp_path / "out")
    assert r.rc == 0, r.stderr[-3000:]
    (c,) = r.results["cells"]
    assert c["verdict"] == "PASS", c["reason"]
    assert "cap-dawr1=off" in c["pinned"] and c["axes"]["cpu_compat"] == "power9"


# -- no process left behind, whatever step fails ----------------------------------------------------

def _raise(exc):
    def f(*a, **k):
        raise exc
    return f


@pytest.mark.parametrize("step", ["after-spawn", "after-qmp", "during-boot", "during-workload", "during-hop"])
def test_no_qemu_is_left_when_a_step_fails(tmp_path, facts, kit, monkeypatch, step):
    c = cell()
    if step == "after-spawn":
        monkeypatch.setattr(LocalHost, "wait_paths", _raise(HostError("injected: host gone while waiting")))
    elif step == "after-qmp":
        from harness.qmp import QmpClient
        real = QmpClient.execute
        monkeypatch.setattr(QmpClient, "execute", lambda self, cmd, **a: (_raise(QmpLost("injected"))()
                                                                         if cmd == "qom-get" else real(self, cmd, **a)))
    elif step == "during-boot":
        from harness.machine import GuestMachine
        monkeypatch.setattr(GuestMachine, "wait_ready", _raise(HostError("injected: console gone")))
    elif step == "during-workload":
        monkeypatch.setitem(workloads.REGISTRY, "boom", Workload("boom", "a harness bug", _raise(RuntimeError("bug"))))
        c = cell(["boom"])
    else:
        monkeypatch.setattr(cellrun.plans.migrate, "migrate", _raise(HostError("injected: SSH dropped mid-hop")))
        c = cell(migration="roundtrip")
    rec = run(tmp_path, facts, kit, c, f"inject-{step}", liveness=2)  # asserts no QEMU of the run is left
    assert rec["verdict"] in ("ERROR", "FAIL"), rec["reason"]
    if step in ("after-spawn", "during-boot", "during-workload", "during-hop"):
        assert rec["verdict"] == "ERROR", rec["reason"]  # ours or the host's, never the system's


# -- 3. a mismatch hop is judged against the model's prediction --------------------------------------

def test_a_destination_that_crashes_is_no_refusal(tmp_path, facts, kit):
    c = cell(migration="mismatch")  # a XIVE guest on dual: first into ic-mode=xics, predicted refused
    run_id = "mm-crash"
    qmp = tmp_path / "cells" / c.id / "qmp.jsonl"
    migrating = lambda: qmp.exists() and '"execute": "migrate"' in qmp.read_text()  # noqa: E731
    ctx = CellContext(c, facts, LocalHost("local", 2), kit, RunStore(tmp_path), run_id,
                      {**config.TIMEOUT_KEYS, "liveness": 3}, max_bandwidth=16 << 20)
    with KillWhen(run_tag(run_id, c.id) + ":B-ic_mode-xics", migrating, delay=0.3, sig=signal.SIGSEGV) as k:
        rec = run_cell(ctx)
    assert_no_qemu_left(run_id)
    assert k.killed, "the destination was never seen migrating"
    hop = rec["migration"]["hops"][0]
    assert hop["expected"] == "refused" and hop["refusal"] is None
    assert "destination-crashed" in hop["symptoms"] and "SIGSEGV" in " ".join(hop["problems"])
    assert rec["verdict"] == "FAIL", rec["reason"]


def test_a_source_that_crashes_while_it_streams_is_fail(tmp_path, facts, kit):
    """QEMU 7.2 under PR KVM dies of SIGSEGV mid-stream (docs/pr-kvm.md): its QMP connection goes
    with it, and that lost connection must not make the cell ERROR. Here the source's own QEMU
    gets the SIGSEGV 0.3 s into a stream throttled to several seconds."""
    c = cell(migration="roundtrip")
    run_id = "src-crash"
    qmp = tmp_path / "cells" / c.id / "qmp.jsonl"
    migrating = lambda: qmp.exists() and '"execute": "migrate"' in qmp.read_text()  # noqa: E731
    ctx = CellContext(c, facts, LocalHost("local", 2), kit, RunStore(tmp_path), run_id,
                      {**config.TIMEOUT_KEYS, "liveness": 3}, max_bandwidth=16 << 20)
    with KillWhen(run_tag(run_id, c.id), migrating, delay=0.3, sig=signal.SIGSEGV, exact=True) as k:
        rec = run_cell(ctx)
    assert_no_qemu_left(run_id)
    assert k.killed, "the source was never seen migrating"
    m = rec["migration"]
    assert m["verdict"] == "FAIL" and "QemuCrashed" in m["reason"] and "SIGSEGV" in m["reason"], m
    assert rec["verdict"] == "FAIL", rec["reason"]


def test_a_source_that_crashes_as_the_migration_starts_is_fail(tmp_path, facts, kit):
    """The same crash before the first hop, as the guest starts its heartbeat and the load kept
    running through the hops (a CI run on the pr host, 2026-12-07: the console closed under
    caskit, which called it ERROR). The source's SIGSEGV comes as `ck-heartbeat` is sent."""
    c = cell(migration="roundtrip")
    run_id = "src-crash-start"
    sent = tmp_path / "cells" / c.id / "console-sent.jsonl"
    starting = lambda: sent.exists() and "ck-heartbeat" in sent.read_text()  # noqa: E731
    ctx = CellContext(c, facts, LocalHost("local", 2), kit, RunStore(tmp_path), run_id,
                      {**config.TIMEOUT_KEYS, "liveness": 3})
    with KillWhen(run_tag(run_id, c.id), starting, sig=signal.SIGSEGV, exact=True) as k:
        rec = run_cell(ctx)
    assert_no_qemu_left(run_id)
    assert k.killed, "the guest never started its heartbeat"
    m = rec["migration"]
    assert not m["hops"] and m["verdict"] == "FAIL", m
    assert "QemuCrashed" in m["reason"] and "SIGSEGV" in m["reason"], m
    assert rec["verdict"] == "FAIL", rec["reason"]


def test_a_refusal_the_model_did_not_predict_is_fail(tmp_path, facts, kit, monkeypatch):
    # Claim QEMU takes a XIVE guest into ic-mode=xics: the real refusal must then be FAIL.
    from harness.migration import plans
    monkeypatch.setattr(plans, "ic_mismatches", lambda source, mode: [("xics", False)])
    rec = run(tmp_path, facts, kit, cell(migration="mismatch"), "mm-unpredicted", liveness=3)
    (hop,) = rec["migration"]["hops"]
    assert hop["expected"] == "accepted" and hop["qmp"]["status"] == "failed"
    assert "the model predicts QEMU takes this stream" in hop["problems"][0]
    assert rec["verdict"] == "FAIL", rec["reason"]


def test_a_predicted_refusal_names_the_destinations_own_words(tmp_path, facts, kit, monkeypatch):
    from harness.migration import plans
    monkeypatch.setattr(plans, "ic_mismatches", lambda source, mode: [("xics", True)])
    monkeypatch.setattr(plans, "mismatch_cases", lambda pc: [("ic_mode-xics", {"axes": {"ic_mode": "xics"}, "refused": True})])
    rec = run(tmp_path, facts, kit, cell(migration="mismatch"), "mm-refused", liveness=3)
    (hop,) = rec["migration"]["hops"]
    assert rec["verdict"] == "PASS", rec["reason"]
    assert "Unknown savevm section" in hop["refusal"] and hop["source_after"]["verdict"] == "PASS"


def test_explain_with_a_real_boot(tmp_path):
    r = run_cli(["explain", "--run", "local", "--out", str(tmp_path / "explain"), "--", "qemu-system-ppc64",
                 "-M", "pseries,ic-mode=dual,x-vof=on", "-cpu", "POWER9", "-smp", "1", "-append", "console=hvc0 xive=off"])
    assert r.rc == 0, r.stderr[-2000:]
    assert re.search(r"^\* tcg-only +guest xive=off +XICS emulated", r.stdout, re.M), r.stdout
    assert "on local (KVM mode tcg-only): predicted XICS emulated [guest-xive-off]; observed xics emulated: PASS" in r.stdout
