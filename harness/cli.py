"""The caskit command line.

caskit run [MATRIX ...] [--hosts FILE] [--out DIR] [-n N] [--resume] [--shard K/N]
caskit report --merge DIR... -o DIR   the shards of one matrix merged into one run
caskit matrix MATRIX ...          cells and their expected outcomes; boots nothing
caskit kit build [--refresh]      the guest kit, cached
caskit hosts probe [NAME]         HostFacts as JSON
caskit report DIR [--baseline DIR]
caskit report DIR --format markdown|csv|html [-o FILE]   the compatibility matrix for publishing
caskit report DIR --format kcidb --origin NAME [--base-url URL] [-o FILE]   KCIDB I/O JSON
caskit bundle CELL [--run DIR]    one cell packed for a bug report (logs, argv, facts, kit hashes, reproducer)
caskit domain NAME                machine options pinning a migration domain's common capabilities
caskit cleanup [RUN_ID]           stop QEMU processes left by a crashed run (by PID)
caskit history [CELL_ID]          the results history: runs, or one cell across runs
caskit diff BASE NEW              the regression gate: exit 1 on regressions, 0 otherwise, 2 bad input

Exit status: 0 all PASS/XFAIL/SKIP/FLAKY, 1 any FAIL (or FLAKY with --strict), 2 usage or config
error, 3 any ERROR without FAIL.
"""

from __future__ import annotations

# Each command imports what it needs when it runs, not here: `caskit --help`, `caskit matrix` and
# `caskit report` must not pay for paramiko, matplotlib, pytest and the whole run machinery
# (importing harness.run alone costs about a second). There is no import cycle to dodge: the
# package imports only downward.
import argparse
import json
import os
import sys
from pathlib import Path

