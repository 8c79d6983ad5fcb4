"""The quick matrix end to end on the local TCG host, through the real CLI with -n 2."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

from conftest import run_cli
from integration.helpers import assert_no_qemu_left

pytestmark = pytest.mark.guest

# What real QEMU 7.2 guests negotiate (cas-rules.md sections 1-3), keyed by
# (ic_mode, cpu_compat, guest_xive): (verdict, observed mode, byte 23).
TRUTH = {
    ("dual", "default", "default"): ("PASS", "xive", "0x80"),
    ("dual", "default", "off"): ("PASS", "xics", "0x80"),
    ("dual", "power8", "default"): ("PASS", "xics", "0x00"),
    ("dual", "power8", "off"): ("PASS", "xics", "0x00"),
    ("xics", "default", "default"): ("PASS", "xics", "0x00"),
    ("xics", "default", "off"): ("PASS", "xics", "0x00"),
    ("xics", "power8", "default"): ("PASS", "xics", "0x00"),
    ("xics", "power8", "off"): ("PASS", "xics", "0x00"),
    ("xive", "default", "default"): ("PASS", "xive", "0x40"),
    ("xive", "default", "off"): ("PASS", "xive", "0x40"),  # xive=off cannot be honoured
    ("xive", "power8", "default"): ("XFAIL", None, None),
    ("xive", "power8", "off"): ("XFAIL", None, None),
}


@pytest.fixture(scope="module")
def quick(tmp_path_factory, kit):
    out = tmp_path_factory.mktemp("quick") / "run"
    r = run_cli(["run", "quick", "-n", "2"], out)
    return r


def test_exit_status_and_progress(quick):
    assert quick.rc == 0, quick.stderr[-3000:] + quick.stdout[-3000:]
    assert "caskit [12/12]" in quick.stdout  # progress lines while it runs
    assert_no_qemu_left(quick.results["run"]["id"])


def test_every_cell_matches_the_measured_truth(quick):
    cells = quick.results["cells"]
    assert len(cells) == 12
    seen = set()
    for c in cells:
        a = c["axes"]
        key = (a["ic_mode"], a["cpu_compat"], a["guest_xive"])
        seen.add(key)
        verdict, mode, byte23 = TRUTH[key]
        assert c["verdict"] == verdict, (key, c["reason"])
        assert c["observed"]["mode"] == mode, key
        assert c["observed"]["platform_support"] == byte23, key
        if mode:
            # both views, and every guest signal, agree
            g, h = c["observed"]["guest"], c["observed"]["host"]
            assert g["mode_from_chips"] == g["mode_from_dt"] == g["mode_from_dmesg"] == h["mode"] == mode
            assert h["irqchip"] == "emulated"
            # QEMU downgrades dual to xics below POWER9 at machine init (spapr_irq_check()),
            # and qom-get reports the downgraded value.
            downgraded = a["ic_mode"] == "dual" and a["cpu_compat"] == "power8"
            assert h["configured_ic_mode"] == ("xics" if downgraded else a["ic_mode"])
    assert seen == set(TRUTH)


def test_refusal_is_xfail_with_the_qemu_message(quick):
    refused = [c for c in quick.results["cells"] if c["verdict"] == "XFAIL"]
    assert len(refused) == 2
    for c in refused:
        assert c["observed"]["stage"] == "qemu-start"
        assert c["observed"]["error"] == "XIVE-only machines require a POWER9 CPU"
        assert c["observed"]["exit_code"] == 1
        assert c["expected"]["rule"] == "xive-needs-power9"


def test_results_json_contract(quick):
    res = quick.results
    run = res["run"]
    for k in ("id", "start", "end", "caskit_version", "matrices", "hosts"):
        assert k in run, k
    facts = run["hosts"]["local"]
    assert facts["qemu"][0]["default_ic_mode"] == "dual"
    assert facts["kvm_mode"] == "tcg-only"
    for c in res["cells"]:
        for k in ("id", "axes", "host", "expected", "observed", "verdict", "duration_s", "logs"):
            assert k in c, k
        assert set(c["axes"]) == {"accel", "ic_mode", "kernel_irqchip", "cpu", "cpu_compat", "guest_xive",
                                  "smp", "firmware", "qemu"}
        assert set(c["expected"]) >= {"mode", "error", "rule"}
        assert set(c["observed"]) >= {"mode", "platform_support", "error"}
        for rel in c["logs"].values():
            assert (quick.out / rel).is_file(), rel
        assert "qemu_stderr" in c["logs"] and "argv" in c["logs"]
        if c["verdict"] == "PASS":
            assert "console" in c["logs"] and "qmp" in c["logs"]


def test_junit_has_one_testcase_per_cell(quick):
    root = ET.parse(quick.out / "junit.xml").getroot()
    cases = root.findall("testcase")
    assert sorted(tc.get("name") for tc in cases) == sorted(c["id"] for c in quick.results["cells"])
    skipped = [tc for tc in cases if tc.find("skipped") is not None]
    assert len(skipped) == 2  # the two XFAIL refusals
    assert not [tc for tc in cases if tc.find("failure") is not None or tc.find("error") is not None]


def test_html_report_has_every_cell(quick):
    html = (quick.out / "report.html").read_text()
    for c in quick.results["cells"]:
        assert f'id="{c["id"]}"' in html
        assert c["logs"]["qemu_stderr"] in html


def test_console_transcript_shows_the_guest(quick):
    c = next(c for c in quick.results["cells"] if c["verdict"] == "PASS")
    text = (quick.out / c["logs"]["console"]).read_text(errors="replace")
    assert "CASKIT-READY" in text and "== interrupts" in text
    qmp = (quick.out / c["logs"]["qmp"]).read_text()
    assert "info pic" in qmp and "qom-get" in qmp


@pytest.fixture(scope="module")
def rules_run(tmp_path_factory, kit):
    out = tmp_path_factory.mktemp("rules") / "run"
    return run_cli(["run", "rules", "limits", "slof", "power10", "-n", "2"], out)


def test_every_tcg_rule_is_proven_by_a_real_cell(quick, rules_run):
    from harness.model import RULES

    assert rules_run.rc == 0, rules_run.stdout[-3000:]
    proven = set()
    for c in quick.results["cells"] + rules_run.results["cells"]:
        assert c["verdict"] in ("PASS", "XFAIL"), (c["id"], c["reason"])
        proven |= {c["expected"]["rule"], *c["expected"]["notes"]}
    # Rules about KVM hosts, skips and old machine versions cannot be shown by a TCG guest here.
    not_here = {"host-has-kvm", "pr-kvm-untestable", "qemu-build-usable", "cpu-model-known",
                "kvm-irqchip-off", "kvm-in-kernel", "kvm-irqchip-required", "kvm-fallback-emulated",
                "legacy-machine-no-ic-mode", "kvm-hv-cpu-is-host", "vof-not-under-pr",
                "kvm-no-hpt-in-nested", "kvm-pr-no-compat"}  # the KVM hosts' tests show these
    assert proven == set(RULES) - not_here


def test_slof_and_vof_agree(quick, rules_run):
    slof = [c for c in rules_run.results["cells"] if c["axes"]["firmware"] == "slof"]
    assert len(slof) == 3
    for c in slof:
        assert c["verdict"] == "PASS", c["reason"]
        twin = TRUTH[(c["axes"]["ic_mode"], "default", c["axes"]["guest_xive"])]
        assert (c["observed"]["mode"], c["observed"]["platform_support"]) == twin[1:]


def test_limits_and_compat_refusals_carry_qemus_words(rules_run):
    cells = rules_run.cells()
    errors = {c["expected"]["rule"]: c["observed"]["error"] for c in cells.values()
              if c["verdict"] == "XFAIL" and c["matrix"] in ("rules", "limits")}
    assert errors["smp-max-cpus"].startswith("Invalid SMP CPUs 4097")
    assert errors["compat-above-cpu"] == "Compatibility PVR 0x0f000005 not valid for CPU"
    assert errors["cpu-host-needs-kvm"] == "unable to find CPU model 'host'"


# POWER10 guests on both builds (configs/matrices/power10.yaml), as measured on 2026-12-07 with
# QEMU 7.2.22 and 10.0.2: keyed by (cpu, cpu_compat, ic_mode, guest_xive), the same on both builds:
# (verdict, observed mode, byte 23, ic-mode as QEMU reports it, or QEMU's refusal).
POWER10_TRUTH = {
    ("POWER10", "default", "dual", "default"): ("PASS", "xive", "0x80", "dual"),
    ("POWER10", "default", "dual", "off"): ("PASS", "xics", "0x80", "dual"),
    ("POWER10", "power10", "dual", "default"): ("PASS", "xive", "0x80", "dual"),
    ("POWER10", "power8", "dual", "default"): ("PASS", "xics", "0x00", "xics"),  # downgraded at init
    ("POWER10", "default", "xive", "default"): ("PASS", "xive", "0x40", "xive"),
    ("POWER10", "default", "xive", "off"): ("PASS", "xive", "0x40", "xive"),  # xive=off not honoured
    ("POWER10", "power8", "xive", "default"): ("XFAIL", None, None, "XIVE-only machines require a POWER9 CPU"),
    ("POWER9", "power10", "dual", "default"): ("XFAIL", None, None, "Compatibility PVR 0x0f000006 not valid for CPU"),
}


def test_power10_on_both_builds_is_as_measured_and_predicted(rules_run):
    cells = [c for c in rules_run.results["cells"] if c["matrix"] == "power10"]
    seen = set()
    for c in cells:
        a, o, e = c["axes"], c["observed"], c["expected"]
        key = (a["cpu"], a["cpu_compat"], a["ic_mode"], a["guest_xive"])
        seen.add((a["qemu"], key))
        verdict, mode, byte23, detail = POWER10_TRUTH[key]
        assert c["verdict"] == verdict, (c["id"], c["reason"])
        assert c["qemu_version"] == {"system": "7.2.22", "backports": "10.0.2"}[a["qemu"]], c["id"]
        assert (e["mode"], e["byte23"]) == (mode, byte23), c["id"]  # the model predicted it
        assert (o["mode"], o["platform_support"]) == (mode, byte23), c["id"]
        if mode:
            g, h = o["guest"], o["host"]
            assert g["mode_from_chips"] == g["mode_from_dt"] == g["mode_from_dmesg"] == h["mode"] == mode, c["id"]
            assert (h["irqchip"], h["configured_ic_mode"]) == ("emulated", detail), c["id"]
        else:
            assert (o["stage"], o["error"], o["exit_code"]) == ("qemu-start", detail, 1), c["id"]
    assert seen == {(q, k) for q in ("system", "backports") for k in POWER10_TRUTH}
