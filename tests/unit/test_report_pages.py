"""The report's pages on a synthetic run shaped like a real one (several hosts and KVM modes, every
verdict, workload rates in both modes, a migration with heartbeat logs, a hang's forensics):
report.html's filters data, per-host summary and charts; each cell's page; the history hook; the
progress line. `make_run` is also what the browser test opens (tests/integration)."""

from __future__ import annotations

import json
import re
import sys
import types
from pathlib import Path

import pytest

from harness.report import cell_history as report_history, cells as report_cells, figures as report_figures
from harness.report import overview as report_overview
from harness.pytest_plugin import progress_line
from harness.report import html_report, write_reports
from harness.report.layout import kvm_mode
from harness.results import summary

from .factories import make_cell

RUN = {"id": "20250101-000000-abcd", "start": "2025-01-01T00:00:00Z", "end": "2025-01-01T00:05:00Z",
       "caskit_version": "0.1.0", "git_sha": "0123456789abcdef0123", "matrices": [{"name": "synthetic"}],
       "timeouts": {"boot": 90, "command": 30, "liveness": 5},
       "hosts": {"local": {"kvm_mode": "tcg-only", "arch": "x86_64", "cpu": "Xeon"},
                 "nested-hv": {"kvm_mode": "hv-nested", "arch": "ppc64le", "cpu": "POWER9"},
                 "powernv9": {"kvm_mode": "hv", "arch": "ppc64le", "cpu": "POWER9"}},
       "kit": {"key": "k1", "kernel": "/kits/k1/vmlinux", "initrd": "/kits/k1/initrd.gz",
               "manifest": {"files": {"vmlinux": "a" * 64, "initrd.gz": "b" * 64}}}}
T0 = 1000.0  # host monotonic time of the synthetic migration's first `migrate`


def _observed(mode=None, error=None, stage=None, **kw) -> dict:
    guest = {"mode": mode, "chips": [f"{(mode or 'xics').upper()}-IPI"], "ipi_chip": None, "platform_support": "0x80",
             "ic_compatible": [], "mode_from_chips": mode, "mode_from_dt": mode, "mode_from_dmesg": mode,
             "dmesg_xive": [], "spurious": 0} if mode else None
    return {"mode": mode, "platform_support": "0x80" if mode else None, "error": error, "stage": stage,
            "infra": False, "guest": guest, "host": {"mode": mode, "irqchip": "emulated", "configured_ic_mode": "dual"}
            if mode else None, "exit_code": 0, "log_excerpt": None, "forensics": None, "qemu_warnings": [],
            "error_kind": None, "kernel_findings": [], "kernel_warnings": [], **kw}


def _record(verdict, reason, observed, *, host="local", expected_mode="xive", workloads=(), migration=None,
            expected_error=None, **axes) -> dict:
    c = make_cell(host, matrix="synthetic", **axes)
    return {**c.to_dict(), "expected": {"mode": expected_mode, "rule": "guest-picks-xive", "source": "prom_init.c",
                                        "error": expected_error, "stage": "qemu-start" if expected_error else None,
                                        "byte23": "0x80", "irqchip": "emulated", "warning": None, "skip": None,
                                        "blocked": None, "notes": []},
            "observed": observed, "verdict": verdict, "reason": reason, "duration_s": 3.5,
            "started": "2025-01-01T00:00:01Z", "qemu_version": "7.2.22", "kit": "k1", "logs": {},
            "workloads": list(workloads), "migration": migration}


def _rates(ipi: float, net: float) -> list[dict]:
    return [{"name": "ipi", "verdict": "PASS", "reason": "ok", "metrics": {"ipis_per_s": ipi, "ipi_delta": {"0": 3}}},
            {"name": "virtio-net", "verdict": "PASS", "reason": "ok",
             "metrics": {"msix": {"irqs_per_s": net, "sent": 40}, "lsi": {"irqs_per_s": net / 2, "sent": 40}}}]


