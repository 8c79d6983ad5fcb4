"""The compatibility matrix for publishing (harness/report/export.py), and the bug-report bundle's
summary and archive (harness/bundle.py), on synthetic results."""

from __future__ import annotations

import csv
import io
import json
import tarfile

import pytest

from harness import bundle
from harness.report import export as report_export
from harness.cli import main
from harness.errors import ConfigError

from .test_report_pages import RUN, cells, make_run

WIDTH_LIMIT = 80  # a mail line; only words that cannot break (hashes, ids, the command line) go past it


@pytest.fixture(scope="module")
def results():
    from harness.results import summary

    cs = cells()
    return {"run": RUN, "cells": cs, "summary": summary(cs)}


# ---------------------------------------------------------------- markdown


def table(md: str) -> list[list[str]]:
    return [[c.strip() for c in line.strip("|").split(" | ")] for line in md.splitlines() if line.startswith("|")]


def test_markdown_matrix_has_a_column_group_per_kvm_mode(results):
    md = report_export.markdown(results)
    header, _, *body = table(md)
    assert f"\n|{'---|' * len(header)}\n" in md  # the separator row under the header
    assert [h for h in header if h.startswith("hv-nested:")] == ["hv-nested: ic_mode=xics"]
    assert any(h.startswith("tcg-only: ic_mode=") for h in header) and any(h.startswith("hv: ") for h in header)
    flat = " ".join(" ".join(r) for r in body)
    for word in ("xive (PASS)", "xics (FAIL)", "refused (XFAIL)", "skipped (SKIP)", "error (ERROR)"):
        assert word in flat
    assert all(len(r) == len(header) for r in body)


def test_markdown_escapes_pipes(results):
    bad = json.loads(json.dumps(results))
    bad["cells"][0]["observed"]["mode"] = "x|y"
    md = report_export.markdown(bad)
    assert "x\\|y (PASS)" in md


def test_markdown_names_the_run_and_what_is_fixed(results):
    md = report_export.markdown(results)
    assert md.startswith("Compatibility matrix of caskit run `20250101-000000-abcd` (caskit 0.1.0, 0123456789ab")
    assert "Verdicts: PASS 2, FAIL 2, XFAIL 2, ERROR 1, SKIP 1." in md
    assert "Same in every cell: cpu=POWER9, firmware=vof, qemu=system." in md


# ---------------------------------------------------------------- csv


def test_csv_one_row_per_cell(results):
    rows = list(csv.DictReader(io.StringIO(report_export.csv_text(results))))
    assert [r["id"] for r in rows] == [c["id"] for c in results["cells"]]
    assert list(rows[0]) == list(report_export.CSV_COLUMNS)
    by = {r["id"]: r for r in rows}
    fail = results["cells"][3]
    assert by[fail["id"]]["kvm_mode"] == "hv-nested" and by[fail["id"]]["kernel_irqchip"] == "on"
    assert by[fail["id"]]["verdict"] == "FAIL" and by[fail["id"]]["rule"] == "guest-picks-xive"
    assert by[results["cells"][0]["id"]]["workloads"] == "ipi virtio-net"
    assert by[results["cells"][6]["id"]]["migration"] == "roundtrip"


# ---------------------------------------------------------------- html


def test_html_table_is_standalone_and_escaped(results):
    bad = json.loads(json.dumps(results))
    bad["cells"][0]["observed"]["mode"] = "<b>x</b>"
    html = report_export.html_table(bad)
    assert html.startswith("<!DOCTYPE html>") and "<script" not in html and "&lt;b&gt;x&lt;/b&gt; (PASS)" in html
    assert '<td class="FAIL">xics (FAIL)</td>' in html


def test_worst_verdict_colours_a_shared_slot():
    assert report_export.worst([{"verdict": "PASS"}, {"verdict": "XFAIL"}, {"verdict": "FAIL"}]) == "FAIL"
    assert report_export.worst([]) == ""


def test_unknown_format():
    with pytest.raises(ValueError, match="formats: markdown, csv, html"):
        report_export.export({"cells": []}, "pdf")


