"""The caskit command line.

caskit run [MATRIX ...] [--hosts FILE] [--out DIR] [-n N] [--resume]
caskit matrix MATRIX ...          cells and their expected outcomes; boots nothing
caskit kit build [--refresh]      the guest kit, cached
caskit hosts probe [NAME]         HostFacts as JSON
caskit report DIR [--baseline DIR]
caskit domain NAME                machine options pinning a migration domain's common capabilities
caskit cleanup [RUN_ID]           stop QEMU processes left by a crashed run (by PID)

Exit status: 0 all PASS/XFAIL/SKIP, 1 any FAIL, 2 usage or config error, 3 any ERROR without FAIL.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from .errors import CaskitError, ConfigError
from .results import EXIT_ERROR, EXIT_OK, EXIT_USAGE, exit_status


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # argparse's own exit code is 2 as well; keep its message style
        self.print_usage(sys.stderr)
        print(f"caskit: error: {message}", file=sys.stderr)
        sys.exit(EXIT_USAGE)


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog="caskit", description="POWER9 interrupt controller (XICS/XIVE) CAS test harness")
    sub = p.add_subparsers(dest="cmd", parser_class=_Parser)
    r = sub.add_parser("run", help="run matrices (default: quick on the local TCG host)")
    r.add_argument("matrices", nargs="*", help="matrix files or names under configs/matrices")
    r.add_argument("--hosts", help="host inventory (default configs/hosts.yaml)")
    r.add_argument("--out", help="output directory (default reports/<run-id>)")
    r.add_argument("-n", dest="workers", default="1", help="parallel workers (pytest-xdist), or auto")
    r.add_argument("--resume", action="store_true", help="keep finished cells found in --out")
    r.add_argument("--known-issues", help="known-issues file (default configs/known-issues.yaml)")
    r.add_argument("-v", "--verbose", action="store_true")
    m = sub.add_parser("matrix", help="list cells and expected outcomes; boots nothing")
    m.add_argument("matrices", nargs="+")
    m.add_argument("--hosts")
    m.add_argument("--json", action="store_true", help="machine-readable output")
    k = sub.add_parser("kit", help="guest kit")
    ksub = k.add_subparsers(dest="kitcmd", parser_class=_Parser)
    kb = ksub.add_parser("build", help="build (or find cached) the guest kit")
    kb.add_argument("--refresh", action="store_true", help="ask apt for newer packages")
    h = sub.add_parser("hosts", help="host inventory")
    hsub = h.add_subparsers(dest="hostcmd", parser_class=_Parser)
    hp = hsub.add_parser("probe", help="probe hosts and print their HostFacts")
    hp.add_argument("name", nargs="?")
    hp.add_argument("--hosts")
    hb = hsub.add_parser("build", help="build (or find cached) the emulated hosts' L1 image")
    hb.add_argument("name", nargs="?", help="an emulated host of the inventory (all share one image)")
    hb.add_argument("--refresh", action="store_true", help="ask apt for newer packages")
    hb.add_argument("--hosts")
    hu = hsub.add_parser("up", help="boot an emulated host and leave it running")
    hu.add_argument("name")
    hu.add_argument("--hosts")
    hd = hsub.add_parser("down", help="stop an emulated host (every running one without NAME)")
    hd.add_argument("name", nargs="?")
    hd.add_argument("--hosts")
    hl = hsub.add_parser("list", help="every inventory host and, for emulated ones, their state")
    hl.add_argument("--hosts")
    rep = sub.add_parser("report", help="rewrite junit.xml and report.html from results.json")
    rep.add_argument("dir")
    rep.add_argument("--baseline", help="an earlier run's directory to compare with")
    d = sub.add_parser("domain", help="the machine options that pin a migration domain's common capabilities")
    d.add_argument("name")
    d.add_argument("--hosts")
    e = sub.add_parser("explain", help="predict, per KVM mode, what a QEMU command line's guest negotiates",
                       usage="caskit explain [--run HOST] [--hosts FILE] [--out DIR] -- qemu-system-ppc64 ARGS...")
    e.add_argument("--run", metavar="HOST", help="also boot it on this inventory host and show what happened")
    e.add_argument("--hosts")
    e.add_argument("--out", help="where --run keeps the cell's logs (default: a temporary directory, removed)")
    e.add_argument("qemu_argv", nargs=argparse.REMAINDER)
    c = sub.add_parser("cleanup", help="stop QEMU processes left by caskit runs")
    c.add_argument("run_id", nargs="?", default="")
    c.add_argument("--hosts", help="host inventory (default: configs/hosts.yaml); its SSH hosts are cleaned too")
    return p


def cmd_run(a) -> int:
    import pytest

    from . import prepare

    try:
        prepare.load_plan(a.matrices, a.hosts, a.known_issues)  # validate before anything boots
    except ConfigError as e:
        print(f"caskit: config error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as e:  # a file named on the command line that the OS refuses to look at (name too long)
        print(f"caskit: config error: {e.filename}: cannot read: {e.strerror or e}", file=sys.stderr)
        return EXIT_USAGE
    run_id = prepare.new_run_id()
    try:
        out = Path(a.out or prepare.reports_dir() / run_id).resolve()
        earlier = out.exists() and any(out.iterdir()) and (
            (out / "results.json").exists() or (out / "cells").exists())
    except OSError as e:  # --out names a file, or a name too long
        print(f"caskit: error: --out {a.out}: {e.strerror or e}", file=sys.stderr)
        return EXIT_USAGE
    if earlier and not a.resume:
        print(f"caskit: {out} holds an earlier run; use --resume or another --out", file=sys.stderr)
        return EXIT_USAGE
    # rootdir: the directory holding the package (the checkout, or site-packages), so a cell's
    # node id is harness/celltest.py::... either way.
    args = ["-p", "no:cacheprovider", "-o", "addopts=", "-q",
            "--rootdir", str(Path(__file__).resolve().parent.parent), "--caskit-out", str(out), "--caskit-run-id", run_id,
            "--junitxml", str(out / "pytest-junit.xml")]
    for m in a.matrices:
        args += ["--caskit-matrix", m]
    if not a.matrices:
        args += ["--caskit-matrix", prepare.DEFAULT_MATRIX]
    if a.hosts:
        args += ["--caskit-hosts", a.hosts]
    if a.resume:
        args.append("--caskit-resume")
    if a.known_issues:
        args += ["--caskit-known-issues", str(Path(a.known_issues).resolve())]
    if a.workers not in ("0", "1"):
        args += ["-n", a.workers]
    if not a.verbose:
        args += ["--tb=no", "-p", "no:warnings"]
    rc = pytest.main(args, plugins=[])
    if rc in (pytest.ExitCode.USAGE_ERROR,):
        return EXIT_USAGE
    from .results import load_results
    try:
        results = load_results(out)
    except ConfigError:
        print(f"caskit: the run ended without results (pytest exit {int(rc)})", file=sys.stderr)
        return EXIT_ERROR
    return exit_status(results["cells"], len(results["run"].get("cell_order", [])))


def cmd_matrix(a) -> int:
    from . import model, prepare

    try:
        p = prepare.load_plan(a.matrices, a.hosts)
    except ConfigError as e:
        print(f"caskit: config error: {e}", file=sys.stderr)
        return EXIT_USAGE
    import tempfile
    with tempfile.TemporaryDirectory(prefix="caskit-matrix-") as tmp:
        facts = prepare.probe_hosts(p, Path(tmp), log=lambda m: print(m, file=sys.stderr), boot=False)
    cells, _ = prepare.pin_cells(p, facts)  # the cells as a run would have them (domain-pinned)
    rows = []
    for c in cells:
        if facts[c.host].error:
            rows.append({"id": c.id, "axes": c.axes_dict, "host_error": facts[c.host].error,
                         "explain": f"ERROR: host {c.host} unreachable"})
            continue
        e = model.predict(c, facts[c.host])
        explain = model.explain(e)
        if c.migration != "none":
            explain += f"; then {c.migration}" + (f" via {'/'.join(c.peer)}" if c.peer else "")
        rows.append({"id": c.id, "axes": c.axes_dict, "pinned": list(c.pinned), "peer": list(c.peer),
                     "migration": c.migration, "expected": e.to_dict(), "explain": explain})
    if a.json:
        print(json.dumps(rows, indent=2))
        return EXIT_OK
    width = max(len(r["id"]) for r in rows) if rows else 10
    for r in rows:
        print(f"{r['id']:<{width}}  {r['explain']}")
    print(f"{len(rows)} cells", file=sys.stderr)
    return EXIT_OK


def cmd_kit(a) -> int:
    from . import kit

    if a.kitcmd != "build":
        print("caskit: usage: caskit kit build [--refresh]", file=sys.stderr)
        return EXIT_USAGE
    k = kit.build(refresh=a.refresh)
    print(json.dumps({"key": k.key, "kernel": str(k.kernel), "initrd": str(k.initrd),
                      "kernel_release": k.manifest.get("kernel_release"),
                      "packages": {n: p["version"] for n, p in k.manifest.get("packages", {}).items()}}, indent=2))
    return EXIT_OK


def cmd_hosts(a) -> int:
    import tempfile

    from .hosts import probe
    from .config import load_hosts

    if a.hostcmd in ("build", "up", "down", "list"):
        return cmd_hosts_emulated(a)
    if a.hostcmd != "probe":
        print("caskit: usage: caskit hosts probe|build|up|down|list [NAME]", file=sys.stderr)
        return EXIT_USAGE
    hosts = load_hosts(a.hosts)
    names = [a.name] if a.name else sorted(hosts)
    for n in names:
        if n not in hosts:
            raise ConfigError(a.hosts or "configs/hosts.yaml", "hosts", f"unknown host {n!r}; known: {', '.join(sorted(hosts))}")
    with tempfile.TemporaryDirectory(prefix="caskit-probe-") as tmp:
        print(json.dumps({n: probe.probe(hosts[n], Path(tmp), {b.name for b in hosts[n].qemu},
                                         log=lambda m: print(m, file=sys.stderr)).to_dict() for n in names}, indent=2))
    return EXIT_OK


def _emulated_spec(hosts: dict, name: str | None, inventory: str | None):
    if name is None:
        return None
    if name not in hosts or hosts[name].kind != "emulated":
        emulated = sorted(n for n, h in hosts.items() if h.kind == "emulated")
        raise ConfigError(inventory or "configs/hosts.yaml", "hosts",
                          f"{name!r} is not an emulated host of the inventory; emulated hosts: {', '.join(emulated) or '(none)'}")
    return hosts[name]


def cmd_hosts_emulated(a) -> int:
    """Emulated POWER9 KVM hosts: their image, and booting and stopping them by name."""
    from . import l1image
    from .config import load_hosts
    from .hosts import emulated

    log = lambda m: print(m, file=sys.stderr)  # noqa: E731
    hosts = load_hosts(a.hosts)
    spec = _emulated_spec(hosts, getattr(a, "name", None), a.hosts)
    if a.hostcmd == "build":
        img = l1image.build(refresh=a.refresh, log=log)
        print(json.dumps({"key": img.key, "kernel": str(img.kernel), "initrd": str(img.initrd),
                          "packages": len(img.manifest.get("packages", {}))}, indent=2))
        return EXIT_OK
    if a.hostcmd == "up":
        st = emulated.EmulatedHost(spec.name, str(spec.emulated_kind), slots=spec.slots).up(port=spec.port, log=log)
        print(f"caskit: {spec.name} ({spec.emulated_kind}) is up: pid {st.pid}, ssh on 127.0.0.1:{st.port}")
        return EXIT_OK
    if a.hostcmd == "down":
        names = [spec.name] if spec else [s.name for s in emulated.list_states() if emulated.running(s)]
        for n in names:
            print(f"caskit: {n}: {emulated.down(n, log=log)}")
        return EXIT_OK
    states = {s.name: s for s in emulated.list_states()}
    for n, h in sorted(hosts.items()):
        if h.kind != "emulated":
            print(f"{n:<16} {h.kind:<9} slots {h.slots}")
            continue
        st = states.get(n)
        state = "down" if st is None or not emulated.running(st) else f"{st.status}, pid {st.pid}, port {st.port}"
        print(f"{n:<16} emulated  {h.emulated_kind:<10} slots {h.slots}  {state}")
    return EXIT_OK


def cmd_report(a) -> int:
    from .report import write_reports
    from .results import load_results

    results = load_results(Path(a.dir))
    write_reports(Path(a.dir), results)
    print(f"caskit: wrote {a.dir}/junit.xml and {a.dir}/report.html")
    if a.baseline:
        base = {c["id"]: c for c in load_results(Path(a.baseline))["cells"]}
        changed = 0
        for c in results["cells"]:
            b = base.get(c["id"])
            if b is None:
                print(f"new      {c['id']}: {c['verdict']}")
                changed += 1
            elif (b["verdict"], b["observed"].get("mode")) != (c["verdict"], c["observed"].get("mode")):
                print(f"changed  {c['id']}: {b['verdict']}/{b['observed'].get('mode')} -> "
                      f"{c['verdict']}/{c['observed'].get('mode')}")
                changed += 1
        gone = set(base) - {c["id"] for c in results["cells"]}
        for g in sorted(gone):
            print(f"missing  {g}")
        print(f"caskit: {changed} new or changed cells, {len(gone)} missing against {a.baseline}")
    return exit_status(results["cells"])


def cmd_domain(a) -> int:
    import tempfile

    from . import prepare
    from .hosts import probe
    from .config import load_domains, load_hosts

    hosts, domains = load_hosts(a.hosts), load_domains(a.hosts)
    if a.name not in domains:
        raise ConfigError(a.hosts or "configs/hosts.yaml", "domains",
                          f"unknown domain {a.name!r}; domains: {', '.join(sorted(domains)) or '(none)'}")
    spec = domains[a.name]
    with tempfile.TemporaryDirectory(prefix="caskit-domain-") as tmp:
        facts = {h: probe.probe(hosts[h], Path(tmp), set(spec.qemu) or None, log=lambda m: print(m, file=sys.stderr))
                 for h in spec.hosts}
    pin = prepare.domain_pin(spec, facts)
    print(json.dumps({"domain": a.name, "hosts": list(spec.hosts), "qemu": list(spec.qemu) or "all",
                      **pin.to_dict()}, indent=2))
    print(f"-machine {pin.to_dict()['machine_option']}", file=sys.stderr)
    return EXIT_OK


def cmd_cleanup(a) -> int:
    from .hosts import kill_tagged

    killed = kill_tagged(f"caskit:{a.run_id}")
    print(f"caskit: stopped {len(killed)} QEMU process(es): {' '.join(map(str, killed))}")
    from .config import load_hosts
    from .hosts import make_host
    for name, spec in load_hosts(a.hosts).items():
        if spec.kind == "ssh":
            remote = make_host(spec).kill_tagged(f"caskit:{a.run_id}")
            print(f"caskit: {name}: stopped {len(remote)} QEMU process(es): {' '.join(map(str, remote))}")
    return EXIT_OK


def _explain_build(binary: str, log) -> "object":
    """What the model needs of the QEMU build the command line names: probed when it can run
    here (its default ic-mode, CPU models, cpu-max), else the host's own qemu-system-ppc64."""
    import shutil
    import tempfile

    from .config import QemuBuildSpec
    from .hosts import LocalHost, probe

    exe = binary if "/" in binary else (shutil.which(binary) or "")
    if not exe or not Path(exe).is_file():
        exe = shutil.which("qemu-system-ppc64") or binary
    with tempfile.TemporaryDirectory(prefix="caskit-explain-") as tmp:
        return probe.probe_build(LocalHost(), QemuBuildSpec("system", exe), Path(tmp), log)