def _hop(name, src, dst, t_migrate, *, beats, verdict="PASS", known=None, symptoms=()) -> dict:
    return {"name": name, "source": src, "destination": dst, "uri": f"unix:/tmp/x/{dst}.sock",
            "source_host": "local", "destination_host": "local", "source_build": "system 7.2.22",
            "destination_build": "system 7.2.22",
            "qmp": {"status": "completed", "downtime_ms": 30 if verdict == "PASS" else 40, "total_time_ms": 500},
            "liveness": {"beats": beats, "first_beat_s": 0.1 if beats else None, "seq_gaps": [],
                         "max_silence_after_first_s": 0.3},
            "kernel_log": [], "mode_before": {"guest": "xive", "host": "xive"}, "mode_after": {},
            "destination_alive": True, "source_alive": True, "harness_s": 0.5, "t_migrate": t_migrate,
            "window_s": 5.0, "window_wall": [1.0, 6.0], "problems": [] if verdict == "PASS" else ["no heartbeat within 5s"],
            "infra": [], "symptoms": list(symptoms), "verdict": verdict, "known_issue": known,
            "unexplained": [] if known or verdict == "PASS" else ["no-heartbeat"]}


def cells() -> list[dict]:
    fail = _record("FAIL", "guest kernel log: soft lockup", _observed("xics", kernel_findings=[
        {"kind": "soft-lockup", "line": "watchdog: BUG: soft lockup - CPU#1 stuck <22s>"}],
        kernel_warnings=["WARNING: CPU: 0 PID: 1 at arch/powerpc/sysdev/xive/common.c:1321"]),
        host="nested-hv", accel="kvm", ic_mode="xics", kernel_irqchip="on", expected_mode="xics")
    mig = {"plan": "roundtrip", "verdict": "XFAIL", "reason": "hop A2: no heartbeat [known issue k-timers]",
           "known_issues": ["k-timers"], "no_longer_reproduces": [],
           "hops": [_hop("B", "A", "B", T0, beats=24), _hop("A2", "B", "A2", T0 + 10, beats=0, verdict="FAIL",
                                                         known="k-timers", symptoms=["no-heartbeat"])]}
    return [
        _record("PASS", "xive as predicted", _observed("xive"), workloads=_rates(450, 36), ic_mode="dual"),
        _record("PASS", "xics as predicted", _observed("xics"), workloads=_rates(400, 30), ic_mode="dual",
                guest_xive="off", expected_mode="xics"),
        _record("XFAIL", "failed at qemu-start as predicted",
                _observed(None, "XIVE-only machines require a POWER9 CPU", "qemu-start", error_kind="QemuRefused",
                          exit_code=1), ic_mode="xive", cpu_compat="power8", expected_mode=None,
                expected_error="XIVE-only machines require a POWER9 CPU"),
        fail,
        _record("ERROR", "host powernv9 unreachable", _observed(None, "host powernv9 unreachable: ssh", None,
                infra=True), host="powernv9", accel="kvm", ic_mode="dual", kernel_irqchip="off"),
        _record("SKIP", "host has no in-kernel XIVE", _observed(), host="powernv9", accel="kvm", ic_mode="xive"),
        _record("XFAIL", mig["reason"], _observed("xive"), migration=mig, ic_mode="dual", smp=1),
        _record("FAIL", "the guest hung after its kernel started", _observed(
            None, "the guest hung after its kernel started: no ready marker within 2s", "guest", error_kind="GuestHang"),
            ic_mode="dual", cpu_compat="power9"),
    ]


def _heartbeat(path: Path, start: float, seqs: range) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{start + 0.2 * i:.3f} HB {s} {s * 0.2:.2f}\n" for i, s in enumerate(seqs))
                    + f"{start:.3f} 6,1,0,-;a kernel line\n")


