"""The pure parts of the nested-papr host kind (KVM in a PowerVM-like LPAR, PAPR nested API v2):
which nested API a host's kvm_hv uses and the evidence, the guest options QEMU's own refusals
ask for, the host kernel's known noise, the rule that HV KVM runs the host's CPU model only,
and what `caskit explain` shows for the five KVM modes. The kvmcaps shapes are what the probe
printed inside caskit's emulated hosts (2026-12-07), trimmed to the lines that decide."""

from __future__ import annotations

import pytest

from harness import explain, guestlog, model
from harness.axes import AXIS_NAMES
from harness.cell import Cell, HostFacts, QemuBuild
from harness.emulated import host as emulated, kvmcaps
from harness.probe import forced_option

PAPR = """probe=kvmcaps 1
cpu=POWER10 (architected), altivec supported
platform=pSeries
opal=0
kvm_hv.nested=Y
module.kvm_hv=1
module.kvm_pr=0
dmesg.xive.1=xive: Interrupt handling initialized with spapr backend
page_size=4096
kernel=6.12.95+deb12-powerpc64le
dev_kvm=ok
vm.hv=ok
vm.KVM_CAP_IRQ_XICS=1
vm.KVM_CAP_PPC_NESTED_HV=0
vm.KVM_CAP_PPC_IRQ_XIVE=0
device.xics.test=ok
device.xics.create=ok
device.xive.test=error:ENODEV:19
device.xive.create=error:ENODEV:19
"""
# Debian's 6.12 on caskit's nested-hv L0 (QEMU 7.2, cap-nested-hv=on: no v2).
FELL_BACK = PAPR.replace("cpu=POWER10", "cpu=POWER9").replace(
    "page_size=4096", "dmesg.nested.0=<6>[    6.966276] kvm-hv: nestedv2 get capabilities hcall failed, falling back "
                      "to nestedv1 (rc=-2)\npage_size=4096")
# Debian's 6.1 on the same L0: no v2 code at all.
OLD = PAPR.replace("kernel=6.12.95+deb12-powerpc64le", "kernel=6.1.0-57-powerpc64le").replace("page_size=4096", "page_size=65536")


def test_a_6_12_kernel_on_a_papr_l0_uses_nested_api_v2():
    c = kvmcaps.parse(PAPR)
    assert c.nested_api[0] == "v2" and "did not log 'falling back to nestedv1'" in c.nested_api[1]
    assert c.kvm_mode == "hv-nested-papr" and c.page_size == 4096 and c.in_kernel_xics and not c.in_kernel_xive


def test_the_kernels_fallback_line_says_v1():
    c = kvmcaps.parse(FELL_BACK)
    api, evidence = c.nested_api
    assert api == "v1" and evidence.startswith("kernel log: 'kvm-hv: nestedv2 get capabilities hcall failed")
    assert c.kvm_mode == "hv-nested"


def test_a_kernel_before_6_7_has_only_v1():
    c = kvmcaps.parse(OLD)
    assert c.nested_api == ("v1", "kernel 6.1.0-57-powerpc64le predates nested API v2 (Linux 6.7)")
    assert c.kvm_mode == "hv-nested"


def test_a_v2_line_of_a_running_l2_is_evidence_too():
    text = OLD.replace("page_size=", "dmesg.nested.0=<4>[  306.6] KVM-NESTEDv2: couldn't register the L2 VPA (rc=-56)\npage_size=")
    assert kvmcaps.parse(text).nested_api[0] == "v2"


def test_bare_metal_has_no_nested_api():
    c = kvmcaps.parse(PAPR.replace("platform=pSeries", "platform=PowerNV").replace("opal=0", "opal=1"))
    assert c.nested_api[0] is None and c.kvm_mode == "hv"


@pytest.mark.parametrize("stderr, option", [
    ("qemu-system-ppc64: Requested safe bounds check capability level not supported by KVM\n"
     "Try appending -machine cap-sbbc=broken\n", ("cap-sbbc=broken", "Requested safe bounds check capability level "
                                                                   "not supported by KVM")),
    ("qemu-system-ppc64: Can't support 64 kiB guest pages with 4 kiB host pages with this KVM implementation\n",
     ("cap-hpt-max-page-size=4k", "Can't support 64 kiB guest pages with 4 kiB host pages with this KVM implementation")),
    ("qemu-system-ppc64: warning: kernel_irqchip allowed but unavailable: IRQ_XIVE capability must be present for KVM\n"
     "Falling back to kernel-irqchip=off\nqemu-system-ppc64: Can't support 64 kiB guest pages with 4 kiB host pages "
     "with this KVM implementation\n", ("cap-hpt-max-page-size=4k", "Can't support 64 kiB guest pages with 4 kiB host "
                                                                     "pages with this KVM implementation")),
    ("qemu-system-ppc64: Register sync failed... If you're using kvm-hv.ko, only \"-cpu host\" is possible\n", None),
    ("", None),
])
def test_the_option_a_refusal_asks_for(stderr, option):
    assert forced_option(stderr) == option