# ---------------------------------------------------------------- the CLI


def test_cli_report_format_to_a_file_and_stdout(tmp_path, capsys):
    make_run(tmp_path)
    before = (tmp_path / "report.html").stat().st_mtime_ns
    assert main(["report", str(tmp_path), "--format", "markdown", "-o", str(tmp_path / "m.md")]) == 0
    assert (tmp_path / "m.md").read_text().startswith("Compatibility matrix")
    assert main(["report", str(tmp_path), "--format", "csv"]) == 0
    assert capsys.readouterr().out.startswith("id,host,kvm_mode,")
    assert (tmp_path / "report.html").stat().st_mtime_ns == before  # an export writes nothing in the run
    assert main(["report", str(tmp_path), "-o", "x"]) == 2  # -o alone: a usage error


# ---------------------------------------------------------------- bundle


def test_summary_text_reads_like_a_bug_report(results):
    c = results["cells"][6]  # the migration whose second hop fell silent
    text = bundle.summary_text(c, RUN, ["qemu-system-ppc64", "-machine", "pseries,ic-mode=dual"])
    first, blank, *rest = text.splitlines()
    assert first == ("Subject: [XFAIL] ppc/spapr: TCG pseries ic-mode=dual, smp 1, roundtrip migration: "
                     "hop A2: no heartbeat (QEMU 7.2.22)")
    assert blank == ""
    body = "\n".join(rest)
    for label in ("Verdict:", "Expected:", "Happened:", "Rule:", "Known:", "QEMU:", "Host:", "Guest:", "Run:",
                  "Steps to reproduce:", "bash reproduce.sh KIT_DIR", "qemu-system-ppc64 -machine pseries,ic-mode=dual"):
        assert label in body
    assert "guest-picks-xive (prom_init.c)" in body and "vmlinux  sha256 " + "a" * 64 in body
    long = [line for line in rest if len(line) > WIDTH_LIMIT]
    assert all(line.startswith("  qemu") or "sha256" in line or c["id"] in line for line in long), long


def test_summary_of_a_kernel_finding(results):
    c = results["cells"][3]
    text = bundle.summary_text(c, RUN)
    assert "ic-mode=xics kernel-irqchip=on" in text.splitlines()[0] and "[FAIL]" in text
    assert "KVM mode hv-nested" in text and "(QEMU was not started for this cell)" in text


def test_find_cell(results):
    c = results["cells"][3]
    assert bundle.find_cell(results, c["id"]) is c
    assert bundle.find_cell(results, "nested-hv") is c
    with pytest.raises(ConfigError, match="names 5 cells"):
        bundle.find_cell(results, "local-tcg")
    with pytest.raises(ConfigError, match="no cell"):
        bundle.find_cell(results, "nope")


def test_bundle_archive(tmp_path, capsys):
    res = make_run(tmp_path / "run")
    c = res["cells"][6]
    dest = tmp_path / "b.tar.gz"
    assert main(["bundle", "smp1", "--run", str(tmp_path / "run"), "-o", str(dest)]) == 0
    assert capsys.readouterr().out.startswith("Subject: [XFAIL]")
    with tarfile.open(dest) as tar:
        names = tar.getnames()
        top = f"caskit-{c['id']}"
        assert names[0] == f"{top}/SUMMARY.txt"
        for f in ("result.json", "host-facts.json", "kit.json", "run.json", "qemu-argv.txt", "console.log",
                  "reproduce.sh", "B/heartbeat.log", "A2/qemu-argv.txt"):
            assert f"{top}/{f}" in names
        assert f"{top}/index.html" not in names
        facts = json.loads(tar.extractfile(f"{top}/host-facts.json").read())
        assert facts == {"local": RUN["hosts"]["local"]}
        kit = json.loads(tar.extractfile(f"{top}/kit.json").read())
        assert kit["files"] == [["KERNEL", "vmlinux", "a" * 64], ["INITRD", "initrd.gz", "b" * 64]]