def make_run(out: Path) -> dict:
    """A run directory with results.json, cell directories and logs; returns the results."""
    cs = cells()
    for c in cs:
        d = out / "cells" / c["id"]
        d.mkdir(parents=True, exist_ok=True)
        if c["verdict"] == "SKIP":
            (d / "result.json").write_text(json.dumps(c))
            continue
        (d / "qemu-argv.txt").write_text("qemu-system-ppc64\n-machine\npseries\n")
        (d / "qemu-stderr.log").write_text("qemu-system-ppc64: " + (c["observed"]["error"] or "warning: none") + "\n")
        (d / "console.log").write_text("SLOF\r\n[    0.000000] Linux version 6.1 <pre>&amp;\x1b[0m\r\nCASKIT-READY kit=k1\r\n")
        (d / "qmp.jsonl").write_text(json.dumps({"t": 1.0, "send": {"execute": "cont", "arguments": {}}}) + "\n"
                                     + json.dumps({"t": 1.1, "recv": {}}) + "\n")
        (d / "reproduce.sh").write_text("#!/usr/bin/env bash\n")
        c["logs"] = {n: f"cells/{c['id']}/{f}" for n, f in (("console", "console.log"), ("qmp", "qmp.jsonl"),
                                                            ("argv", "qemu-argv.txt"), ("reproduce", "reproduce.sh"))}
        if c["migration"]:
            _heartbeat(d / "heartbeat.log", T0 - 4, range(1, 21))
            _heartbeat(d / "B" / "heartbeat.log", T0 + 0.6, range(21, 70))
            _heartbeat(d / "A2" / "heartbeat.log", T0 + 20, range(1, 1))
            for m in ("B", "A2"):
                (d / m / "qemu-argv.txt").write_text("qemu-system-ppc64\n-incoming\ndefer\n")
                (d / m / "console.log").write_text(f"#caskit# machine {m}\n")
        if c["observed"].get("error_kind") == "GuestHang":
            (d / "forensics.txt").write_text("# hang: no answer\n# 2025\n\n## last console lines\n[ 0.1] Linux\n\n"
                                             "## info pic\nCPU[0000]: QW\n\n## info irq\nIRQ statistics not available "
                                             "for pseries-7.2-machine.\n\n## sysrq l, w (guest backtraces)\n(not taken)\n")
            c["logs"]["forensics"] = f"cells/{c['id']}/forensics.txt"
        (d / "result.json").write_text(json.dumps(c))
    results = {"run": RUN, "cells": cs, "summary": summary(cs)}
    (out / "results.json").write_text(json.dumps(results))
    write_reports(out, results)
    return results


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("synthetic")
    return out, make_run(out)


# ---------------------------------------------------------------- report.html


def test_every_cell_carries_the_filter_data(run_dir):
    out, res = run_dir
    html = (out / "report.html").read_text()
    for c in res["cells"]:
        attrs = report_overview.filter_attrs(c, kvm_mode(res, c))
        row = re.search(rf'<tr id="{re.escape(c["id"])}" class="ck-cell"([^>]*)>', html)
        assert row, c["id"]
        for k, v in attrs.items():
            assert f'data-{k}="{v}"' in row.group(1)
    assert html.count('<div class="ck-cell"') == len(res["cells"])  # every cell in the matrix, none folded away


def test_filters_offer_the_values_the_run_has(run_dir):
    _, res = run_dir
    f = {x["key"]: x["values"] for x in report_overview.filters(res["cells"], lambda c: kvm_mode(res, c))}
    assert f["kvm"] == ["tcg-only", "hv-nested", "hv"]
    assert set(f["verdict"]) == {"PASS", "XFAIL", "FAIL", "ERROR", "SKIP"}
    assert f["host"] == ["local", "nested-hv", "powernv9"]


def test_summary_per_host(run_dir):
    _, res = run_dir
    rows = {r["host"]: r for r in report_overview.host_summary(res["cells"], lambda c: kvm_mode(res, c))}
    assert rows["powernv9"]["counts"]["ERROR"] == 1 and rows["powernv9"]["counts"]["SKIP"] == 1
    assert rows["local"]["cells"] == 5 and rows["nested-hv"]["kvm"] == "hv-nested"


def test_overview_charts_are_inline_svg(run_dir):
    out, _ = run_dir
    html = (out / "report.html").read_text()
    for chart in ("chart-rates", "chart-downtime"):
        fig = re.search(rf'<figure class="chart" id="{chart}">(.*?)</figure>', html, re.S)
        assert fig and fig.group(1).lstrip().startswith("<svg") and "<path" in fig.group(1)
    assert "<?xml" not in html and "<metadata>" not in html
    assert not re.search(r'(src|href)="(https?:)?//', html) and "<link" not in html  # nothing to fetch


