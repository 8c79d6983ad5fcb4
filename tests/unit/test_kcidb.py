"""The KCIDB export (harness/report/kcidb.py) on a synthetic run with every verdict, a FLAKY cell
and a cell that never ran: valid against the schema of KCIDB's own `kcidb-io` library, each
verdict mapped as KCIDB reads it, ids stable across a resume, and the CLI's refusals."""

from __future__ import annotations

import copy
import json
import subprocess
import sys

import pytest
from kcidb_io.schema import LATEST

from harness.report.kcidb import KcidbError, kcidb_path, to_kcidb
from harness.results import not_run

from .test_report_pages import make_run

ROOT = __import__("pathlib").Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("kcidb")
    res = make_run(out)
    flaky = copy.deepcopy(res["cells"][0])
    flaky.update(id=flaky["id"] + "-flaky", verdict="FLAKY", reason="passed on attempt 2 (FAIL, PASS)",
                 attempts=[{"attempt": 1, "verdict": "FAIL", "reason": "QemuCrashed: SIGSEGV"},
                           {"attempt": 2, "verdict": "PASS", "reason": "xive as predicted"}])
    missing = not_run(res["cells"][1]["id"] + "-never", {"host": "local", "matrix": "synthetic",
                                                         "axes": res["cells"][1]["axes"]})
    res = {**res, "cells": res["cells"] + [flaky, missing]}
    res["run"] = {**res["run"], "kit": {"key": "k1", "manifest": {
        "kernel_release": "6.1.0-57-powerpc64le",
        "packages": {"linux-image-6.1.0-57-powerpc64le": {"version": "6.1.192-3", "deb": "linux-image.deb",
                                                          "sha256": "c" * 64},
                     "busybox-static": {"version": "1:1.35.0", "sha256": "d" * 64}}}}}
    (out / "results.json").write_text(json.dumps(res))
    return out, res


def test_the_export_is_valid_kcidb_by_kcidbs_own_library(run):
    out, res = run
    data = to_kcidb(res, "caskit_ci", out)
    LATEST.validate_exactly(data)
    assert data["version"]["major"] == LATEST.major
    (co,) = data["checkouts"]
    assert co["id"] == f"caskit_ci:kernel-{'c' * 64}" and co["misc"]["version"] == "6.1.192-3"
    assert {b["checkout_id"] for b in data["builds"]} == {co["id"]}
    assert {t["build_id"] for t in data["tests"]} <= {b["id"] for b in data["builds"]}


def test_each_verdict_maps_to_kcidbs_status(run):
    out, res = run
    data = to_kcidb(res, "caskit_ci", out)
    by_cell = {t["misc"]["cell"]: t for t in data["tests"] if "workload" not in t["misc"]}
    assert len(by_cell) == len(res["cells"])  # one test per cell, the not-run one included
    got = {(c["verdict"], bool(c.get("not_run"))): by_cell[c["id"]]["status"] for c in res["cells"]}
    assert got == {("PASS", False): "PASS", ("FAIL", False): "FAIL", ("ERROR", False): "ERROR",
                   ("SKIP", False): "SKIP", ("XFAIL", False): "PASS", ("FLAKY", False): "FAIL",
                   ("ERROR", True): "MISS"}
    xfail_hop = next(by_cell[c["id"]] for c in res["cells"] if c["verdict"] == "XFAIL" and c["migration"])
    assert xfail_hop["misc"]["known_issues"] == ["k-timers"]
    refusal = next(by_cell[c["id"]] for c in res["cells"] if c["verdict"] == "XFAIL" and not c["migration"])
    assert refusal["misc"]["predicted_by"] == "guest-picks-xive"
    flaky = next(by_cell[c["id"]] for c in res["cells"] if c["verdict"] == "FLAKY")
    assert [a["verdict"] for a in flaky["misc"]["attempts"]] == ["FAIL", "PASS"]
    assert flaky["misc"]["caskit_verdict"] == "FLAKY"


def test_rates_are_numbers_under_their_cell_and_logs_are_files(run):
    out, res = run
    data = to_kcidb(res, "caskit_ci", out, base_url="https://ci.example/runs/1/")
    cell = next(c for c in res["cells"] if c["workloads"])
    t = next(x for x in data["tests"] if x["misc"].get("cell") == cell["id"] and "workload" not in x["misc"])
    subs = {x["misc"]["workload"]: x for x in data["tests"] if x["misc"].get("cell") == cell["id"]
            and "workload" in x["misc"]}
    assert subs["ipi"]["number"] == {"value": 450.0, "unit": "IPI/s"} and subs["ipi"]["path"] == t["path"] + ".ipi"
    assert subs["virtio-net"]["number"]["value"] == 36.0
    assert {f["url"] for f in t["output_files"]} >= {f"https://ci.example/runs/1/cells/{cell['id']}/console.log"}
    assert "CASKIT-READY" in t["log_excerpt"] and t["log_excerpt"].startswith("PASS: xive as predicted")
    assert t["environment"]["misc"]["kvm_mode"] == "tcg-only"


def test_ids_are_stable_across_a_resume_and_paths_are_kcidbs(run):
    out, res = run
    first = to_kcidb(res, "caskit_ci", out)
    resumed = {**res, "run": {**res["run"], "id": "20250102-000000-ffff", "resumed_from": res["run"]["id"]}}
    again = to_kcidb(resumed, "caskit_ci", out)
    assert [t["id"] for t in first["tests"]] == [t["id"] for t in again["tests"]]
    assert len({t["id"] for t in first["tests"]}) == len(first["tests"])
    assert len({kcidb_path(c) for c in res["cells"]}) == len(res["cells"])


def test_a_long_console_is_cut_to_kcidbs_limit(run, tmp_path):
    out, res = run
    c = copy.deepcopy(res["cells"][0])
    (tmp_path / "c.log").write_text("x" * 100 + "\n" + ("y" * 20000 + "\n") * 3)
    c["logs"] = {"console": "c.log"}
    data = to_kcidb({**res, "cells": [c]}, "caskit_ci", tmp_path)
    LATEST.validate_exactly(data)
    assert len(data["tests"][0]["log_excerpt"]) <= 16384


@pytest.mark.parametrize("origin", ["", "CI", "my-ci", "a:b"])
def test_an_origin_kcidb_refuses_is_a_clear_error(run, origin):
    out, res = run
    with pytest.raises(KcidbError, match="origins are lower-case letters, digits and _"):
        to_kcidb(res, origin, out)


def test_the_cli_writes_it_and_refuses_without_an_origin(run, tmp_path):
    out, _ = run
    cli = [sys.executable, "-m", "harness.cli", "report", str(out), "--format", "kcidb"]
    p = subprocess.run(cli + ["--origin", "caskit_ci", "-o", str(tmp_path / "k.json")], cwd=ROOT,
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    assert f"valid against KCIDB schema v{LATEST.major}.{LATEST.minor}" in p.stderr
    LATEST.validate_exactly(json.loads((tmp_path / "k.json").read_text()))
    p = subprocess.run(cli, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert p.returncode == 2 and "--format kcidb needs --origin NAME" in p.stderr
    p = subprocess.run(cli[:-2] + ["--origin", "x"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert p.returncode == 2 and "go with --format kcidb" in p.stderr
    p = subprocess.run(cli + ["--origin", "Bad-Origin"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert p.returncode == 2 and "'Bad-Origin'" in p.stderr and "Traceback" not in p.stderr
