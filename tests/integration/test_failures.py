"""How caskit reports things going wrong: infrastructure is ERROR, never FAIL; logs are kept;
nothing is left running."""

from __future__ import annotations

import time

import pytest

from conftest import run_cli, write_matrix
from harness import config
from harness import probe
from harness.axes import AXIS_NAMES
from harness.cellrun import CellContext, run_cell, run_tag
from harness.cell import Cell
from harness.hosts import LocalHost
from harness.results import RunStore
from integration.helpers import KillWhen, assert_no_qemu_left, pid_alive

pytestmark = pytest.mark.guest

AXES = dict(accel="tcg", ic_mode="dual", kernel_irqchip="default", cpu="POWER9", cpu_compat="default",
            guest_xive="default", smp=2, firmware="vof", qemu="system")


def one_cell(**kw) -> Cell:
    ax = {**AXES, **kw}
    return Cell("local", tuple((n, ax[n]) for n in AXIS_NAMES))


@pytest.fixture(scope="module")
def facts(tmp_path_factory):
    return probe.probe(config.load_hosts()["local"], tmp_path_factory.mktemp("probe"))


def test_qemu_killed_mid_boot_is_error_with_logs(tmp_path, facts, kit):
    cell = one_cell()
    store = RunStore(tmp_path)
    run_id = "killtest"
    log = store.cell_dir(cell.id) / "console.log"
    # Once the guest has started printing (mid-boot), SIGKILL its QEMU by PID.
    ready = lambda: log.exists() and log.stat().st_size > 0  # noqa: E731
    with KillWhen(run_tag(run_id, cell.id), ready, timeout=60) as k:
        rec = run_cell(CellContext(cell, facts, LocalHost("local", 2), kit, store, run_id, dict(config.TIMEOUT_KEYS)))
    killed = k.killed
    assert killed, "the test never saw the guest boot"
    assert rec["verdict"] == "ERROR", rec["reason"]
    assert rec["observed"]["infra"] is True
    assert rec["observed"]["exit_code"] == -9
    assert "killed from outside (SIGKILL)" in rec["reason"]
    assert (tmp_path / rec["logs"]["console"]).stat().st_size > 0
    assert (tmp_path / rec["logs"]["qemu_stderr"]).exists()
    assert not pid_alive(killed[0])
    assert_no_qemu_left(run_id)


def test_guest_whose_init_is_missing_is_error_naming_the_panic(tmp_path, kit):
    m = write_matrix(tmp_path / "noinit.yaml", """
name: noinit
axes: {ic_mode: [dual], firmware: [vof], smp: [1]}
append: rdinit=/nonexistent
timeouts: {boot: 60}
""")
    r = run_cli(["run", str(m)], tmp_path / "out")
    assert r.rc == 3, r.stderr  # ERROR without FAIL
    (c,) = r.results["cells"]
    assert c["verdict"] == "ERROR"
    assert "Kernel panic" in c["reason"]
    assert "VFS: Unable to mount root" in (r.out / c["logs"]["console"]).read_text(errors="replace")
    assert_no_qemu_left(r.results["run"]["id"])


def test_guest_that_never_reaches_the_prompt_ends_at_its_timeout(tmp_path, kit):
    # /bin/sh as the initramfs init boots fine but never runs caskit's command loop.
    m = write_matrix(tmp_path / "hang.yaml", """
name: hang
axes: {ic_mode: [xics], firmware: [vof], smp: [1]}
append: rdinit=/bin/sh
timeouts: {boot: 15}
""")
    t0 = time.monotonic()
    r = run_cli(["run", str(m)], tmp_path / "out")
    elapsed = time.monotonic() - t0
    assert r.rc == 3, r.stderr
    (c,) = r.results["cells"]
    assert c["verdict"] == "ERROR"  # the kit's /init never ran: ours, not the system's
    assert "ran /bin/sh as its first process, not the kit's /init" in c["reason"]
    assert elapsed < 120  # bounded by the timeout, not by a hang
    console = (r.out / c["logs"]["console"]).read_text(errors="replace")
    assert "CASKIT-READY" not in console and len(console) > 0
    assert_no_qemu_left(r.results["run"]["id"])


@pytest.mark.parametrize("text,key,words", [
    ("axes: {ic_mod: [dual]}\n", "axes.ic_mod", "unknown axis"),
    ("axes: {ic_mode: [dual, xivee]}\n", "axes.ic_mode", "'xivee' is not allowed; allowed values: default, dual, xics, xive"),
    ("axes: {ic_mode: [dual\n", None, "YAML syntax error"),
    ("axes: {smp: [0]}\n", "axes.smp", "not a positive whole number"),
    ("hosts: [farm9]\n", "hosts", "unknown host 'farm9'"),
    ("workloads: [fio]\n", "workloads", "unknown workload 'fio'"),
])
@pytest.mark.parametrize("command", ["run", "matrix"])
def test_bad_matrix_exits_2_naming_file_and_key(tmp_path, text, key, words, command):
    m = write_matrix(tmp_path / "bad.yaml", text)
    r = run_cli([command, str(m)], None, timeout=60)
    assert r.rc == 2
    assert str(m) in r.stderr
    if key:
        assert f": {key}: " in r.stderr
    assert words in r.stderr
    assert "Traceback" not in r.stderr


def test_missing_matrix_lists_the_shipped_ones(tmp_path):
    r = run_cli(["matrix", "no-such-matrix"], None, timeout=60)
    assert r.rc == 2
    assert "quick" in r.stderr and "cas-full" in r.stderr