def test_rates_split_a_workload_per_device_and_keep_both_modes(run_dir):
    _, res = run_dir
    rows = report_figures.rate_rows(res["cells"])
    assert ("ipi", "xive", 450.0) in rows and ("ipi", "xics", 400.0) in rows
    assert ("virtio-net msix", "xive", 36.0) in rows and ("virtio-net lsi", "xics", 15.0) in rows


def test_downtime_rows_take_completed_hops(run_dir):
    _, res = run_dir
    assert report_figures.downtime_rows(res["cells"]) == [("system 7.2.22", "xive", 30.0), ("system 7.2.22", "xive", 40.0)]


def test_the_existing_matrix_tests_still_hold():
    """report.html keeps its anchors and grouping (tests/unit/test_results_report.py)."""
    res = {"run": RUN, "cells": cells(), "summary": summary(cells())}
    html = html_report(res)
    groups = re.findall(r'class="group">KVM mode: ([\w-]+)<', html)
    assert groups == ["tcg-only", "hv-nested", "hv"]
    for c in res["cells"]:
        assert f'href="#{c["id"]}"' in html and f'href="cells/{c["id"]}/index.html"' in html


# ---------------------------------------------------------------- cell pages


def page(out: Path, c: dict) -> str:
    return (out / "cells" / c["id"] / "index.html").read_text()


def test_a_page_per_cell(run_dir):
    out, res = run_dir
    for c in res["cells"]:
        html = page(out, c)
        assert c["id"] in html and "../../report.html" in html
        assert f"<code>{c['expected']['rule']}</code>" in html and "prom_init.c" in html


def test_logs_are_escaped_and_cleaned(run_dir):
    out, res = run_dir
    html = page(out, res["cells"][0])
    assert "&lt;pre&gt;&amp;amp;" in html and "\x1b" not in html and "\r" not in html
    assert '<span class="ln">CASKIT-READY kit=k1</span>' in html
    assert "1.0 -&gt; {&#34;execute&#34;:&#34;cont&#34;" in html  # the QMP exchange, one line per message


def test_kernel_findings_and_warnings_on_the_page(run_dir):
    out, res = run_dir
    html = page(out, res["cells"][3])
    assert "soft-lockup" in html and "stuck &lt;22s&gt;" in html
    assert "arch/powerpc/sysdev/xive/common.c:1321" in html


def test_migration_hops_with_heartbeat_charts_and_known_issue(run_dir):
    out, res = run_dir
    html = page(out, res["cells"][6])
    assert html.count('<div class="hop') == 2
    assert "<code>k-timers</code>" in html
    charts = re.findall(r'<figure class="chart"><svg.*?</svg>', html, re.S)
    assert len(charts) == 2
    assert "gap 0.80 s" in charts[0]  # the source's last beat at -0.2 s, the destination's first at 0.6 s
    assert "no beat after the hop" in charts[1]


def test_hang_forensics_sections(run_dir):
    out, res = run_dir
    html = page(out, res["cells"][7])
    for head in ("info pic", "info irq", "sysrq l, w (guest backtraces)", "last console lines"):
        assert f"<h3>{head}</h3>" in html
    assert "IRQ statistics not available" in html


def test_forensics_sections_parse():
    text = "# hang\n\n## info pic\nA\nB\n## info irq\n\n## empty\n"
    assert report_cells.forensics_sections(text) == [("why", "# hang"), ("info pic", "A\nB")]


def test_a_log_is_cut_to_its_end(tmp_path, monkeypatch):
    monkeypatch.setattr(report_cells, "MAX_LOG", 10)
    (tmp_path / "x.log").write_text("0123456789abcdef")
    assert report_cells.read_log(tmp_path / "x.log") == ("6789abcdef", True)


def test_skip_cell_has_a_page_without_logs(run_dir):
    out, res = run_dir
    assert "no reproduce.sh" not in page(out, res["cells"][0])
    assert "machine A" not in page(out, res["cells"][5])


# ---------------------------------------------------------------- history hook


