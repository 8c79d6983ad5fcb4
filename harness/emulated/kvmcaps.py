"""What `kvmcaps` (l1/kvmcaps.c) reports about a POWER host's KVM, parsed (pure).

The probe prints `key=value` lines: the platform lines of /proc/cpuinfo, whether the device tree
has ibm,opal (PowerNV, with OPAL firmware), kvm_hv's `nested` parameter, the XIVE (eXternal
Interrupt Virtualization Engine) driver's kernel lines, every KVM (Kernel-based Virtual Machine)
capability it knows asked on /dev/kvm (`sys.`) and on an HV VM (`vm.`), and whether a VM can
have the XICS (eXternal Interrupt Controller Specification) and XIVE KVM devices. From those
follow the host's KVM mode and which interrupt controllers KVM can run in the kernel, which QMP
cannot tell (cas-rules section 5).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from ..errors import ObserveError

HEADER = "probe=kvmcaps 1"


@dataclass(frozen=True)
class KvmCaps:
    raw: dict[str, str]
    platform: str | None = None  # PowerNV | pSeries
    opal: bool = False
    kvm_hv: bool = False  # the module is loaded
    kvm_pr: bool = False  # /sys/module/kvm_pr: missing when kvm_pr is built in, so pr_vm decides
    nested_param: bool | None = None  # /sys/module/kvm_hv/parameters/nested, when kvm_hv is there
    xive_backend: str | None = None  # native (bare metal) | spapr (under a hypervisor) | None (XICS)
    dev_kvm: bool = False
    hv_vm: bool = False  # an HV VM could be created
    pr_vm: bool = False  # a PR VM (KVM_VM_PPC_PR) could be created: kvm_pr works
    caps: dict[str, int] = field(default_factory=dict)  # the VM's answers, else /dev/kvm's
    xics_device: bool = False  # KVM_CREATE_DEVICE(XICS) worked on a VM
    xive_device: bool = False  # KVM_CREATE_DEVICE(XIVE) worked on a VM
    errors: dict[str, str] = field(default_factory=dict)  # what failed, as `NAME:errno`
    page_size: int | None = None  # the host kernel's page size in bytes
    kernel: str | None = None  # the host kernel's release
    nested_lines: tuple[str, ...] = ()  # the kernel's lines about the PAPR nested API

    @property
    def nested_api(self) -> tuple[str | None, str]:
        """Which PAPR nested API KVM HV uses under a hypervisor, with its evidence: "v1" (the
        hypervisor runs L2s for it with H_ENTER_NESTED, as QEMU's cap-nested-hv does) or "v2"
        (the hypervisor keeps the L2's state, H_GUEST_*: PowerVM since FW1060.10, QEMU's
        cap-nested-papr). None on bare metal or without HV KVM. Linux 6.7+ asks for v2 when
        kvm_hv loads and logs "nestedv2 get capabilities hcall failed, falling back to
        nestedv1" when the hypervisor has none (measured on caskit's nested-hv L0 with Debian's
        6.12); older kernels have only v1 (arch/powerpc/kvm/book3s_hv_nestedv2.c is from 6.7)."""
        if not (self.kvm_hv and self.hv_vm) or self.opal or self.platform == "PowerNV":
            return None, "not HV KVM under a hypervisor"
        if fell := next((l for l in self.nested_lines if "falling back to nestedv1" in l), None):
            return "v1", f"kernel log: {_klog_text(fell)!r}"
        if used := next((l for l in self.nested_lines if "KVM-NESTEDv2" in l), None):
            return "v2", f"kernel log: {_klog_text(used)!r}"
        release = _release(self.kernel)
        if release is None:
            return None, "the kernel's release is unknown and its log names no nested API"
        if release < (6, 7):
            return "v1", f"kernel {self.kernel} predates nested API v2 (Linux 6.7)"
        return "v2", (f"kernel {self.kernel} (6.7+) loaded kvm_hv and did not log 'falling back to nestedv1'")

    def cap(self, name: str) -> int | None:
        return self.caps.get(name if name.startswith("KVM_CAP_") else f"KVM_CAP_{name}")

    @property
    def kvm_mode(self) -> str:
        """hv (bare metal), hv-nested (HV inside a pseries guest, nested API v1), hv-nested-papr
        (the same on nested API v2: KVM in a PowerVM LPAR), pr, or tcg-only."""
        if not self.dev_kvm:
            return "tcg-only"
        if self.kvm_hv and self.hv_vm:
            if self.opal or self.platform == "PowerNV":
                return "hv"
            return "hv-nested-papr" if self.nested_api[0] == "v2" else "hv-nested"
        if self.pr_vm or self.kvm_pr:
            return "pr"
        return "tcg-only"

    @property
    def in_kernel_xics(self) -> bool:
        """KVM can run the guest's XICS (natively, or XICS-on-XIVE on a XIVE host)."""
        return bool(self.cap("IRQ_XICS")) and self.xics_device

    @property
    def in_kernel_xive(self) -> bool:
        """KVM offers the XIVE native device: what QEMU checks (KVM_CAP_PPC_IRQ_XIVE) and it works."""
        return bool(self.cap("PPC_IRQ_XIVE")) and self.xive_device