def test_the_l1s_noise_is_classified_and_never_a_finding():
    lines = ["[  12.19] KVM: TLB LPID invalidation hcall failed, rc=-2"] * 3 + \
            ["[ 306.68] KVM-NESTEDv2: couldn't register the L2 VPA (rc=-56)"] + \
            ["[ 400.00] watchdog: BUG: soft lockup - CPU#1 stuck for 23s! [qemu-system-ppc:941]"]
    noise = guestlog.host_noise(lines)
    assert [(n["kind"], n["count"]) for n in noise] == [("nestedv2-l2-vpa", 1), ("tlb-lpid-invalidation", 3)]
    assert [f["kind"] for f in guestlog.findings(lines)] == ["soft-lockup"]  # the noise is no finding


def _cell(cpu: str, compat: str = "default", ic_mode: str = "dual") -> Cell:
    axes = {"accel": "kvm", "ic_mode": ic_mode, "kernel_irqchip": "default", "cpu": cpu, "cpu_compat": compat,
            "guest_xive": "default", "smp": 1, "firmware": "vof", "qemu": "system"}
    return Cell("np", tuple((n, axes[n]) for n in AXIS_NAMES))


BUILD = QemuBuild("system", "qemu-system-ppc64", "7.2.22", default_ic_mode="dual", machine="pseries-7.2", max_cpus=2048,
                  cpu_models=("POWER10", "POWER8", "POWER9"))
P10_HOST = HostFacts("np", "ppc64le", "POWER10 (architected), altivec supported", "hv-nested-papr", True, False, 1,
                     (BUILD,))


def test_hv_kvm_runs_the_hosts_cpu_model_only():
    e = model.predict(_cell("POWER9"), P10_HOST)
    assert (e.rule, e.stage, e.error) == ("kvm-hv-cpu-is-host", "qemu-start", r'only "-cpu host" is possible')
    ok = model.predict(_cell("POWER10", "power9"), P10_HOST)
    assert (ok.rule, ok.mode, ok.irqchip) == ("guest-picks-xive", "xive", "emulated")
    # PR KVM emulates the CPU: no such rule there; TCG neither.
    assert model.predict(_cell("POWER9"), HostFacts("pr", "ppc64le", "POWER10", "pr", False, False, 1,
                                                    (BUILD,))).rule != "kvm-hv-cpu-is-host"


def test_the_pvr_decides_the_hosts_generation_not_the_compatibility_mode():
    from dataclasses import replace
    compat = replace(P10_HOST, cpu="POWER9 (architected), altivec supported", cpu_pvr="0x00801200")
    assert model.host_cpu_level(compat) == 10
    assert model.predict(_cell("POWER9"), compat).rule == "kvm-hv-cpu-is-host"
    assert model.predict(_cell("POWER10", "power9"), compat).mode == "xive"
    assert model.host_cpu_level(replace(P10_HOST, cpu="POWER9 (raw)", cpu_pvr="0x004e1200")) == 9
    assert model.host_cpu_level(replace(P10_HOST, cpu="Intel Xeon", cpu_pvr=None)) is None


def test_explain_shows_five_kvm_modes_and_the_papr_host_runs_its_own_cpu():
    assert list(explain.KVM_MODES) == ["tcg-only", "hv", "hv-nested", "hv-nested-papr", "pr"]
    p = explain.parse_argv(["qemu-system-ppc64", "-M", "pseries,ic-mode=dual", "-accel", "kvm"])
    rows = {(r.kvm, r.guest): r.expected for r in explain.predict_all(p, BUILD)}
    assert rows[("hv-nested-papr", "default")].mode == "xive"  # no -cpu: the host's POWER10
    p9 = explain.parse_argv(["qemu-system-ppc64", "-M", "pseries,ic-mode=dual", "-accel", "kvm", "-cpu", "POWER9"])
    rows = {(r.kvm, r.guest): r.expected for r in explain.predict_all(p9, BUILD)}
    assert rows[("hv-nested-papr", "default")].rule == "kvm-hv-cpu-is-host"
    assert rows[("hv-nested", "default")].mode == "xive"


