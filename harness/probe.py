"""Probing a host: what it is (HostFacts) and what each of its QEMU builds does by default.

The QEMU part asks QEMU itself over QMP (a machine started paused, never booted): the
configured ic-mode when none is given, the concrete pseries machine version, its cpu-max and
the CPU models, so the model never hard-codes a machine version's defaults.
"""

from __future__ import annotations

import os
import platform
import re
from dataclasses import replace
from pathlib import Path

from .cell import HostFacts, QemuBuild
from .specs import HostSpec, QemuBuildSpec
from .connect import guest_append, guest_machine_options, l0_facts, make_host
from .emulated import kvmcaps
from .errors import CaskitError
from .hosts import Host, LocalHost
from .machine import GuestMachine, MachineFiles
from .qemu_builds import suite_build
from .qmp import QmpCommandError


def _binary_sha256(host: Host, binary: str) -> str:
    """The SHA-256 of the binary the host runs for `binary` (a path, or a name on its PATH)."""
    code, out, err = host.run(["sh", "-c", 'sha256sum "$(command -v "$1")"', "sh", binary], timeout=60)
    digest = out.split()[0] if code == 0 and out.split() else ""
    if not re.fullmatch(r"[0-9a-f]{64}", digest):
        raise CaskitError(f"host {host.name}: sha256sum of {binary} failed (exit {code}): {err.strip()[-200:]}")
    return digest


def _qemu_version(host: Host, binary: str) -> str:
    try:
        code, out, err = host.run([binary, "--version"], timeout=20)
    except CaskitError as e:
        raise CaskitError(f"{binary} --version: {e}") from e
    if code != 0:
        raise CaskitError(f"host {host.name}: {binary} --version exited {code}: {err.strip()[-200:]}")
    m = re.search(r"version (\S+)", out)
    return m.group(1) if m else out.strip()[:80]


def _paused(host: Host, spec: QemuBuildSpec, log_dir: Path, tag: str, cpu: str | None = None, *,
            accel: str = "tcg", machine: tuple[str, ...] = ()):
    """A pseries machine of the build, started paused and never booted, tagged like the run's
    own machines so that `caskit cleanup` finds it after a crash."""
    sock_dir = host.tempdir("ck-probe-")
    argv = [spec.binary] + (["-L", spec.firmware_dir] if spec.firmware_dir else []) + [
        "-name", tag, "-machine", ",".join(("pseries", *machine)), "-accel", accel, *(["-cpu", cpu] if cpu else []),
        "-nodefaults", "-display", "none",
        "-S", "-qmp", f"unix:{sock_dir}/qmp.sock,server=on,wait=off",
        "-chardev", f"socket,id=con0,path={sock_dir}/console.sock,server=on,wait=off", "-serial", "chardev:con0",
    ]
    log_dir.mkdir(parents=True, exist_ok=True)
    return GuestMachine(host, argv, MachineFiles(log_dir, sock_dir))


def _caps(m: GuestMachine) -> dict[str, str]:
    assert m.qmp is not None
    caps = {}
    for prop in m.qmp.execute("qom-list", path="/machine"):
        if prop["name"].startswith("cap-"):
            caps[prop["name"]] = m.qmp.execute("qom-get", path="/machine", property=prop["name"])
    return effective_caps(caps, m.stderr_text())


