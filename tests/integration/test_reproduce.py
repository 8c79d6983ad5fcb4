"""Reproducers, bundles and hang forensics with real guests.

One small run (-n 2): a cell that negotiates XIVE (PASS), one QEMU refuses (ic-mode=xive with
max-cpu-compat=power8: XFAIL), and a 7.2 round trip with no known issues (FAIL: the guest's
timers stop after the hop). Every cell's directory holds reproduce.sh; the PASS and XFAIL ones
run without caskit (env -i PATH=/usr/bin:/bin, only QEMU and the kit's two files) and show the
same mode and the same refusal; the FAIL cell is bundled for a bug report. A cell whose boot
timeout is far too short hangs, and its forensics carry info irq and the SysRq note."""

from __future__ import annotations

import json
import shutil
import subprocess
import tarfile
import time
from pathlib import Path

import pytest

from conftest import run_cli, write_matrix
from harness import config, reproduce as reproduce_mod
from harness.axes import AXIS_NAMES
from harness.cell import Cell
from harness.cellrun import CellContext, run_cell
from harness import probe
from harness.hosts import LocalHost
from harness.kit import cache_root
from harness.report.cells import write_cell_pages
from harness.results import RunStore
from integration.helpers import assert_no_qemu_left

pytestmark = pytest.mark.guest

MIGRATION = """
name: repro-mig
axes: {ic_mode: [dual], smp: [1], firmware: [vof]}
migration: [roundtrip]
timeouts: {liveness: 3}
"""
CAS = """
name: repro-cas
axes: {ic_mode: [dual, xive], cpu_compat: [default, power8], smp: [1], firmware: [vof]}
exclude: [{ic_mode: dual, cpu_compat: power8}, {ic_mode: xive, cpu_compat: default}]
"""
REBOOT = """
name: repro-reboot
axes: {ic_mode: [dual], smp: [1], firmware: [vof]}
workloads: [reboot]
"""
CLEAN_PATH = "/usr/bin:/bin"


@pytest.fixture(scope="module")
def run(tmp_path_factory, kit):
    d = tmp_path_factory.mktemp("repro")
    none = d / "none.yaml"
    none.write_text("issues: []\n")
    t0 = time.monotonic()
    r = run_cli(["run", str(write_matrix(d / "mig.yaml", MIGRATION)), str(write_matrix(d / "cas.yaml", CAS)),
                 str(write_matrix(d / "reboot.yaml", REBOOT)), "-n", "2", "--known-issues", str(none)], d / "out")
    print(f"the run took {time.monotonic() - t0:.1f}s")
    assert_no_qemu_left(r.results["run"]["id"])
    return r


def by_matrix(r, name: str) -> list[dict]:
    return [c for c in r.results["cells"] if c["matrix"] == name]


@pytest.fixture(scope="module")
def kit_dir(tmp_path_factory, kit) -> Path:
    """The kit's kernel and initramfs alone in a directory, as a host that never had caskit has them."""
    d = tmp_path_factory.mktemp("kit")
    for f in (kit.kernel, kit.initrd):
        shutil.copy(f, d / f.name)
    return d


def reproduce(script: Path, kit_dir: Path, work: Path, timeout: float = 180) -> subprocess.CompletedProcess:
    """The script run the way a stranger would: a copy of it, a clean environment, nothing of ours."""
    alone = work.parent / f"{work.name}-reproduce.sh"
    shutil.copy(script, alone)
    t0 = time.monotonic()
    p = subprocess.run(["env", "-i", f"PATH={CLEAN_PATH}", f"WORK={work}", "bash", str(alone), str(kit_dir)],
                       capture_output=True, text=True, timeout=timeout, cwd=work.parent)
    print(f"{script.parent.name}: reproduce.sh exit {p.returncode} in {time.monotonic() - t0:.1f}s\n{p.stdout}{p.stderr}")
    return p


def test_the_run_is_what_the_tests_below_need(run):
    assert run.rc == 1, run.stdout[-2000:]
    (mig,) = by_matrix(run, "repro-mig")
    assert mig["verdict"] == "FAIL", mig["reason"]
    verdicts = sorted(c["verdict"] for c in by_matrix(run, "repro-cas"))
    assert verdicts == ["PASS", "XFAIL"]
    (reboot,) = by_matrix(run, "repro-reboot")
    assert reboot["verdict"] == "PASS", reboot["reason"]