def test_the_nested_papr_kind_boots_a_power10_lpar_on_qemu_10_with_the_backports_kernel():
    k = emulated.KINDS["nested-papr"]
    assert (k.qemu_suite, k.kernel_suite) == ("bookworm-backports", "bookworm-backports")
    paths = {n: emulated.Path(f"/c/h/{n}") for n in ("kernel", "initrd", "console_sock", "console_log", "qmp_sock")}
    argv = emulated.render_argv(k, binary="q", firmware_dir="/fw", tag="t", port=1, **paths)
    assert argv[argv.index("-machine") + 1] == "pseries,cap-nested-papr=on,x-vof=on"
    assert argv[argv.index("-cpu") + 1] == "POWER10"
    assert all(kind.l2_append == "watchdog_thresh=60" for kind in emulated.KINDS.values())


def test_cpu_host_is_the_hosts_own_processor_under_kvm_and_refused_under_tcg():
    from dataclasses import replace
    e = model.predict(_cell("host"), P10_HOST)
    assert (e.mode, e.irqchip) == ("xive", "emulated")
    assert model.predict(_cell("host", "power8", "xive"), P10_HOST).rule == "xive-needs-power9"
    tcg = replace(P10_HOST, kvm_mode="tcg-only", cpu="Intel Xeon")
    assert model.predict(replace(_cell("host"), axes=tuple((k, "tcg" if k == "accel" else v)
                                                           for k, v in _cell("host").axes)), tcg).rule == "cpu-host-needs-kvm"


def test_the_report_says_what_a_host_forced_on_its_guests():
    from harness.report.overview import host_needs
    facts = {"guest_machine_options": ["cap-sbbc=broken", "cap-hpt-max-page-size=4k"],
             "forced_options": [["cap-sbbc=broken", "Requested safe bounds check capability level not supported by KVM"],
                                ["cap-hpt-max-page-size=4k", "Can't support 64 kiB guest pages with 4 kiB host pages"]],
             "guest_append": "watchdog_thresh=60", "nested_api": "v2", "nested_api_evidence": "kernel 6.12 (6.7+) ..."}
    text = host_needs(facts)
    assert "-machine cap-sbbc=broken (QEMU under this KVM: 'Requested safe bounds check" in text
    assert "-machine cap-hpt-max-page-size=4k (QEMU under this KVM" in text
    assert "watchdog_thresh=60" in text and "nested API v2: kernel 6.12" in text
    assert host_needs({"guest_machine_options": ["cap-ibs=broken"]}) == "-machine cap-ibs=broken (inventory)"
    assert host_needs(None) == ""


def test_a_pr_only_host_is_pr_with_in_kernel_xics_from_its_pr_vm():
    """kvmcaps as it printed in an L1 whose kernel has kvm_pr built in (Debian's 6.1 source, a
    small pseries config, POWER9 hash MMU; measured 2026-12-07): the HV VM is EINVAL, the PR VM
    works, /sys/module/kvm_pr is missing. The PR VM's answers decide."""
    from pathlib import Path
    text = (Path(__file__).parent / "data" / "kvmcaps-pr-l1.txt").read_text()
    c = kvmcaps.parse(text)
    assert (c.kvm_mode, c.pr_vm, c.hv_vm, c.kvm_pr) == ("pr", True, False, False)
    assert c.in_kernel_xics and not c.in_kernel_xive
    assert c.cap("PPC_IRQ_XIVE") == 0 and c.cap("IRQ_XICS") == 1 and c.cap("PPC_MMU_RADIX") == 0
    assert c.nested_api == (None, "not HV KVM under a hypervisor")


def test_a_guest_with_only_the_hpt_is_refused_where_hv_kvm_has_none():
    from dataclasses import replace
    nested = replace(P10_HOST, kvm_caps=(("KVM_CAP_PPC_MMU_HASH_V3", 0), ("KVM_CAP_PPC_MMU_RADIX", 1)))
    e = model.predict(_cell("host", "power8", "dual"), nested)
    assert (e.rule, e.stage, e.error) == ("kvm-no-hpt-in-nested", "qemu-start", "HPT not supported in nested guests")
    assert model.predict(_cell("host", "power8", "xive"), nested).rule == "xive-needs-power9"  # QEMU checks it first
    assert model.predict(_cell("host", "power9", "dual"), nested).mode == "xive"  # radix: fine
    bare = replace(nested, kvm_mode="hv", kvm_caps=(("KVM_CAP_PPC_MMU_HASH_V3", 1),))
    assert model.predict(_cell("host", "power8", "dual"), bare).mode == "xics"