def probe_build(host: Host, spec: QemuBuildSpec, log_dir: Path, log=print, *, cpus: frozenset[str] = frozenset(),
                tag: str = "caskit-probe") -> QemuBuild:
    """What a build does by default; `cpus`: CPU models whose own cap defaults are wanted too
    (QEMU lowers some caps for older CPUs, e.g. cap-dawr1 off below POWER10)."""
    if spec.debian_suite:
        try:
            binary, fw, _ = suite_build(spec.debian_suite, log=log)
        except CaskitError as e:
            return QemuBuild(spec.name, spec.binary, error=f"cannot fetch from {spec.debian_suite}: {e}")
        spec = QemuBuildSpec(spec.name, str(binary), str(fw))
    try:
        version = _qemu_version(host, spec.binary)
        digest = _binary_sha256(host, spec.binary)
    except CaskitError as e:
        return QemuBuild(spec.name, spec.binary, firmware_dir=spec.firmware_dir, error=str(e))
    try:
        with _paused(host, spec, log_dir, tag) as m:
            assert m.qmp is not None
            try:
                ic_mode = m.qmp.execute("qom-get", path="/machine", property="ic-mode")
            except QmpCommandError:
                ic_mode = "legacy"  # QEMU older than the ic-mode property: XICS only
            machines = m.qmp.execute("query-machines")
            cpu_defs = m.qmp.execute("query-cpu-definitions")
            caps = _caps(m)
        models = tuple(sorted(c["name"].upper() for c in cpu_defs if re.fullmatch(r"power\d+", c["name"], re.I)))
        by_cpu = []
        for cpu in sorted(set(cpus) & set(models)):
            with _paused(host, spec, log_dir / f"cpu-{cpu}", tag, cpu) as m:
                by_cpu.append((cpu, tuple(sorted(_caps(m).items()))))
    except CaskitError as e:
        return QemuBuild(spec.name, spec.binary, version, spec.firmware_dir, error=str(e)[:500], sha256=digest)
    pseries = next((x for x in machines if x.get("alias") == "pseries"), None)
    return QemuBuild(
        name=spec.name,
        binary=spec.binary,
        version=version,
        sha256=digest,
        firmware_dir=spec.firmware_dir,
        default_ic_mode=str(ic_mode),
        machine=pseries["name"] if pseries else None,
        max_cpus=pseries.get("cpu-max") if pseries else None,
        cpu_models=models,
        caps=tuple(sorted(caps.items())),
        caps_by_cpu=tuple(by_cpu),
        machines=tuple(sorted((x["name"] for x in machines if re.fullmatch(r"pseries-\d+\.\d+", x["name"])),
                              key=lambda n: tuple(int(v) for v in re.findall(r"\d+", n)))),
    )


# What QEMU says when the host's KVM cannot give a pseries guest what its machine asks by default:
# a cap level KVM does not provide comes with QEMU's own suggestion (hw/ppc/spapr_caps.c, e.g.
# "Requested safe bounds check capability level not supported by KVM" / "Try appending -machine
# cap-sbbc=broken", measured on nested-papr); HV KVM on a host with smaller pages than the
# guest's HPT maximum has no suggestion (target/ppc/kvm.c; "Can't support 64 kiB guest pages
# with 4 kiB host pages with this KVM implementation", measured on nested-papr, Debian's 6.12).
HINT_RE = re.compile(r"Try appending -machine (cap-[\w-]+=[\w-]+)")
PAGES_RE = re.compile(r"Can't support (\d+) kiB guest pages with (\d+) kiB host pages")
MAX_KVM_TRIALS = 8


def forced_option(stderr: str) -> tuple[str, str] | None:
    """The -machine option QEMU's refusal under KVM asks for, with QEMU's words (pure); None
    when the refusal is of another kind."""
    lines = [l.strip() for l in stderr.splitlines() if l.strip()]
    for i, line in enumerate(lines):
        if m := HINT_RE.search(line):
            why = lines[i - 1] if i and not HINT_RE.search(lines[i - 1]) else line
            return m.group(1), why.removeprefix("qemu-system-ppc64: ")
        if m := PAGES_RE.search(line):
            return f"cap-hpt-max-page-size={m.group(2)}k", line.removeprefix("qemu-system-ppc64: ")
    return None


def kvm_guest_options(host: Host, spec: QemuBuildSpec, log_dir: Path,
                      tag: str) -> tuple[tuple[tuple[str, str], ...], str | None]:
    """The -machine options every pseries guest needs under this host's KVM, found by asking its
    QEMU: a paused machine with `-accel kvm -cpu host`, and each refusal that names what it
    needs adds that option for the next try. Returns (("option", "QEMU's words"), ...) and the
    last refusal when QEMU still would not start (then the cells show it themselves)."""
    forced: list[tuple[str, str]] = []
    for i in range(MAX_KVM_TRIALS):
        try:
            with _paused(host, spec, log_dir / f"kvm-trial-{i}", tag, "host", accel="kvm",
                         machine=tuple(o for o, _ in forced)):
                return tuple(forced), None
        except CaskitError as e:  # refused at start (QemuRefused, LaunchFailure), with QEMU's stderr
            stderr = getattr(e, "stderr", None) or ""
            if not stderr:
                return tuple(forced), str(e)[:300]
        found = forced_option(stderr)
        if found is None or found[0] in {o for o, _ in forced}:
            return tuple(forced), (stderr.strip().splitlines() or ["(no words)"])[-1][:300]
        forced.append(found)
    return tuple(forced), f"still refused after {MAX_KVM_TRIALS} options"