def test_every_cell_has_its_reproducer(run):
    for c in run.results["cells"]:
        p = run.out / c["logs"]["reproduce"]
        assert p == run.out / "cells" / c["id"] / "reproduce.sh" and p.stat().st_mode & 0o111
        text = p.read_text()
        assert str(run.out) not in text and str(cache_root()) not in text.split("# -- each machine")[1]
        subprocess.run(["bash", "-n", str(p)], check=True)


def test_a_pass_cell_reproduces_its_mode_without_caskit(run, kit_dir, tmp_path):
    (c,) = [c for c in by_matrix(run, "repro-cas") if c["verdict"] == "PASS"]
    p = reproduce(run.out / c["logs"]["reproduce"], kit_dir, tmp_path / "work")
    assert p.returncode == 0, p.stdout + p.stderr
    assert "A: the guest negotiated XIVE (interrupt chips: XIVE-IPI XIVE-IRQ" in p.stdout
    assert "byte 23 of ibm,arch-vec-5-platform-support: 0x80); QEMU's info pic: xive" in p.stdout
    assert p.stdout.rstrip().endswith("reproduce: REPRODUCED")
    assert (tmp_path / "work" / "A" / "console.log").read_text().count("CASKIT-READY") == 1


def test_a_failure_that_does_not_recur_is_not_reproduced_by_the_same_mode(run, kit_dir, tmp_path):
    # The same cell, as if caskit had seen its guest kernel log an Oops: a healthy boot into the
    # same mode is no reproduction of that failure (issue 21 item 11).
    (c,) = [c for c in by_matrix(run, "repro-cas") if c["verdict"] == "PASS"]
    failed = {**c, "verdict": "FAIL", "reason": "xive as predicted, but the guest kernel logged oops",
              "observed": {**c["observed"], "kernel_findings": [{"kind": "oops", "line": "Oops: Kernel access of bad area"}]}}
    out = tmp_path / "out"
    shutil.copytree(run.out / "cells" / c["id"], out / "cells" / c["id"])
    script = reproduce_mod.write_from_run(out, run.results["run"], failed)
    p = reproduce(script, kit_dir, tmp_path / "work")
    assert p.returncode == 1, p.stdout + p.stderr
    assert "caskit recorded: mode xive; kernel oops" in p.stdout and "kernel log findings: none" in p.stdout
    assert "DIFFERENT" in p.stdout and "REPRODUCED" not in p.stdout


def test_a_reboot_cell_replays_its_resets_and_its_switch_to_xics(run, kit_dir, tmp_path):
    """The reboot workload acts through QMP (qom-set of the kernel command line, system_reset):
    the replay sends those in their place among the guest commands, and the guest boots as many
    times, once of them with xive=off (XICS), as it did under caskit."""
    (c,) = by_matrix(run, "repro-reboot")
    sent = [json.loads(line)["send"]["execute"] for line in (run.out / "cells" / c["id"] / "qmp.jsonl").read_text().splitlines()
            if "send" in json.loads(line)]
    resets = sent.count("system_reset")
    assert resets >= 2 and "qom-set" in sent
    p = reproduce(run.out / c["logs"]["reproduce"], kit_dir, tmp_path / "work", timeout=300)
    assert p.returncode == 0, p.stdout + p.stderr
    assert p.stdout.count("A: ready again after the reset") == resets
    console = (tmp_path / "work" / "A" / "console.log").read_text(errors="replace")
    assert console.count("CASKIT-READY") == 1 + resets
    assert any("xive=off" in line for line in console.splitlines() if "Kernel command line:" in line)
    assert "A: the guest negotiated XIVE" in p.stdout  # switched back, as caskit left it