def _klog_text(line: str) -> str:
    """A kernel log line without its `<level>[ time]` prefix (pure)."""
    return re.sub(r"^(<\d+>)?\[\s*[\d.]+\]\s*", "", line)


def _release(kernel: str | None) -> tuple[int, int] | None:
    m = re.match(r"(\d+)\.(\d+)", kernel or "")
    return (int(m.group(1)), int(m.group(2))) if m else None


def _flag(v: str | None) -> bool:
    return v in ("1", "ok", "Y")


def parse(text: str) -> KvmCaps:
    lines = [l.strip() for l in text.replace("\r", "").splitlines() if "=" in l]
    if not lines or lines[0] != HEADER:
        raise ObserveError(f"not kvmcaps output (expected {HEADER!r} first): {text[:200]!r}")
    raw: dict[str, str] = {}
    for line in lines:
        k, v = line.split("=", 1)
        raw[k] = v
    errors = {k: v.removeprefix("error:") for k, v in raw.items() if v.startswith("error:")}
    caps: dict[str, int] = {}
    # The VM's answers win over /dev/kvm's (QEMU asks the VM), of the type QEMU would create:
    # HV where it works, else PR (measured: an HV VM is EINVAL in a PR-only L1).
    hv_vm, pr_vm = raw.get("vm.hv") == "ok", raw.get("vm.pr") == "ok"
    vm, dev = ("vm_pr.", "device_pr.") if pr_vm and not hv_vm else ("vm.", "device.")
    for prefix in ("sys.", vm):
        for k, v in raw.items():
            if k.startswith(prefix + "KVM_CAP_") and re.fullmatch(r"-?\d+", v):
                caps[k.removeprefix(prefix)] = int(v)
    backend = None
    for k, v in raw.items():
        if k.startswith("dmesg.xive.") and (m := re.search(r"initialized with (\w+) backend", v)):
            backend = m.group(1)
    nested = raw.get("kvm_hv.nested")
    return KvmCaps(
        raw=raw,
        platform=raw.get("platform"),
        opal=_flag(raw.get("opal")),
        kvm_hv=_flag(raw.get("module.kvm_hv")),
        kvm_pr=_flag(raw.get("module.kvm_pr")),
        nested_param=None if nested in (None, "missing") else nested == "Y",
        xive_backend=backend,
        dev_kvm=raw.get("dev_kvm") == "ok",
        hv_vm=hv_vm,
        pr_vm=pr_vm,
        caps=caps,
        xics_device=raw.get(f"{dev}xics.create") == "ok",
        xive_device=raw.get(f"{dev}xive.create") == "ok",
        errors=errors,
        page_size=int(raw["page_size"]) if re.fullmatch(r"\d+", raw.get("page_size", "")) else None,
        kernel=raw.get("kernel"),
        nested_lines=tuple(v for k, v in raw.items() if k.startswith("dmesg.nested.")),
    )