def effective_caps(defaults: dict, stderr: str) -> dict[str, str]:
    """The cap-* levels the host really provides: QEMU's defaults, less what it warned it cannot
    do ("TCG doesn't support requested feature, cap-cfpc=workaround", or KVM's equivalent)."""
    out = {k: str(v).lower() if isinstance(v, bool) else str(v) for k, v in defaults.items()}
    for cap, _ in re.findall(r"doesn't support requested feature, (cap-[\w-]+)=(\S+)", stderr):
        out[cap] = "false" if out.get(cap) in ("true", "false") else "broken"
    return out


def _kvm_local() -> tuple[str, bool, bool]:
    modules = {m for m in ("kvm_hv", "kvm_pr") if os.path.exists(f"/sys/module/{m}")}
    cpuinfo = Path("/proc/cpuinfo").read_text(errors="replace")
    return kvm_mode_from(platform.machine(), os.path.exists("/dev/kvm"), modules, cpuinfo)


def probe_local(spec: HostSpec, log_dir: Path, builds: set[str] | None = None, log=print, *,
                cpus: frozenset[str] = frozenset(), tag: str = "caskit-probe") -> HostFacts:
    host = LocalHost(spec.name, spec.slots)
    cpu = ""
    for line in Path("/proc/cpuinfo").read_text(errors="replace").splitlines():
        if line.lower().startswith(("model name", "cpu\t", "cpu :")):
            cpu = line.split(":", 1)[1].strip()
            break
    kvm_mode, kvm_xics, kvm_xive = _kvm_local()
    # Builds fetched on first use (backports) are probed only when asked for: no network otherwise.
    wanted = [b for b in spec.qemu if (builds is None and not b.debian_suite) or (builds is not None and b.name in builds)]
    probed = tuple(probe_build(host, b, log_dir / f"probe-{spec.name}-{b.name}", log, cpus=cpus, tag=tag)
                   for b in wanted)
    return HostFacts(spec.name, platform.machine(), cpu, kvm_mode, kvm_xics, kvm_xive, spec.slots, probed)


def kvm_mode_from(arch: str, has_dev_kvm: bool, modules: set[str], platform_line: str) -> tuple[str, bool, bool]:
    """KVM mode of a host from what it shows (pure). An x86 /dev/kvm cannot run POWER guests."""
    if not arch.startswith("ppc64") or not has_dev_kvm:
        return "tcg-only", False, False
    if "kvm_hv" in modules:
        nested = "pSeries" in platform_line and "PowerNV" not in platform_line
        # A host without the capability probe (kvmcaps): what cas-rules section 5 measured.
        return ("hv-nested", True, False) if nested else ("hv", True, True)
    if "kvm_pr" in modules:
        return "pr", False, False
    return "tcg-only", False, False


# One command for all of a remote host's facts: fewer round trips, and one place that parses.
REMOTE_FACTS = r"""
echo "arch=$(uname -m)"
echo "kernel=$(uname -r)"
test -e /dev/kvm && echo dev_kvm=1
for m in kvm_hv kvm_pr; do test -d /sys/module/$m && echo "module=$m"; done
grep -m1 -iE '^(model name|cpu)[[:space:]]*:' /proc/cpuinfo | sed 's/^[^:]*:[[:space:]]*/cpu=/'
grep -m1 -iE '^platform[[:space:]]*:' /proc/cpuinfo | sed 's/^[^:]*:[[:space:]]*/platform=/'
grep -m1 -iE '^revision[[:space:]]*:.*pvr' /proc/cpuinfo | sed 's/.*pvr[[:space:]]*\([0-9a-fA-F]*\)[[:space:]]*\([0-9a-fA-F]*\).*/pvr=0x\1\2/'
if command -v kvmcaps >/dev/null 2>&1; then echo "@@kvmcaps"; kvmcaps 2>&1; echo "@@kvmcaps-end"; fi
"""