def test_an_expected_refusal_reproduces_qemus_words(run, kit_dir, tmp_path):
    (c,) = [c for c in by_matrix(run, "repro-cas") if c["verdict"] == "XFAIL"]
    p = reproduce(run.out / c["logs"]["reproduce"], kit_dir, tmp_path / "work")
    assert p.returncode == 0, p.stdout + p.stderr
    assert "A: QEMU refused: XIVE-only machines require a POWER9 CPU" in p.stdout
    assert "caskit recorded: refused" in p.stdout and "REPRODUCED" in p.stdout


def test_a_kit_that_is_not_the_one_recorded_is_refused(run, tmp_path):
    (c,) = [c for c in by_matrix(run, "repro-cas") if c["verdict"] == "PASS"]
    bad = tmp_path / "kit"
    bad.mkdir()
    (bad / "vmlinux").write_bytes(b"another kernel")
    p = reproduce(run.out / c["logs"]["reproduce"], bad, tmp_path / "work", timeout=30)
    assert p.returncode == 2 and "no file with SHA-256" in p.stderr


def test_the_failing_migration_bundles_for_a_bug_report(run, tmp_path):
    (c,) = by_matrix(run, "repro-mig")
    dest = tmp_path / "bug.tar.gz"
    r = run_cli(["bundle", c["id"][-12:], "--run", str(run.out), "-o", str(dest)])
    assert r.rc == 0, r.stderr
    assert r.stdout.startswith("Subject: [FAIL] ppc/spapr: TCG pseries ic-mode=dual, smp 1, roundtrip migration: hop ")
    with tarfile.open(dest) as tar:
        names = tar.getnames()
        top = f"caskit-{c['id']}"
        assert names[0] == f"{top}/SUMMARY.txt"
        summary = tar.extractfile(names[0]).read().decode()
        for f in ("result.json", "reproduce.sh", "qemu-argv.txt", "console.log", "qmp.jsonl", "heartbeat.log",
                  "B/qemu-argv.txt", "B/heartbeat.log", "host-facts.json", "kit.json"):
            assert f"{top}/{f}" in names, f
        kit = json.loads(tar.extractfile(f"{top}/kit.json").read())
    assert "QEMU:      7.2" in summary and "Unexplained: hop " in summary and "Rule:      guest-picks-xive" in summary
    assert [name for _, name, _ in kit["files"]] == ["vmlinux", "initrd.gz"]
    # Its page shows the hop with the guest's heartbeat, and QMP's exchange.
    page = (run.out / "cells" / c["id"] / "index.html").read_text()
    assert 'class="hop FAIL"' in page and '<figure class="chart"><svg' in page and "-&gt; {&#34;execute&#34;" in page


@pytest.fixture(scope="module")
def facts(tmp_path_factory):
    return probe.probe(config.load_hosts()["local"], tmp_path_factory.mktemp("probe"))


def test_a_hang_keeps_info_irq_and_says_why_no_backtrace(tmp_path, facts, kit):
    axes = dict(accel="tcg", ic_mode="dual", kernel_irqchip="default", cpu="POWER9", cpu_compat="default",
                guest_xive="default", smp=1, firmware="vof", qemu="system")
    cell = Cell("local", tuple((n, axes[n]) for n in AXIS_NAMES))
    store = RunStore(tmp_path)
    rec = run_cell(CellContext(cell, facts, LocalHost("local", 2), kit, store, "hangrepro",
                               {**config.TIMEOUT_KEYS, "boot": 2}))
    assert_no_qemu_left("hangrepro")
    assert rec["verdict"] == "FAIL" and "the guest hung" in rec["reason"], rec["reason"]
    forensics = (tmp_path / rec["logs"]["forensics"]).read_text()
    assert "## info irq\nIRQ statistics not available for pseries-" in forensics
    assert "## sysrq l, w (guest backtraces)\n(not taken: the guest's shell never came up" in forensics
    assert "hang" in (tmp_path / rec["logs"]["reproduce"]).read_text().split("RECORDED=")[1].splitlines()[0]
    results = {"run": {"id": "hangrepro", "start": "", "hosts": {}}, "cells": [rec]}
    (page,) = write_cell_pages(tmp_path, results, lambda c: "tcg-only")
    html = page.read_text()
    assert "<h2 id=\"forensics\">Hang forensics</h2>" in html and "<h3>info irq</h3>" in html
    assert "<h3>info registers -a</h3>" in html