from .errors import CaskitError, ConfigError, MissingTools
from .results import EXIT_ERROR, EXIT_OK, EXIT_USAGE, reports_dir, run_exit_status


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
    r.add_argument("--shard", metavar="K/N", help="run shard K of N of the matrix: a stable split by cell that keeps "
                                                  "an emulated host's cells together (merge: caskit report --merge)")
    r.add_argument("--known-issues", help="known-issues file (default configs/known-issues.yaml)")
    r.add_argument("-v", "--verbose", action="store_true")
    fr = r.add_argument_group("farm runs", "results history, reruns of failed cells")
    fr.add_argument("--db", metavar="URL", help="results history: sqlite:///PATH or postgresql://user@host:port/db "
                    "(default $CASKIT_DB, else history.sqlite beside the run directory; off: none)")
    fr.add_argument("--rerun-failures", type=int, default=0, metavar="N",
                    help="run a FAIL or ERROR cell up to N more times; one that then passes is FLAKY")
    fr.add_argument("--strict", action="store_true", help="exit 1 when a cell is FLAKY")
    pv = r.add_argument_group("per-patch validation", "what is under test replaces the kit's or the cell's; cell ids "
                                                      "stay the same, so the run compares with a baseline cell by cell")
    pv.add_argument("--kernel", help="guest kernel under test: a vmlinux, or a Debian linux-image .deb (with its modules)")
    pv.add_argument("--initrd", help="your own initramfs to go with --kernel (default: caskit's, around your kernel)")
    pv.add_argument("--modules", help="the kernel's modules: a lib/modules/RELEASE tree (or a directory or .deb holding one)")
    pv.add_argument("--qemu", help="QEMU binary under test, in place of the builds the cells name")
    pv.add_argument("--baseline", help="an earlier run (directory or run id) to diff against; the exit status is the diff's")
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
    hb = hsub.add_parser("build", help="build (or find cached) the emulated hosts' L1 image, and the L0 QEMU "
                                       "caskit builds for some kinds (nested-papr)")
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
    rep.add_argument("dir", nargs="?")
    rep.add_argument("--merge", nargs="+", metavar="DIR",
                     help="the run directories of one matrix's shards (caskit run --shard K/N), merged into -o DIR: "
                          "one run, every planned cell (a shard that never reported: its cells not run)")
    rep.add_argument("--run-id", metavar="ID",
                     help="a run from the results history (--db) into -o DIR; a shard's run brings every shard of "
                          "its plan, merged (each shard by its latest run: a resumed one counts)")
    rep.add_argument("--db", metavar="URL", help="with --run-id: the results history (default $CASKIT_DB, else "
                                                 "reports/history.sqlite)")
    rep.add_argument("--baseline", help="an earlier run's directory to compare with")
    rep.add_argument("--format", choices=("markdown", "csv", "html", "kcidb"),
                     help="print the compatibility matrix in this format instead (for docs; kcidb: KCIDB I/O JSON "
                          "for kernel CI dashboards); writes nothing in DIR")
    rep.add_argument("-o", dest="output", metavar="FILE",
                     help="with --format: write it to FILE, not stdout; with --merge: the merged run's directory")
    rep.add_argument("--origin", help="with --format kcidb: the submitting CI system's KCIDB origin (required)")
    rep.add_argument("--base-url", metavar="URL",
                     help="with --format kcidb: where the run directory is published, for the logs' URLs "
                          "(default: the directory as a file: URI)")
    bu = sub.add_parser("bundle", help="pack one cell (logs, argv, facts, kit hashes, reproducer) into a tar.gz")
    bu.add_argument("cell", help="a cell id, or a part of one that names a single cell")
    bu.add_argument("--run", metavar="DIR", help="the run directory (default reports/latest)")
    bu.add_argument("-o", dest="output", metavar="FILE", help="the archive (default ./caskit-<cell>.tar.gz)")
    d = sub.add_parser("domain", help="the machine options that pin a migration domain's common capabilities")
    d.add_argument("name")
    d.add_argument("--hosts")
    e = sub.add_parser("explain", help="predict, per KVM mode, what a QEMU command line's guest negotiates",
                       usage="caskit explain [--run HOST] [--hosts FILE] [--out DIR] -- qemu-system-ppc64 ARGS...")
    e.add_argument("--run", metavar="HOST", help="also boot it on this inventory host and show what happened")
    e.add_argument("--hosts")
    e.add_argument("--out", help="where --run keeps the cell's logs (default: a temporary directory, removed)")
    e.add_argument("qemu_argv", nargs=argparse.REMAINDER)
    hi = sub.add_parser("history", help="runs in the results history, or one cell across runs")
    hi.add_argument("cell", nargs="?", help="a cell id (or its beginning): its verdicts and timings across runs")
    hi.add_argument("--db", metavar="URL", help="default $CASKIT_DB, else reports/history.sqlite")
    hi.add_argument("--limit", type=int, default=20, help="how many runs (default 20)")
    hi.add_argument("--flaky", action="store_true", help="cells that were FLAKY in the last --limit runs")
    hi.add_argument("--import", dest="import_dirs", nargs="+", metavar="DIR",
                    help="commit earlier runs' results.json into the history (runs from before it, or from "
                         "a time the database was down)")
    hi.add_argument("--run", metavar="RUN_ID", help="one run's planned cells and verdicts (not run included); "
                                                    "exit status as `caskit run` gave it")
    hi.add_argument("--json", action="store_true")
    df = sub.add_parser("diff", help="regressions, fixes and changes from run BASE to run NEW; exit 1 on regressions")
    df.add_argument("base", help="a run directory, or a run id in the results history")
    df.add_argument("new", help="a run directory, or a run id in the results history")
    df.add_argument("--db", metavar="URL", help="history to find run ids in (default $CASKIT_DB, else reports/history.sqlite)")
    df.add_argument("--json", action="store_true")
    df.add_argument("--strict", action="store_true", help="a cell that became FLAKY is a regression too")
    c = sub.add_parser("cleanup", help="stop QEMU processes left by caskit runs")
    c.add_argument("run_id", nargs="?", default="")
    c.add_argument("--hosts", help="host inventory (default: configs/hosts.yaml); its SSH hosts are cleaned too")
    return p