def probe_remote(host: Host, spec: HostSpec, log_dir: Path, builds: set[str] | None = None, log=print, *,
                 cpus: frozenset[str] = frozenset(), tag: str = "caskit-probe") -> HostFacts:
    code, out, err = host.run(["sh", "-c", REMOTE_FACTS], timeout=120)
    if code != 0:
        raise CaskitError(f"host {spec.name}: probing failed (exit {code}): {err.strip()[-300:]}")
    caps_text = None
    if "@@kvmcaps\n" in out:
        head, rest = out.split("@@kvmcaps\n", 1)
        caps_text, out = rest.split("@@kvmcaps-end", 1)[0], head
    kv: dict[str, list[str]] = {}
    for line in out.splitlines():
        if "=" in line:
            k, v = line.split("=", 1)
            kv.setdefault(k.strip(), []).append(v.strip())
    if "arch" not in kv:
        raise CaskitError(f"host {spec.name}: the probe's reply has no architecture: {out[:300]!r}")
    arch = kv["arch"][0]
    kvm = kvm_facts(spec.name, arch, kv, caps_text)
    wanted = [b for b in spec.qemu if builds is None or b.name in builds]
    probed = tuple(probe_build(host, b, log_dir / f"probe-{spec.name}-{b.name}", log, cpus=cpus, tag=tag)
                   for b in wanted)
    trial: dict = {}
    installed = next((b for b in spec.qemu if not b.debian_suite), None)
    if kvm["kvm_mode"] != "tcg-only" and spec.machine_options is None and installed is not None:
        forced, refusal = kvm_guest_options(host, installed, log_dir / f"probe-{spec.name}-kvm", tag)
        trial = dict(forced_options=forced, kvm_guest_refusal=refusal)
    pvr = kv.get("pvr", [None])[0]
    return HostFacts(spec.name, arch, kv.get("cpu", [""])[0], slots=spec.slots, qemu=probed, **kvm, **trial,
                     cpu_pvr=pvr if pvr and re.fullmatch(r"0x[0-9a-fA-F]{8}", pvr) else None)


def kvm_facts(name: str, arch: str, kv: dict[str, list[str]], caps_text: str | None) -> dict:
    """The KVM part of a host's facts: from the capability probe where the host has it (its
    answers decide: the capabilities, never the host's name), else from the modules and platform
    line, as cas-rules section 5 measured them (and said so in `kvm_probe`)."""
    platform_line = " ".join(kv.get("platform", []))
    if caps_text is not None:
        try:
            c = kvmcaps.parse(caps_text)
        except CaskitError as e:
            raise CaskitError(f"host {name}: its kvmcaps output cannot be read: {e}") from e
        note = None
        if c.kvm_mode == "tcg-only" and arch.startswith("ppc64"):
            note = ("no /dev/kvm" if not c.dev_kvm else "neither kvm_hv nor kvm_pr works") + \
                   (f" ({', '.join(f'{k}: {v}' for k, v in c.errors.items())})" if c.errors else "")
        api, evidence = c.nested_api
        return dict(kvm_mode=c.kvm_mode, kvm_xics=c.in_kernel_xics, kvm_xive=c.in_kernel_xive, kvm_probe="kvmcaps",
                    platform=c.platform or platform_line, xive_backend=c.xive_backend,
                    kvm_hv_nested=c.nested_param, kvm_caps=tuple(sorted(c.caps.items())), kvm_note=note,
                    nested_api=api, nested_api_evidence=evidence if api else None, page_size=c.page_size)
    mode, xics, xive = kvm_mode_from(arch, "dev_kvm" in kv, set(kv.get("module", [])), platform_line)
    return dict(kvm_mode=mode, kvm_xics=xics, kvm_xive=xive, kvm_probe="assumed" if mode != "tcg-only" else "",
                platform=platform_line,
                kvm_note="no kvmcaps on this host: in-kernel controllers assumed from its KVM mode"
                if mode != "tcg-only" else None)


def probe(spec: HostSpec, log_dir: Path, builds: set[str] | None = None, log=print, *,
          cpus: frozenset[str] = frozenset(), tag: str = "caskit-probe") -> HostFacts:
    """Probe a host; `builds` limits which QEMU builds (None: every build that needs no fetch);
    `cpus`: CPU models whose cap defaults a migration domain's pin needs; `tag`: the `-name`
    of the probe machines (the run's tag, so `caskit cleanup` finds them)."""
    if spec.kind in ("ssh", "emulated"):
        facts = probe_remote(make_host(spec), spec, log_dir, builds, log, cpus=cpus, tag=tag)
    elif spec.kind == "local":
        facts = probe_local(spec, log_dir, builds, log, cpus=cpus, tag=tag)
    else:
        raise CaskitError(f"host {spec.name}: kind {spec.kind} cannot be probed")
    return replace(facts, guest_machine_options=guest_machine_options(spec, facts.forced_options),
                   guest_append=guest_append(spec), **l0_facts(spec))