def cmd_explain(a) -> int:
    from . import explain

    argv = a.qemu_argv[1:] if a.qemu_argv[:1] == ["--"] else a.qemu_argv
    parsed = explain.parse_argv(argv)
    build = _explain_build(parsed.binary, log=lambda m: print(m, file=sys.stderr))
    if build.error:
        print(f"caskit: note: cannot probe {parsed.binary} ({build.error}); predictions need its default ic-mode",
              file=sys.stderr)
    rows = explain.predict_all(parsed, build)
    print(explain.render(parsed, rows, str(parsed.axes["guest_xive"])))
    if not a.run:
        return EXIT_OK
    return _explain_run(a, parsed)


def _explain_run(a, parsed) -> int:
    """One real boot of the command line's guest on an inventory host, judged like any cell."""
    import tempfile

    from . import explain, kit as kitmod, model
    from .axes import AXIS_NAMES
    from .cell import Cell
    from .cellrun import CellContext, run_cell
    from .config import TIMEOUT_KEYS, load_hosts
    from .hosts import make_host, probe
    from .results import RunStore, exit_status

    hosts = load_hosts(a.hosts)
    if a.run not in hosts:
        raise ConfigError(a.hosts or "configs/hosts.yaml", "hosts", f"unknown host {a.run!r}; known: {', '.join(sorted(hosts))}")
    out = Path(a.out) if a.out else Path(tempfile.mkdtemp(prefix="caskit-explain-"))
    facts = probe.probe(hosts[a.run], out / "hosts", {"system"}, log=lambda m: print(m, file=sys.stderr))
    cell = Cell(a.run, tuple((n, parsed.axes[n]) for n in AXIS_NAMES), append=parsed.append)
    kit = kitmod.build(log=lambda m: print(m, file=sys.stderr))
    rec = run_cell(CellContext(cell, facts, make_host(hosts[a.run]), kit, RunStore(out), f"explain-{os.getpid()}",
                               dict(TIMEOUT_KEYS)))
    e = model.predict(cell, facts)
    kind = explain.KVM_MODES.get(facts.kvm_mode, {}) and facts.kvm_mode
    print(f"\non {a.run} (KVM mode {kind or 'tcg-only'}): predicted {explain.outcome(e)[0]} [{e.rule}]; "
          f"observed {rec['observed'].get('mode') or rec['observed'].get('error')}"
          f"{' ' + rec['observed']['host']['irqchip'] if rec['observed'].get('host') else ''}: "
          f"{rec['verdict']} ({rec['reason']})")
    print(f"logs: {out / 'cells' / cell.id}" + ("" if a.out else " (kept: pass --out to choose where)"))
    return exit_status([rec])


def main(argv: list[str] | None = None) -> int:
    p = _parser()
    a = p.parse_args(argv)
    if a.cmd is None:
        p.print_help()
        return EXIT_USAGE
    try:
        return {"run": cmd_run, "matrix": cmd_matrix, "kit": cmd_kit, "hosts": cmd_hosts,
                "report": cmd_report, "cleanup": cmd_cleanup, "domain": cmd_domain, "explain": cmd_explain}[a.cmd](a)
    except ConfigError as e:
        print(f"caskit: config error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except CaskitError as e:
        print(f"caskit: error: {e}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("caskit: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
