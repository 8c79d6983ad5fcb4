"""The benches run: each script's `--smoke` (bench/README.md, "Smoke mode"), the smallest real run
of its own code path, as a subprocess the way the README runs it. Each must exit 0, write the
figures it is about (to a file of this test, never bench/results/), and leave no QEMU behind.

The two benches that need an emulated POWER9 KVM host (bench_emulated_hosts.py and
bench_emulated_raw.py) are not run here: their smokes boot an L1 under TCG, about a minute each
on this machine. Both take an L1 that is already up (`--up-host NAME`, `--smoke [RUN_DIR] HOST`),
which is how test_emulated_hosts.py's module L1 can run them."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT
from harness.hosts import tagged_pids
from integration.helpers import assert_no_qemu_left

pytestmark = pytest.mark.guest

BENCH = ROOT / "bench"


def _descendants(pid: int) -> list[int]:
    parent = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                parent[int(d.name)] = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
    out, todo = [], [pid]
    while todo:
        kids = [c for c, pp in parent.items() if pp == todo.pop()]
        out += kids
        todo += kids
    return out


def smoke(script: str, tmp_path: Path, *args: str, timeout: float = 600) -> dict:
    """`python bench/SCRIPT --smoke --json FILE ARGS`: exit 0 and no problems; the figures."""
    out = tmp_path / f"{Path(script).stem}.json"
    p = subprocess.Popen([sys.executable, str(BENCH / script), "--smoke", "--json", str(out), *args], cwd=ROOT,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
                         env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        stdout, stderr = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        # SIGTERM first: the benches unwind (their `finally` stops what they started), then
        # whatever is still there, by PID.
        kids = _descendants(p.pid)
        p.send_signal(signal.SIGTERM)
        try:
            stdout, stderr = p.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            for pid in [p.pid, *kids, *_descendants(p.pid)]:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            stdout, stderr = p.communicate()
        pytest.fail(f"{script} --smoke took more than {timeout:.0f} s: {stdout[-2000:]}{stderr[-2000:]}")
    assert p.returncode == 0, f"{script} --smoke exited {p.returncode}:\n{stdout[-3000:]}\n{stderr[-3000:]}"
    data = json.loads(out.read_text())
    assert data["smoke"] is True
    assert not data["problems"], data["problems"]
    return data


def positive(*xs) -> bool:
    return bool(xs) and all(isinstance(x, (int, float)) and x > 0 for x in xs)


def test_boot_under_load(kit, tmp_path):
    d = smoke("bench_boot_under_load.py", tmp_path)
    (row,) = d["rows"]
    assert (row["firmware"], row["guests"], row["not_ready"]) == ("vof", 1, 0)
    assert positive(*row["to_ready_s"], row["median_s"], row["max_s"])
    assert [pid for t in d["qemu_tags"] for pid in tagged_pids(t)] == []


def test_foundation(kit, tmp_path):
    d = smoke("bench_foundation.py", tmp_path)
    su = d["single"]["summary"]
    assert positive(su["raw_to_ready_s"], su["caskit_to_ready_s"], su["ratio_to_ready"], su["caskit_whole_cell_s"],
                    su["cli_wall_s"], su["cli_cell_duration_s"], su["raw_pair_all_ready_s"],
                    su["raw_qemu_cpu_at_ready_s"], su["caskit_phases_median_s"]["boot_to_ready"])
    assert {k: len(v) for k, v in d["single"]["samples"].items()} == {"raw": 1, "inproc": 1, "cli": 1, "raw_pair": 1}
    assert not d["single"]["inproc_probes_missing"]  # every harness method it times is still there
    assert positive(*d["cli_fixed_costs"].values())
    (run,) = d["matrix"]["runs"].values()
    assert run["exit"] == 0 and [c["verdict"] for c in run["cells"].values()] == ["PASS"]
    assert positive(run["wall_s"], run["cell_duration_median_s"], run["startup_to_first_cell_s"])
    assert d["verify"]["own_qemu_left"] == [] and d["verify"]["still_running"] == []
    assert d["verify"]["tags_checked"] and [p for t in d["verify"]["tags_checked"] for p in tagged_pids(t)] == []


def test_workloads(kit, tmp_path):
    d = smoke("bench_workloads.py", tmp_path)
    assert len(d["rows"]) == 4  # IPI, MSI-X, LSI, virtio-blk
    for row in d["rows"]:
        assert positive(row["xive"]), row
    (rid,) = d["run_ids"]
    assert_no_qemu_left(rid)


def test_migration(kit, tmp_path):
    d = smoke("bench_migration.py", tmp_path)
    (row,) = d["rows"]
    assert row["build"].startswith("backports") and row["mode"] == "xive" and row["verdicts"] == ["PASS"]
    assert len(row["ratio"]) == 2  # the round trip's two hops, each timed by the harness and by QEMU
    assert positive(*row["ratio"], *row["harness_s"], *row["qemu_s"], *row["downtime_ms"], *row["setup_s"])
    (rid,) = d["run_ids"]
    assert_no_qemu_left(rid)


def test_noise(kit, tmp_path):
    d = smoke("bench_noise.py", tmp_path)
    (row,) = d["rows"]
    assert (row["metric"], row["mode"]) == ("ipi.ipis_per_s", "xive")
    assert positive(*row["values"]) and row["band"]["factor"] > 1
    assert d["tripped"] == []  # the run against itself
    (rid,) = d["run_ids"]
    assert_no_qemu_left(rid)


def test_cross_host(kit, tmp_path):
    d = smoke("bench_cross_host.py", tmp_path)
    r = d["rows"]["cross-host"]
    assert r["verdicts"] == ["PASS"] and len(r["ratio"]) == 2
    assert positive(*r["setup_s"], *r["harness_s"], *r["qemu_s"], *r["ratio"], *r["downtime_ms"])
    (rid,) = d["run_ids"]
    assert_no_qemu_left(rid)


def test_pool(kit, tmp_path):
    d = smoke("bench_pool.py", tmp_path)
    (row,) = d["rows"]
    assert row["cells"] == 1  # the matrix's cell, without the members' health checks
    assert positive(row["run_wall_s"], row["cells_per_min"], row["controller_cpu_per_cell_s"])
    (rid,) = d["run_ids"]
    assert_no_qemu_left(rid)
