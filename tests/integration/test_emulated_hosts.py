"""Emulated POWER9 KVM hosts for real: each kind booted once under TCG (one after the other: an
L1 takes both cores), reached over SSH by caskit's own SshHost, probed with kvmcaps, and shown
with an L2 guest under `-accel kvm` what cas-rules section 5 says its KVM mode offers:

- nested-hv: KVM_CAP_PPC_IRQ_XIVE = 0 and no XIVE device; a dual machine's XIVE falls back to
  QEMU's emulation with a warning; kernel-irqchip=on with XIVE is refused; XICS is in the kernel.
- powernv9: KVM_CAP_PPC_IRQ_XIVE = 1, OPAL, the native XIVE backend; a dual machine's XIVE is
  in the kernel.

Each L1 is stopped at the end by `down` in another process (the state file is what it has),
and no QEMU of ours may be left."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from harness import kvmcaps, l1image
from harness.hosts import emulated
from harness.hosts.probe import probe_remote
from integration.helpers import pid_alive

pytestmark = pytest.mark.guest

ROOT = Path(__file__).resolve().parent.parent.parent
FALLBACK = "kernel_irqchip allowed but unavailable: IRQ_XIVE capability must be present for KVM"
REFUSAL = "kernel_irqchip requested but unavailable: IRQ_XIVE capability must be present for KVM"


@pytest.fixture(scope="module")
def image():
    return l1image.build(log=lambda m: print(m, file=sys.stderr))


@pytest.fixture(scope="module", params=["nested-hv", "powernv9"])
def l1(request, image):
    kind = request.param
    name = f"it-{kind}"
    emulated.down(name, log=lambda m: None)  # a host a crashed earlier run left, by its PID
    h = emulated.EmulatedHost(name, kind)
    st = h.up(image, timeout=240, log=lambda m: print(m, file=sys.stderr))
    yield h, st
    h.down(log=lambda m: None)
    assert not pid_alive(st.pid), f"L1 {name} (pid {st.pid}) still running"


@pytest.fixture(scope="module")
def caps(l1):
    h, _ = l1
    code, out, err = h.ssh().run(["kvmcaps"], timeout=120, check=True)
    return kvmcaps.parse(out)


def test_the_l1_boots_the_image_and_answers_over_ssh(l1, image):
    h, st = l1
    assert st.status == "up" and st.image == image.key and not st.warnings
    assert st.ready_s is not None and st.ssh_s is not None and st.ssh_s >= st.ready_s
    # What a remote caskit host needs is there (docs/hosts.md).
    code, out, err = h.ssh().run(["sh", "-c", "command -v flock sha256sum python3 qemu-system-ppc64 mktemp truncate "
                                              "stat && qemu-system-ppc64 --version"], timeout=60)
    assert code == 0, err
    assert "QEMU emulator version 7.2" in out


def test_kvmcaps_says_what_cas_rules_section_5_says(l1, caps):
    h, _ = l1
    assert caps.dev_kvm and caps.kvm_hv and caps.hv_vm
    assert caps.in_kernel_xics and caps.cap("IRQ_XICS") == 1
    if h.kind.name == "nested-hv":
        assert (caps.kvm_mode, caps.platform, caps.opal, caps.nested_param) == ("hv-nested", "pSeries", False, True)
        assert caps.cap("PPC_IRQ_XIVE") == 0 and not caps.xive_device
        assert caps.errors["device.xive.create"].startswith("ENODEV")
        assert caps.xive_backend == "spapr"
    else:
        assert (caps.kvm_mode, caps.platform, caps.opal) == ("hv", "PowerNV", True)
        assert caps.cap("PPC_IRQ_XIVE") == 1 and caps.in_kernel_xive
        assert caps.xive_backend == "native"


def test_caskit_probes_it_as_an_ssh_host(l1, caps, tmp_path):
    h, st = l1
    facts = probe_remote(h.ssh(), h.spec(st.port), tmp_path, builds=set(), log=lambda m: None)
    assert facts.arch == "ppc64le" and facts.kvm_mode == caps.kvm_mode


@pytest.fixture(scope="module")
def dual(l1, kit, tmp_path_factory):
    """One L2 on a dual machine with kernel-irqchip not given: what the host's KVM makes of XIVE."""
    h, _ = l1
    return emulated.run_l2(h.ssh(), h.kind, kit, ic_mode="dual", log_dir=tmp_path_factory.mktemp("l2-dual"))


def test_an_l2_on_a_dual_machine_negotiates_xive(dual):
    assert dual.started and dual.error is None, dual
    assert (dual.configured_ic_mode, dual.guest_mode, dual.host_mode, dual.platform_support) == \
        ("dual", "xive", "xive", "0x80")


def test_the_l2s_xive_is_in_the_kernel_only_on_bare_metal(l1, dual):
    h, _ = l1
    if h.kind.name == "nested-hv":
        assert dual.irqchip == "emulated"
        assert any(FALLBACK in line for line in dual.stderr), dual.stderr
    else:
        assert dual.irqchip == "in-kernel"
        assert not any(FALLBACK in line for line in dual.stderr), dual.stderr


def test_nested_hv_refuses_xive_when_the_kernel_irqchip_is_required(l1, kit, tmp_path):
    h, _ = l1
    if h.kind.name != "nested-hv":
        pytest.skip("a bare-metal host has the in-kernel XIVE (shown above)")
    o = emulated.run_l2(h.ssh(), h.kind, kit, ic_mode="xive", kernel_irqchip="on", log_dir=tmp_path)
    assert (o.started, o.stage) == (False, "qemu-start") and o.error and REFUSAL in o.error


def test_down_from_another_process_powers_it_off(l1):
    h, st = l1
    p = subprocess.run([sys.executable, "-c", "import sys; from harness.hosts import emulated; "
                                              "print(emulated.down(sys.argv[1], log=lambda m: None))", h.name],
                       cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    assert p.stdout.startswith("powered off"), p.stdout  # the clean way, not SIGKILL
    assert not pid_alive(st.pid)
    assert emulated.L1State.load(h.name).status == "stopped"