def cmd_run(a) -> int:
    import pytest

    from . import prepare

    from .patch import Patch

    patch = Patch(a.kernel, a.initrd, a.modules, a.qemu)
    if (a.initrd or a.modules) and not a.kernel:
        print("caskit: config error: command line: --initrd and --modules go with --kernel", file=sys.stderr)
        return EXIT_USAGE
    try:
        from . import shard as shardmod
        shard = shardmod.parse(a.shard) if a.shard else None
        plan = prepare.load_plan(a.matrices, a.hosts, a.known_issues, patch, shard)  # validate before anything boots
        baseline = _load_baseline(a.baseline) if a.baseline else None
    except ConfigError as e:
        print(f"caskit: config error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as e:  # a file named on the command line that the OS refuses to look at (name too long)
        print(f"caskit: config error: {e.filename}: cannot read: {e.strerror or e}", file=sys.stderr)
        return EXIT_USAGE
    if a.rerun_failures < 0:
        print("caskit: config error: command line: --rerun-failures must be 0 or more", file=sys.stderr)
        return EXIT_USAGE
    if shard is not None and not plan.cells:
        # Nothing of the plan falls to this shard (fewer groups than shards): its cells are none,
        # and a merge without it misses nothing.
        print(f"caskit: shard {shard} has none of the {len(plan.all_cells)} cells; nothing to run", file=sys.stderr)
        return EXIT_OK
    if a.db:
        from . import history
        try:
            history.parse_url(a.db) if a.db.lower() not in ("off", "none") else None
        except ConfigError as e:
            print(f"caskit: config error: {e}", file=sys.stderr)
            return EXIT_USAGE
    run_id = prepare.new_run_id()
    try:
        out = Path(a.out or reports_dir() / run_id).resolve()
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
    # The controller's CPU is the farm's limit (issue 23; bench/README.md, "Controller CPU per
    # cell"): every one of the run's pytest processes (the controller and each xdist worker) would
    # otherwise rewrite the asserts of every harness module it imports (pytest marks an entry-point
    # plugin's whole distribution for rewriting; without a bytecode cache that is an AST pass per
    # module per process) and import hypothesis for its plugin. A cell's verdict is caskit's,
    # never an assert's message, and no cell uses hypothesis.
    args = ["-p", "no:cacheprovider", "-p", "no:hypothesispytest", "--assert=plain", "-o", "addopts=", "-q",
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
    if a.shard:
        args += ["--caskit-shard", a.shard]
    if a.db:
        args += ["--caskit-db", a.db]
    if a.rerun_failures:
        args += ["--caskit-rerun-failures", str(a.rerun_failures)]
    if a.known_issues:
        args += ["--caskit-known-issues", str(Path(a.known_issues).resolve())]
    for opt in ("kernel", "initrd", "modules", "qemu"):
        if getattr(a, opt):
            args += [f"--caskit-{opt}", str(Path(getattr(a, opt)).expanduser().resolve())]
    if a.workers == "auto":
        requested = os.cpu_count() or 1
    elif a.workers.isdigit():
        requested = int(a.workers)
    else:
        print(f"caskit: config error: command line: -n {a.workers!r}: a number of workers, or auto", file=sys.stderr)
        return EXIT_USAGE
    workers = prepare.useful_workers(plan, requested)
    if workers < requested:
        print(f"caskit: -n {a.workers}: {workers} worker{'s' if workers != 1 else ''} (the plan's {len(plan.cells)} "
              "cells and its hosts' slots allow no more at once)", file=sys.stderr)
    if workers > 1:
        args += ["-n", str(workers)]
    if not a.verbose:
        # unraisableexception: warnings of its own, and five gc.collect() passes per process at exit.
        args += ["--tb=no", "-p", "no:warnings", "-p", "no:unraisableexception"]
    rc = pytest.main(args, plugins=[])
    if rc in (pytest.ExitCode.USAGE_ERROR,):
        return EXIT_USAGE
    from .results import load_results
    try:
        results = load_results(out)
    except ConfigError:
        print(f"caskit: the run ended without results (pytest exit {int(rc)})", file=sys.stderr)
        return EXIT_ERROR
    status = run_exit_status(results, strict=a.strict)
    if baseline is None:
        return status
    # Per-patch validation ends with the diff against the baseline, and its exit status.
    from .diff import diff, format_text
    d = diff(baseline, results, strict=a.strict)
    print(format_text(d, f"baseline {a.baseline}", "this run"))
    return d.exit_status


def _load_baseline(ref: str) -> dict:
    """A baseline run: its directory, or its id in the results history."""
    from .results import load_results
    p = Path(ref)
    if p.is_dir():
        return load_results(p)
    try:
        from . import history
        found = history.load_run_results(ref) if hasattr(history, "load_run_results") else None
    except (ImportError, CaskitError):
        found = None
    if found is None:
        raise ConfigError("command line", "--baseline", f"{ref!r} is neither a run directory nor a run id in the history")
    return found


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
    k = kit.build(refresh=a.refresh, log=lambda m: print(m, file=sys.stderr))
    print(f"caskit: kit {k.key}: {kit.describe(k.manifest)} ({k.manifest.get('kernel_release')})", file=sys.stderr)
    print(json.dumps({"key": k.key, "kernel": str(k.kernel), "initrd": str(k.initrd),
                      "kernel_release": k.manifest.get("kernel_release"),
                      "kernel_package": k.manifest.get("kernel_package"),
                      "modules": k.manifest.get("modules"),
                      "packages": {n: p["version"] for n, p in k.manifest.get("packages", {}).items()}}, indent=2))
    return EXIT_OK


def cmd_hosts(a) -> int:
    import tempfile

    from . import probe
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
    from .emulated import image as l1image
    from .config import load_hosts
    from .emulated import host as emulated

    log = lambda m: print(m, file=sys.stderr)  # noqa: E731
    hosts = load_hosts(a.hosts)
    spec = _emulated_spec(hosts, getattr(a, "name", None), a.hosts)
    if a.hostcmd == "build":
        from .emulated import qemu_build

        # One image per kernel the kinds boot: the named host's, else every kind's.
        kinds = [emulated.KINDS[str(spec.emulated_kind)]] if spec else list(emulated.KINDS.values())
        out = {}
        for k in {tuple(k.image_recipe.items()): k for k in kinds}.values():
            img = l1image.build(refresh=a.refresh, log=log, **k.image_recipe)
            out[k.kernel_build or k.kernel_suite or "default"] = {"key": img.key, "kernel": str(img.kernel), "initrd": str(img.initrd),
                                       "kernel_release": img.manifest.get("kernel_release"),
                                       "packages": len(img.manifest.get("packages", {}))}
        # The L0s caskit builds itself (minutes, once per key: qemu_build.py).
        for r in sorted({k.l0_build for k in kinds if k.l0_build}):
            b = qemu_build.build(r, log=log)
            out[f"l0-{r}"] = {"key": b.key, "binary": str(b.binary), "version": b.version,
                              "patches": list(b.patch_ids)}
        print(json.dumps(out if len(out) > 1 else next(iter(out.values())), indent=2))
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
    up = {n: st for n, st in states.items() if emulated.running(st)}
    # An L1 booted from an image whose packages have since changed in the archive is stale.
    recipes = {tuple(k.image_recipe.items()): k for k in (emulated.KINDS[str(hosts[n].emulated_kind)] for n in up
                                                          if n in hosts and hosts[n].kind == "emulated")}
    current = {r: l1image.current_key(log=log, **k.image_recipe) for r, k in recipes.items()}
    for n, h in sorted(hosts.items()):
        if h.kind != "emulated":
            print(f"{n:<16} {h.kind:<9} slots {h.slots}")
            continue
        st = states.get(n)
        today = current.get(tuple(emulated.KINDS[str(h.emulated_kind)].image_recipe.items()))
        state = "down" if n not in up else f"{st.status}, pid {st.pid}, port {st.port}, image {st.image}" + (
            f" (stale: today's image is {today})" if st.image != today else "") + (
            f", L0 {st.l0_key} patched ({', '.join(st.l0_patches)})" if st.l0_patches else "")
        print(f"{n:<16} emulated  {h.emulated_kind:<14} slots {h.slots}  {state}")
    return EXIT_OK


def cmd_report(a) -> int:
    from .report import write_reports
    from .results import load_run

    if a.merge:
        return _merge(a)
    if a.run_id:
        return _from_history(a)
    if not a.dir:
        print("caskit: error: report needs a run directory (or --merge DIR... -o DIR)", file=sys.stderr)
        return EXIT_USAGE
    results = load_run(Path(a.dir))
    if (a.origin or a.base_url) and a.format != "kcidb":
        print("caskit: error: --origin and --base-url go with --format kcidb", file=sys.stderr)
        return EXIT_USAGE
    if a.format == "kcidb":
        return _export_kcidb(results, Path(a.dir), a.origin, a.base_url, a.output)
    if a.format:
        return _export(results, a.format, a.output)
    if a.output:
        print("caskit: error: -o goes with --format", file=sys.stderr)
        return EXIT_USAGE
    if a.baseline:
        # The regression gate's diff (harness/diff.py), printed and shown in report.html; the
        # exit status stays the run's own (`caskit diff` is the gate).
        from . import diff as diffmod
        d = diffmod.diff(_results_of(a.baseline, None), results)
        print(diffmod.format_text(d, a.baseline, a.dir))
        results = {**results, "run": {**results["run"], "baseline": {**d.to_dict(), "label": a.baseline}}}
    write_reports(Path(a.dir), results)
    print(f"caskit: wrote {a.dir}/junit.xml and {a.dir}/report.html")
    missing = sum(1 for c in results["cells"] if c.get("not_run"))
    if missing:
        print(f"caskit: {missing} of {len(results['cells'])} planned cells have no result (not run)", file=sys.stderr)
    return run_exit_status(results)


def _export(results: dict, fmt: str, output: str | None) -> int:
    """The matrix for publishing: exit 0 once written, whatever the run's verdicts (they are in it)."""
    from .report.export import export

    text = export(results, fmt)
    if output:
        Path(output).write_text(text)
        print(f"caskit: wrote the compatibility matrix ({fmt}) to {output}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return EXIT_OK


def _fresh_dir(output: str) -> Path | None:
    """-o DIR for a run written out (merged, or from the history): absent or empty, never over
    another run's files; None, said, when it is not."""
    out = Path(output).resolve()
    if out.exists() and any(out.iterdir()):
        print(f"caskit: error: -o {output}: not empty; the run goes into a directory of its own", file=sys.stderr)
        return None
    return out


def _merge(a) -> int:
    """caskit report --merge DIR... -o OUT: the shards' runs as one run in OUT (results.json,
    report.html, junit.xml), its exit status that of the whole plan."""
    import json

    from . import shard as shardmod
    from .report import write_reports
    from .results import atomic_write, load_run

    if a.dir or a.format or a.baseline or not a.output:
        print("caskit: error: --merge DIR... goes with -o DIR only", file=sys.stderr)
        return EXIT_USAGE
    out = _fresh_dir(a.output)
    if out is None:
        return EXIT_USAGE
    runs = [(str(Path(d).resolve()), load_run(Path(d))) for d in a.merge]
    try:
        merged = shardmod.merge(runs, str(out))
    except shardmod.MergeError as e:
        print(f"caskit: error: --merge: {e}", file=sys.stderr)
        return EXIT_USAGE
    out.mkdir(parents=True, exist_ok=True)
    atomic_write(out / "results.json", json.dumps(merged, indent=1) + "\n")
    write_reports(out, merged)
    m = merged["run"]["merged"]
    missing = [c["id"] for c in merged["cells"] if c.get("not_run")]
    print(f"caskit: merged {len(runs)} of {m['of']} shards into {out}: {len(merged['cells'])} cells"
          + (f"; shards never reported: {', '.join(map(str, m['missing_shards']))}" if m["missing_shards"] else "")
          + (f"; {len(missing)} cells not run" if missing else ""), file=sys.stderr)
    return run_exit_status(merged)


def _from_history(a) -> int:
    """caskit report --run-id ID -o OUT: a run as the results history has it, written out as a
    run (results.json, report.html, junit.xml); a shard's run with all its sibling shards merged,
    so a farm's CI engine needs no shared directory, only the shared history."""
    import json

    from . import history, shard as shardmod
    from .report import write_reports
    from .results import atomic_write

    if a.dir or a.merge or a.format or a.baseline or not a.output:
        print("caskit: error: --run-id ID goes with -o DIR (and --db URL) only", file=sys.stderr)
        return EXIT_USAGE
    out = _fresh_dir(a.output)
    if out is None:
        return EXIT_USAGE
    url = history.resolve_url(a.db)
    if url is None or not history.exists(url):
        print(f"caskit: error: --run-id {a.run_id}: no results history at {history.redact(url) if url else '(off)'}",
              file=sys.stderr)
        return EXIT_USAGE
    with history.connect(url) as db:  # a history that cannot be read: main()'s error, exit 3
        results = history.run_results(db, a.run_id)
        siblings = history.sibling_shards(db, results["run"]["shard"]) \
            if results is not None and results["run"].get("shard") else None
    if results is None:
        print(f"caskit: error: --run-id {a.run_id}: no such run in {history.redact(url)}", file=sys.stderr)
        return EXIT_USAGE
    if siblings is not None:
        try:
            results = shardmod.merge([(r["run"].get("out") or ".", r) for r in siblings], str(out))
        except shardmod.MergeError as e:
            print(f"caskit: error: --run-id {a.run_id}: {e}", file=sys.stderr)
            return EXIT_USAGE
    out.mkdir(parents=True, exist_ok=True)
    atomic_write(out / "results.json", json.dumps(results, indent=1) + "\n")
    write_reports(out, results)
    missing = [c["id"] for c in results["cells"] if c.get("not_run")]
    shards = results["run"].get("merged")
    print(f"caskit: run {a.run_id} from {history.redact(url)} into {out}: {len(results['cells'])} cells"
          + (f" of {len(siblings)} of {shards['of']} shards" if shards else "")
          + (f"; shards never reported: {', '.join(map(str, shards['missing_shards']))}"
             if shards and shards["missing_shards"] else "")
          + (f"; {len(missing)} cells not run" if missing else ""), file=sys.stderr)
    return run_exit_status(results)


def _export_kcidb(results: dict, out_dir: Path, origin: str | None, base_url: str | None,
                  output: str | None) -> int:
    """The run as KCIDB I/O JSON, checked against KCIDB's schema where kcidb-io is installed."""
    import json

    from .report.kcidb import KcidbError, to_kcidb

    if not origin:
        print("caskit: error: --format kcidb needs --origin NAME (the CI system KCIDB knows you as)", file=sys.stderr)
        return EXIT_USAGE
    try:
        data = to_kcidb(results, origin, out_dir, base_url)
    except KcidbError as e:
        print(f"caskit: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    try:
        from kcidb_io.schema import LATEST
    except ImportError:
        checked = "not checked against KCIDB's schema: install caskit[kcidb] for that"
    else:
        try:
            LATEST.validate_exactly(data)
        except Exception as e:  # jsonschema's ValidationError: caskit wrote something KCIDB refuses
            print(f"caskit: error: the KCIDB export does not validate (a caskit bug): {str(e)[:2000]}", file=sys.stderr)
            return EXIT_ERROR
        checked = f"valid against KCIDB schema v{LATEST.major}.{LATEST.minor}"
    text = json.dumps(data, indent=1) + "\n"
    if output:
        Path(output).write_text(text)
        print(f"caskit: wrote {len(data['tests'])} KCIDB tests to {output} ({checked})", file=sys.stderr)
    else:
        sys.stdout.write(text)
        print(f"caskit: {len(data['tests'])} KCIDB tests ({checked})", file=sys.stderr)
    return EXIT_OK


def cmd_bundle(a) -> int:
    from . import bundle
    from .results import load_results

    out = Path(a.run) if a.run else reports_dir() / "latest"
    results = load_results(out)
    cell = bundle.find_cell(results, a.cell)
    dest = Path(a.output) if a.output else Path(f"caskit-{cell['id']}.tar.gz")
    bundle.write(out, results, cell, dest)
    print(bundle.summary_text(cell, results["run"], None).split("\n\nSteps", 1)[0])
    print(f"\ncaskit: wrote {dest}")
    return EXIT_OK


def _results_of(ref: str, db_url: str | None) -> dict:
    """A run's results: its directory (results.json), or its id in the results history."""
    from .results import load_results

    p = Path(ref)
    if p.is_dir():
        return load_results(p)
    from . import history
    url = history.resolve_url(db_url)
    found = history.load_run_results(ref, url) if url else None
    if found is None:
        raise ConfigError(ref, None, "neither a run directory nor a run id in the results history"
                          + (f" ({history.redact(url)})" if url else " (history off)"))
    return found


def cmd_diff(a) -> int:
    """Exit 1 on regressions, 0 otherwise, 2 when BASE or NEW cannot be read: a CI gate."""
    from . import diff as diffmod
    from .history import HistoryError

    try:
        base, new = _results_of(a.base, a.db), _results_of(a.new, a.db)
    except HistoryError as e:
        print(f"caskit: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    d = diffmod.diff(base, new, strict=a.strict)
    if a.json:
        print(json.dumps(d.to_dict(), indent=2, default=str))
    else:
        print(diffmod.format_text(d, a.base, a.new))
    return d.exit_status


def cmd_history(a) -> int:
    from . import history

    url = history.resolve_url(a.db)
    if url is None:
        print("caskit: the results history is off (CASKIT_DB=off)", file=sys.stderr)
        return EXIT_USAGE
    if not a.import_dirs and not history.exists(url):
        print(f"caskit: no results history at {history.redact(url)} yet (a run makes it; --db or CASKIT_DB "
              "names another)", file=sys.stderr)
        return EXIT_OK
    with history.connect(url) as db:
        if a.import_dirs:
            from .results import load_results
            for d in a.import_dirs:
                res = load_results(Path(d))
                n = history.commit_results(db, res, Path(d).resolve())
                print(f"caskit: {res['run']['id']}: {n} cells -> {history.redact(url)}")
            return EXIT_OK
        if a.run:
            res = history.run_results(db, a.run)
            if res is None:
                print(f"caskit: no run {a.run!r} in {history.redact(url)}", file=sys.stderr)
                return EXIT_USAGE
            if a.json:
                print(json.dumps([{"id": c["id"], "verdict": c["verdict"], "not_run": bool(c.get("not_run"))}
                                  for c in res["cells"]], indent=2))
            else:
                print("\n".join(f"{c['verdict']:<6} {c['id']}" + ("  (not run)" if c.get("not_run") else "")
                                for c in res["cells"]))
            return run_exit_status(res)
        if a.flaky:
            rows = history.flaky_cells(db, a.limit)
            if a.json:
                print(json.dumps([{"cell": c, "flaky": f, "runs": n} for c, f, n in rows], indent=2))
            else:
                print("\n".join(f"{f:>3} of {n:>3} runs FLAKY  {c}" for c, f, n in rows)
                      or f"no FLAKY cell in the last {a.limit} runs")
            return EXIT_OK
        if a.cell:
            rows = history.cell_history(db, a.cell, a.limit)
            if not rows:
                like = history.cells_like(db, a.cell)
                if len(like) == 1:
                    a.cell, rows = like[0], history.cell_history(db, like[0], a.limit)
                else:
                    print(f"caskit: no cell {a.cell!r} in {history.redact(url)}"
                          + ("; cells starting so: " + ", ".join(like) if like else ""), file=sys.stderr)
                    return EXIT_USAGE
            if a.json:
                from dataclasses import asdict
                print(json.dumps({"cell": a.cell, "runs": [asdict(r) for r in rows]}, indent=2))
            else:
                print(history.format_cell(a.cell, rows))
            return EXIT_OK
        runs = history.list_runs(db, a.limit)
        if a.json:
            from dataclasses import asdict
            print(json.dumps([asdict(r) for r in runs], indent=2))
        else:
            print(history.format_runs(runs))
    return EXIT_OK


def cmd_domain(a) -> int:
    import tempfile

    from . import prepare
    from . import probe
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
    from .connect import make_host
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

    from .specs import QemuBuildSpec
    from . import probe
    from .hosts import LocalHost

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
    from .migration import known_issues
    print(explain.render(parsed, rows, str(parsed.axes["guest_xive"]), known_issues.load()))
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
    from . import probe
    from .connect import make_host
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
                "history": cmd_history, "diff": cmd_diff,
                "report": cmd_report, "bundle": cmd_bundle, "cleanup": cmd_cleanup, "domain": cmd_domain, "explain": cmd_explain}[a.cmd](a)
    except ConfigError as e:
        print(f"caskit: config error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except MissingTools as e:  # the machine is not set up for it: like a usage error, not a failure
        print(f"caskit: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except CaskitError as e:
        print(f"caskit: error: {e}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("caskit: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
