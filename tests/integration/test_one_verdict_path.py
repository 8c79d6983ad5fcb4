"""Issue 21: failures the farm features made green, or misfiled, with real guests and real QEMUs
(a wrapper script around QEMU is the fault injector where QEMU itself must misbehave)."""

from __future__ import annotations

import os
import signal
import time
from dataclasses import replace

import pytest

from conftest import run_cli, write_matrix
from harness.cell import Cell
from harness.cellrun import run_tag
from harness.hosts import tagged_pids
from integration.helpers import pid_alive
from integration.test_verdict_integrity import _guest_step, cell, facts, run  # noqa: F401 (facts: a fixture)

pytestmark = pytest.mark.guest

SOFT_LOCKUP = "watchdog: BUG: soft lockup - CPU#0 stuck for 22s! [swapper/0:0]"


# -- 1. an XFAIL hop does not stop the kernel-log check ---------------------------------------------

def test_an_oops_before_a_migration_fails_the_cell_whatever_the_hop(tmp_path, facts, kit, monkeypatch):
    # On QEMU 7.2 a TCG round trip meets its known guest-timer defect (XFAIL): the soft lockup
    # the guest logged during its workloads, before the hop, must still make the cell FAIL.
    from harness import config
    from harness.cellrun import CellContext, run_cell
    from harness.hosts import LocalHost
    from harness.migration import known_issues
    from harness.results import RunStore
    from integration.helpers import assert_no_qemu_left

    _guest_step("kmsg", f"echo '{SOFT_LOCKUP}' > /dev/kmsg", monkeypatch)
    ctx = CellContext(cell(["kmsg"], migration="roundtrip", smp=2), facts, LocalHost("local", 2), kit,
                      RunStore(tmp_path), "xfailhop", {**config.TIMEOUT_KEYS, "liveness": 5},
                      known_issues=known_issues.load())
    rec = run_cell(ctx)
    assert_no_qemu_left("xfailhop")
    # The hop itself is the known 7.2 defect (XFAIL): the cell would be XFAIL without the log.
    assert rec["migration"]["verdict"] == "XFAIL", rec["migration"]["reason"]
    assert rec["verdict"] == "FAIL", rec["reason"]
    assert "soft-lockup" in rec["reason"] and SOFT_LOCKUP in rec["reason"]


# -- 2. a crash is not the predicted refusal ------------------------------------------------------

def _wrapper(tmp_path, body: str):
    w = tmp_path / "qemu-wrapper"
    w.write_text(f"#!/bin/sh\n{body}\nexec /usr/bin/qemu-system-ppc64 \"$@\"\n")
    w.chmod(0o755)
    hosts = tmp_path / "hosts.yaml"
    hosts.write_text(f"hosts:\n  local:\n    kind: local\n    slots: 2\n    qemu: {{wrapped: {{binary: {w}}}}}\n")
    return hosts


@pytest.mark.parametrize("ending,words", [("kill -ABRT $$", "SIGABRT"), ("kill -SEGV $$", "SIGSEGV"), ("exit 134", "exit 134")])
def test_a_qemu_that_prints_the_predicted_refusal_and_then_crashes_is_fail(tmp_path, ending, words):
    # ic-mode=xive under POWER8 compatibility: the model predicts QEMU's refusal at start.
    hosts = _wrapper(tmp_path, 'case " $* " in *max-cpu-compat=power8*)\n'
                               '  echo "qemu-system-ppc64: XIVE-only machines require a POWER9 CPU" >&2\n'
                               f'  {ending};;\nesac')
    m = write_matrix(tmp_path / "m.yaml", "axes: {qemu: [system, wrapped], ic_mode: [xive], cpu_compat: [power8], "
                                          "firmware: [vof], smp: [1]}\n")
    r = run_cli(["run", str(m), "--hosts", str(hosts)], tmp_path / "out")
    by_build = {c["axes"]["qemu"]: c for c in r.results["cells"]}
    assert by_build["system"]["verdict"] == "XFAIL", by_build["system"]["reason"]  # the real, clean refusal
    crashed = by_build["wrapped"]
    assert crashed["verdict"] == "FAIL", crashed["reason"]
    assert "did not exit cleanly" in crashed["reason"] and words in crashed["reason"]
    assert r.rc == 1


# -- 3. QEMU gone between two console commands --------------------------------------------------

def _kill_own_qemu(run_id: str, c, sig: int, monkeypatch) -> None:
    """A workload that has its own QEMU die by `sig`, then talks to the guest again."""
    from harness import workloads
    from harness.workloads.base import Workload

    def step(g):
        (pid,) = tagged_pids(run_tag(run_id, c.id))
        os.kill(pid, sig)
        deadline = time.monotonic() + 20
        while pid_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)  # another process's end: nothing to wait on but its /proc entry
        g.sh("echo still there?")
        return {}
    monkeypatch.setitem(workloads.REGISTRY, "die", Workload("die", "QEMU dies under the workload", step))


@pytest.mark.parametrize("sig,verdict,words", [
    (signal.SIGABRT, "FAIL", "crashed (SIGABRT)"),
    (signal.SIGKILL, "ERROR", "killed from outside (SIGKILL)"),
])
def test_qemu_gone_between_two_console_commands(tmp_path, facts, kit, monkeypatch, sig, verdict, words):
    c = cell(["die"])
    run_id = f"gone{int(sig)}"
    _kill_own_qemu(run_id, c, sig, monkeypatch)
    rec = run(tmp_path, facts, kit, c, run_id)
    assert rec["verdict"] == verdict, rec["reason"]
    assert words in rec["reason"] and "harness error" not in rec["reason"]