def test_history_without_a_history_module(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, report_history.HISTORY_MODULE, None)  # import fails
    h = report_history.lookup(tmp_path, "x")
    assert not h.available and "not part of this caskit" in h.note


def test_history_from_the_history_module(monkeypatch, tmp_path):
    from contextlib import nullcontext

    fake = types.SimpleNamespace(
        resolve_url=lambda given, out: "sqlite:///h", exists=lambda url: True, connect=lambda url: nullcontext("db"),
        cell_history=lambda db, cid: [types.SimpleNamespace(run_id="r2", run_started="2", verdict="FAIL", duration_s=4.0,
                                                            observed_mode="xics"),
                                      types.SimpleNamespace(run_id="r1", run_started="1", verdict="PASS", duration_s=3.0,
                                                            observed_mode="xive")])
    monkeypatch.setitem(sys.modules, report_history.HISTORY_MODULE, fake)
    h = report_history.lookup(tmp_path, "x")
    assert [r["run"] for r in h.rows] == ["r1", "r2"]  # oldest first
    view = report_cells.history_view(tmp_path, {"id": "x"})
    assert view["chart"].startswith("<svg") and view["rows"][1]["mode"] == "xics"


def test_history_that_fails_is_a_note(monkeypatch, tmp_path):
    def broken(url):
        raise OSError("locked")
    fake = types.SimpleNamespace(resolve_url=lambda g, o: "u", exists=lambda u: True, connect=broken,
                                 cell_history=lambda db, cid: [])
    monkeypatch.setitem(sys.modules, report_history.HISTORY_MODULE, fake)
    assert "could not be read: OSError: locked" in report_history.lookup(tmp_path, "x").note


# ---------------------------------------------------------------- progress line


def test_progress_line():
    assert progress_line(5, 12, {"PASS": 4, "XFAIL": 1, "FAIL": 0}, 35.0, "PASS", "cell-a") == \
        "caskit [5/12] PASS 4 XFAIL 1 | 35s, ~49s left | PASS cell-a"
    assert progress_line(12, 12, {"PASS": 12}, 3725.0) == "caskit [12/12] PASS 12 | 1h02m"
    assert progress_line(1, 3, {"ERROR": 1}, 65.0) == "caskit [1/3] ERROR 1 | 1m05s, ~2m10s left"


def test_a_record_the_page_cannot_render_gets_a_note_not_a_crash(tmp_path):
    odd = {"id": "odd", "axes": {}, "verdict": "PASS"}  # no expected, no observed: a harness bug's record
    (tmp_path / "cells" / "odd").mkdir(parents=True)
    (page,) = report_cells.write_cell_pages(tmp_path, {"run": RUN, "cells": [odd]}, lambda c: "tcg-only")
    assert "could not render this cell's page: UndefinedError" in page.read_text()


def test_a_boot_known_issue_is_on_the_cell_page_and_in_the_reports_table(tmp_path):
    # A hang that a boot entry explained (known_issues.explain_boot): its id and the host's
    # proof on the cell's page, and the cell in report.html's known-issues table.
    proof = {"kind": "undelivered-mer", "line": "the L0's vCPU 1 ran the host's guest with LPCR[MER]=1 and MSR[EE]=1"}
    c = _record("XFAIL", "known issue nested-papr-tcg-l0-drops-mer: expected xics, but it failed at guest: hung",
                _observed(None, "the guest hung after it was ready", "guest", error_kind="GuestHang",
                          host_findings=[proof], known_issue="nested-papr-tcg-l0-drops-mer"),
                host="nested-hv", accel="kvm", ic_mode="xics", expected_mode="xics")
    (tmp_path / "cells" / c["id"]).mkdir(parents=True)
    results = {"run": RUN, "cells": [c], "summary": summary([c])}
    write_reports(tmp_path, results)
    html = page(tmp_path, c)
    assert "Known issue that matched the boot:</b> <code>nested-papr-tcg-l0-drops-mer</code>" in html
    assert "LPCR[MER]=1 and MSR[EE]=1" in html
    report = (tmp_path / "report.html").read_text()
    assert re.search(rf'<a href="#{c["id"]}"><code>{c["id"]}</code></a></td><td>nested-papr-tcg-l0-drops-mer</td>', report)
