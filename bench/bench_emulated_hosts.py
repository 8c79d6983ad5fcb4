"""What caskit's emulated POWER9 KVM hosts cost and what they offer, measured.

    .venv/bin/python bench/bench_emulated_hosts.py [--kinds nested-hv,powernv9] [--l2 full|one|none]
                                                   [--fresh-cache] [--json FILE] [--up-host NAME] [--smoke]

1. The L1 image (harness/emulated/image.py): built with the packages cached but nothing else (a temp
   CASKIT_CACHE whose apt/ and unpacked/ are the real cache's), then warm (from its cache).
   `--fresh-cache` also times a build from an empty cache (apt-get update, every download).
2. Per kind, one L1 after the other (never two at once: the machine has two cores):
   - boot 1 ("cold": the first boot of this image and per-host initramfs by this process) and
     boot 2 ("warm": the same again right after): spawn to the ready marker, to the first command
     answered over SSH, the L1 kernel's own uptime at the marker;
   - `kvmcaps` (full output kept in the JSON, parsed figures printed), `qemu-system-ppc64 --version`;
   - a remote command (`true`, 10 times), a python3 start (`-c pass`, and the imports of caskit's
     socket bridge, 5 times each), a slot lease (flock on the host), the guest kit over SFTP (first
     time, then found again by hash);
   - L2 guests with `-accel kvm`: ic-mode dual/xics/xive x kernel-irqchip default/on/off (`--l2
     full`, the default), or dual/default only (`one`): launch, boot, what the guest and QEMU's
     `info pic` say, QEMU's refusal or warnings;
   - power-off: how (clean or SIGKILL) and how long.

Every L1 is stopped by PID before the next starts and at exit (also on Ctrl-C); the script checks
with /proc that no QEMU it started is left and exits 1 if one is. Results go to
bench/results/emulated-latest.json (git-ignored) unless --json says otherwise.

`--up-host NAME`: measure an emulated host that is already up (`caskit hosts up NAME`, or a test's
L1) instead of booting one per kind: no boot or power-off figures, and the host is left up.

`--smoke`: the least that runs all of the above once: the image looked up in the real cache only
(one build in a fresh process, no temp-cache builds), the nested-hv kind only (with --up-host:
that host's kind), one boot (no second "warm" one), each remote command once or twice, one L2
(dual, kernel-irqchip default); the figures go to a temporary file unless --json says where;
exit 1 unless every figure was taken (the L1 answered, kvmcaps parsed, the kit staged, the L2
booted and was observed) and no QEMU of it is left.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import _smoke  # noqa: E402
from harness import kit as kitmod  # noqa: E402
from harness.emulated import kvmcaps  # noqa: E402
from harness.emulated import host as emulated  # noqa: E402

L2_FULL = [(ic, k) for ic in ("dual", "xics", "xive") for k in ("default", "on", "off")]


def timed(fn, *a, **kw):
    t = time.monotonic()
    r = fn(*a, **kw)
    return r, round(time.monotonic() - t, 3)


def build_in(cache: Path, link_from: Path | None, kernel_suite: str | None = None) -> dict:
    """An image build in a fresh process with CASKIT_CACHE=cache (the import cost counted apart);
    `kernel_suite`: the kind's kernel (None: the guest kit's)."""
    cache.mkdir(parents=True, exist_ok=True)
    if link_from is not None:
        for d in ("apt", "unpacked"):
            if not (cache / d).exists():
                (cache / d).symlink_to(link_from / d)
    code = ("import time, json; t0 = time.monotonic(); from harness.emulated import image as l1image; t1 = time.monotonic(); "
            f"img = l1image.build(log=lambda m: None, kernel_suite={kernel_suite!r}); t2 = time.monotonic(); "
            "print(json.dumps({'import_s': round(t1 - t0, 3), 'build_s': round(t2 - t1, 3), 'key': img.key, "
            "'initrd_bytes': img.initrd.stat().st_size, 'kernel_bytes': img.kernel.stat().st_size, "
            "'uncompressed_bytes': img.manifest['uncompressed_bytes'], 'files': img.manifest['files'], "
            "'kernel_release': img.manifest['kernel_release'], "
            "'packages': len(img.manifest['packages']), 'used_packages': len(img.manifest['used_packages']), "
            "'timings_s': img.manifest['timings_s']}))")
    env = {**os.environ, "CASKIT_CACHE": str(cache)}
    p = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True)
    if p.returncode != 0:
        raise SystemExit(f"image build failed: {p.stderr[-2000:]}")
    return json.loads(p.stdout.strip().splitlines()[-1])


def bench_image(fresh: bool, kernel_suite: str | None = None) -> dict:
    out: dict = {"kernel_suite": kernel_suite}
    real = kitmod.cache_root()
    with tempfile.TemporaryDirectory(prefix="ck-l1bench-") as tmp:
        out["cold_packages_cached"] = build_in(Path(tmp) / "c1", real, kernel_suite)
        out["warm"] = build_in(Path(tmp) / "c1", real, kernel_suite)
        if fresh:
            out["cold_empty_cache"] = build_in(Path(tmp) / "c2", None, kernel_suite)
    out["warm_in_real_cache"] = build_in(real, None, kernel_suite)
    return out


def med(xs: list[float]) -> float:
    return round(statistics.median(xs), 3)


# Repeats of the remote commands: `true`, python3 -c pass (the first one apart), the bridge's
# imports, slot leases.
COUNTS = {"true": 10, "python_pass": 5, "bridge": 5, "lease": 3}
SMOKE_COUNTS = {"true": 2, "python_pass": 2, "bridge": 1, "lease": 1}


def bench_kind(kind: str, l2: str, kit, log_root: Path, *, up_host: str | None = None, counts: dict = COUNTS,
               warm_boot: bool = True) -> dict:
    """One kind: booted here (and stopped, then booted again if `warm_boot`), or `up_host`, a
    host of this kind that is already up (left up)."""
    name = up_host or f"bench-{kind}"
    h = emulated.EmulatedHost(name, kind)
    res: dict = {"kind": kind, "host": name}
    try:
        if up_host:
            res["boot_cold"] = None  # not booted here
        else:
            st = h.up(log=print)
            res["boot_cold"] = {"ready_s": st.ready_s, "ssh_s": st.ssh_s, "guest_uptime_s": st.guest_uptime_s,
                                "warnings": st.warnings}
        s = h.ssh()
        (code, out, err), t = timed(s.run, ["kvmcaps"], 120)
        caps = kvmcaps.parse(out)
        res["kvmcaps"] = {"seconds": t, "output": out, "kvm_mode": caps.kvm_mode, "in_kernel_xics": caps.in_kernel_xics,
                          "in_kernel_xive": caps.in_kernel_xive, "xive_backend": caps.xive_backend,
                          "nested_param": caps.nested_param, "errors": caps.errors}
        (code, out, err), t = timed(s.run, ["qemu-system-ppc64", "--version"], 60)
        res["qemu_version"] = {"seconds": t, "output": out.splitlines()[0] if out else err}
        res["true_s"] = [timed(s.run, ["true"], 60)[1] for _ in range(counts["true"])]
        res["python_pass_s"] = [timed(s.run, ["python3", "-c", "pass"], 60)[1] for _ in range(counts["python_pass"])]
        res["python_bridge_imports_s"] = [timed(s.run, ["python3", "-c", "import os, socket, sys, threading, time"],
                                                60)[1] for _ in range(counts["bridge"])]

        def lease_once():
            with s.lease(60):
                pass

        res["lease_s"] = [timed(lease_once)[1] for _ in range(counts["lease"])]
        _, res["stage_kit_first_s"] = timed(s.stage_kit, kit)
        s._kits.clear()  # forget the controller's memo: the hash check on the host is what is timed
        _, res["stage_kit_again_s"] = timed(s.stage_kit, kit)
        combos = L2_FULL if l2 == "full" else [("dual", "default")] if l2 == "one" else []
        res["l2"] = []
        for ic, kirq in combos:
            o = emulated.run_l2(s, emulated.KINDS[kind], kit, ic_mode=ic, kernel_irqchip=kirq,
                                log_dir=log_root / kind / f"{ic}-{kirq}")
            res["l2"].append(asdict(o))
            print(f"  L2 {kind} ic-mode={ic} kernel-irqchip={kirq}: "
                  + (f"{o.host_mode} {o.irqchip} (guest {o.guest_mode}, byte23 {o.platform_support}), "
                     f"launch {o.launch_s}s boot {o.boot_s}s" if o.irqchip else f"{o.stage}: {o.error}"))
        if up_host:
            res["down_1"] = res["boot_warm"] = None  # left up: someone else's
            return res
        res["down_1"] = h.down(log=print)
        res["boot_warm"] = None
        if warm_boot:
            st = h.up(log=print)
            res["boot_warm"] = {"ready_s": st.ready_s, "ssh_s": st.ssh_s, "guest_uptime_s": st.guest_uptime_s}
            res["down_2"] = h.down(log=print)
    finally:
        if not up_host:
            h.down(log=print)
    return res


def smoke_problems(report: dict) -> list[str]:
    """What --smoke needs to have measured."""
    problems = []
    if not (report.get("image") or {}).get("warm_in_real_cache", {}).get("key"):
        problems.append("no L1 image found in the cache")
    if not report.get("kinds"):
        problems.append("no kind measured")
    for kind, r in report.get("kinds", {}).items():
        if r.get("boot_cold") is not None and not (r["boot_cold"].get("ready_s") and r["boot_cold"].get("ssh_s")):
            problems.append(f"{kind}: no boot figures: {r['boot_cold']}")
        caps = r.get("kvmcaps") or {}
        if not caps.get("kvm_mode") or not caps.get("in_kernel_xics"):
            problems.append(f"{kind}: kvmcaps says no KVM mode or no in-kernel XICS: {caps.get('errors')}")
        for k in ("true_s", "python_pass_s", "python_bridge_imports_s", "lease_s"):
            if not r.get(k) or not all(x > 0 for x in r[k]):
                problems.append(f"{kind}: {k}: {r.get(k)}")
        if not (r.get("stage_kit_first_s") and r.get("stage_kit_again_s")):
            problems.append(f"{kind}: the kit was not staged")
        if not r.get("l2"):
            problems.append(f"{kind}: no L2 ran")
        for o in r.get("l2") or []:
            if not (o["started"] and o["boot_s"] and o["irqchip"] and o["host_mode"] and o["guest_mode"]):
                problems.append(f"{kind}: L2 ic-mode={o['ic_mode']} kernel-irqchip={o['kernel_irqchip']}: "
                                f"{o['stage']}: {o['error']}")
    if report.get("leftovers"):
        problems.append(f"left running: {report['leftovers']}")
    return problems


def leftovers() -> list[str]:
    left = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                argv = (d / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if any(a.startswith(emulated.TAG_PREFIX.encode() + b"bench-") for a in argv):
                left.append(f"pid {d.name}: {b' '.join(argv)[:120].decode(errors='replace')}")
    return left


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--kinds", default="nested-hv,powernv9")
    ap.add_argument("--l2", choices=("full", "one", "none"), default="full")
    ap.add_argument("--fresh-cache", action="store_true", help="also time a build from an empty cache (network)")
    ap.add_argument("--skip-image", action="store_true")
    ap.add_argument("--up-host", metavar="NAME", help="measure this emulated host, already up, instead of booting one "
                                                      "per kind (no boot figures; it is left up)")
    _smoke.add_args(ap, "emulated-latest")
    a = ap.parse_args()
    jpath = _smoke.json_path(a.json, a.smoke, "emulated-latest")
    _smoke.sigterm_unwinds()
    if a.up_host:
        st = emulated.L1State.load(a.up_host)
        if st is None or not emulated.is_up(a.up_host):
            raise SystemExit(f"emulated host {a.up_host} is not up: caskit hosts up {a.up_host}")
        a.kinds = st.kind
    if a.smoke:
        a.kinds, a.l2, a.fresh_cache = a.kinds if a.up_host else "nested-hv", "one", False
    report: dict = {"started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "loadavg": os.getloadavg(),
                    "smoke": a.smoke, "up_host": a.up_host}
    t0 = time.monotonic()
    if a.smoke:  # the image as a run finds it: in the real cache, one build in a fresh process
        report["image"] = {"warm_in_real_cache": build_in(kitmod.cache_root(), None)}
    elif not a.skip_image:
        # One image per kernel the kinds boot (nested-papr's is bookworm-backports' 6.12).
        suites = dict.fromkeys(emulated.KINDS[k].kernel_suite for k in a.kinds.split(","))
        report["image"] = {s or "default": bench_image(a.fresh_cache, s) for s in suites}
        print(json.dumps(report["image"], indent=1))
    kit = kitmod.build(log=lambda m: None)
    log_root = Path(tempfile.mkdtemp(prefix="ck-l1bench-logs-"))
    report["kinds"] = {}
    try:
        for kind in a.kinds.split(","):
            report["kinds"][kind] = r = bench_kind(kind, a.l2, kit, log_root, up_host=a.up_host,
                                                   counts=SMOKE_COUNTS if a.smoke else COUNTS, warm_boot=not a.smoke)
            cold, warm = r["boot_cold"] or {}, r["boot_warm"] or {}
            print(f"{kind}: boot cold ready {cold.get('ready_s')}s ssh {cold.get('ssh_s')}s; "
                  f"warm ready {warm.get('ready_s')}s ssh {warm.get('ssh_s')}s; "
                  f"kvm_mode {r['kvmcaps']['kvm_mode']} xics {r['kvmcaps']['in_kernel_xics']} "
                  f"xive {r['kvmcaps']['in_kernel_xive']}; true {med(r['true_s'])}s; python3 pass "
                  f"{r['python_pass_s'][0]}s first, {med(r['python_pass_s'][1:])}s after; bridge imports "
                  f"{med(r['python_bridge_imports_s'])}s; lease {med(r['lease_s'])}s; kit {r['stage_kit_first_s']}s "
                  f"then {r['stage_kit_again_s']}s; {r['down_1']}")
    finally:
        report["seconds"] = round(time.monotonic() - t0, 1)
        report["leftovers"] = leftovers()
        report["problems"] = problems = smoke_problems(report) if a.smoke else []
        _smoke.write(jpath, report)
        shutil.rmtree(log_root, ignore_errors=True)
    print(f"total {report['seconds']}s; results in {jpath}")
    if report["leftovers"]:
        print("LEFT RUNNING:", *report["leftovers"], sep="\n  ")
        return 1
    return _smoke.status(problems, a.smoke)


if __name__ == "__main__":
    sys.exit(main())