# -- 7. a host that must offer KVM and does not is ERROR, not SKIP -----------------------------------

def test_a_host_the_inventory_says_has_kvm_but_has_none_is_error(tmp_path):
    hosts = tmp_path / "hosts.yaml"
    hosts.write_text("hosts:\n  local:\n    kind: local\n    slots: 2\n    kvm: true\n")
    m = write_matrix(tmp_path / "m.yaml", "axes: {accel: [kvm], ic_mode: [dual]}\n")
    r = run_cli(["run", str(m), "--hosts", str(hosts)], tmp_path / "out")
    (c,) = r.results["cells"]
    assert (r.rc, c["verdict"]) == (3, "ERROR"), (c["reason"], r.stderr[-1500:])
    assert "must offer KVM" in c["reason"] and "kvm: true" in c["reason"]
    # The same host without the claim: the cell cannot be offered, by the host's facts (SKIP).
    hosts.write_text("hosts:\n  local:\n    kind: local\n    slots: 2\n")
    r = run_cli(["run", str(m), "--hosts", str(hosts)], tmp_path / "out2")
    assert (r.rc, r.results["cells"][0]["verdict"]) == (0, "SKIP")


# -- 8. the kernel log of every boot, all of it ------------------------------------------------

def test_a_finding_in_a_boot_that_a_reset_ends_is_read(tmp_path, facts, kit, monkeypatch):
    # The reboot workload's first boot logs a soft lockup, then resets three times: the log of
    # that boot is gone by the end of the cell, so it must be read before the first reset.
    from harness import workloads
    real = workloads.REGISTRY["reboot"]

    def lockup_then_reboot(g):
        g.sh(f"echo '{SOFT_LOCKUP}' > /dev/kmsg")
        return real.run(g)
    monkeypatch.setitem(workloads.REGISTRY, "reboot", replace(real, run=lockup_then_reboot))
    rec = run(tmp_path, facts, kit, cell(["reboot"], ic_mode="xics"), "rebootlog")
    assert [w["verdict"] for w in rec["workloads"]] == ["PASS"], rec["workloads"]
    assert rec["verdict"] == "FAIL" and "soft-lockup" in rec["reason"], rec["reason"]


def test_boot_lines_the_console_did_not_show_are_read(tmp_path, facts, kit, monkeypatch):
    # `loglevel=1` keeps all but emergencies off the console during the boot: the kernel log the
    # harness judges must still have them (ck-kmsg sends the boot's lines above the console's level).
    from harness import workloads
    from harness.workloads.base import Workload

    def kmsg(g):
        # The boot's debug-level lines (<7>, facility 0), as /init kept the log.
        debug = g.sh("sed -n 's/^<7>//p' /tmp/ck-kmsg-console").output
        return {"kmsg": g.sh("ck-kmsg").output, "debug": debug}
    monkeypatch.setitem(workloads.REGISTRY, "kmsg-read", Workload("kmsg-read", "ck-kmsg's output", kmsg))
    c = Cell("local", cell().axes, ("kmsg-read",), append="loglevel=1")
    rec = run(tmp_path, facts, kit, c, "loglevel")
    assert rec["verdict"] == "PASS", rec["reason"]
    console = (tmp_path / rec["logs"]["console"]).read_text()
    got = rec["workloads"][0]["metrics"]
    assert "Linux version" not in console.split("CASKIT-READY")[0]  # the console was quiet...
    assert "Linux version" in got["kmsg"]  # ...and the log read has it (a notice)
    # ...but not the boot's debug lines, which nothing the verdict reads is logged at.
    debug = [x.strip() for x in got["debug"].splitlines() if x.strip()]
    assert debug, "the boot logged no debug-level line to check against"
    assert not [x for x in debug if x in got["kmsg"]], got["kmsg"][-2000:]


# -- 10. --resume reuses only what is unchanged by content --------------------------------------

def test_resume_reruns_a_cell_whose_qemu_changed_but_kept_its_version_line(tmp_path):
    hosts = _wrapper(tmp_path, "")  # the same QEMU behind a script: --version says the same
    m = write_matrix(tmp_path / "m.yaml", "axes: {qemu: [wrapped], ic_mode: [xics], firmware: [vof], smp: [1]}\n")
    out = tmp_path / "out"
    first = run_cli(["run", str(m), "--hosts", str(hosts)], out)
    (c1,) = first.results["cells"]
    assert (first.rc, c1["verdict"]) == (0, "PASS"), c1["reason"]
    w = tmp_path / "qemu-wrapper"
    w.write_text(w.read_text().replace("#!/bin/sh\n", "#!/bin/sh\n# rebuilt with a patch\n"))
    resumed = run_cli(["run", str(m), "--hosts", str(hosts), "--resume"], out)
    (c2,) = resumed.results["cells"]
    assert c2["qemu_version"] == c1["qemu_version"]
    assert "QEMU build wrapped changed by content" in c2.get("rerun_because", ""), c2.get("rerun_because")
    assert c2["started"] != c1["started"]
