"""`caskit bundle CELL [--run DIR]`: one cell packed into a tar.gz for a bug report.

The archive opens with SUMMARY.txt, written the way qemu-devel posts and Launchpad bugs are:
a subject line, what was expected and what happened, the rule that decided and its source, the
QEMU build, the host, the guest kernel, then steps to reproduce and the command line. After it:
the cell's record, every log of every machine, the reproducer, the host's probed facts and the
kit's hashes. `summary_text` is pure (unit-tested); `write` does the packing.
"""

from __future__ import annotations

import io
import json
import re
import tarfile
import time
from pathlib import Path

from . import reproduce
from .errors import ConfigError

WIDTH = 72  # mail-friendly lines


def find_cell(results: dict, name: str) -> dict:
    """The cell named exactly, or the one cell whose id contains `name`."""
    cells = results.get("cells") or []
    exact = [c for c in cells if c["id"] == name]
    if exact:
        return exact[0]
    found = [c for c in cells if name in c["id"]]
    if len(found) == 1:
        return found[0]
    where = str((results.get("run") or {}).get("id"))
    if not found:
        raise ConfigError(where, "cells", f"no cell {name!r} in this run")
    raise ConfigError(where, "cells", f"{name!r} names {len(found)} cells: " + ", ".join(c["id"] for c in found[:8]))


def _what_failed(c: dict) -> str:
    """The one thing a subject line names: the migration's trouble, else the error, else the reason."""
    o, mig = c.get("observed") or {}, c.get("migration") or {}
    if mig.get("verdict") not in (None, "PASS") and mig.get("reason"):
        text = mig["reason"]
    else:
        text = o.get("error") or c.get("reason") or c.get("verdict", "")
    return re.sub(r"\s*\[[^\]]*\]", "", str(text)).split(";")[0].strip()


def subject(c: dict, build: str) -> str:
    a = c.get("axes") or {}
    opts = [f"ic-mode={a.get('ic_mode')}"] + [f"{k.replace('_', '-')}={a[k]}" for k in
                                             ("kernel_irqchip", "cpu_compat") if a.get(k) not in (None, "default")]
    if a.get("guest_xive") == "off":
        opts.append("guest xive=off")
    plan = (c.get("migration") or {}).get("plan")
    what = _what_failed(c)
    return (f"[{c.get('verdict')}] ppc/spapr: {a.get('accel', '').upper()} pseries {' '.join(opts)}, "
            f"smp {a.get('smp')}{f', {plan} migration' if plan else ''}: {what} (QEMU {build})")


def _wrap(label: str, text: str) -> list[str]:
    import textwrap

    return textwrap.wrap(str(text), WIDTH, initial_indent=f"{label} ".ljust(11), subsequent_indent=" " * 11,
                         break_on_hyphens=False, break_long_words=False) or [label]


def summary_text(c: dict, run: dict, argv: list[str] | None = None) -> str:
    """The bug report's text: what was expected, what happened, which rule, which build."""
    e, o = c.get("expected") or {}, c.get("observed") or {}
    host = (run.get("hosts") or {}).get(c.get("host")) or {}
    build = c.get("qemu_version") or "?"
    kit = run.get("kit") or {}
    man = kit.get("manifest") or {}
    kernel_pkg = next((f"{n} {p.get('version')}" for n, p in (man.get("packages") or {}).items()
                       if n.startswith("linux-image")), None)
    mig = c.get("migration") or {}
    expected = (f"mode {e['mode']}" + (f", platform byte 23 {e['byte23']}" if e.get("byte23") else "")
                + (f", {e['irqchip']} controller" if e.get("irqchip") else "")) if e.get("mode") else \
        (f"QEMU refuses at {e.get('stage')}: {e['error']}" if e.get("error") else (e.get("skip") or "-"))
    if mig:
        expected += f"; the guest lives on across a {mig.get('plan')} migration (heartbeat, mode, interrupts)"
    happened = (f"mode {o['mode']}" if o.get("mode") else (o.get("error") or "nothing observed"))
    if mig and mig.get("verdict") != "PASS":
        happened += f"; migration: {mig.get('reason')}"
    lines = [f"Subject: {subject(c, build)}", ""]
    lines += _wrap("Verdict:", f"{c.get('verdict')}: {c.get('reason')}")
    lines += _wrap("Expected:", expected)
    lines += _wrap("Happened:", happened)
    lines += _wrap("Rule:", f"{e.get('rule')} ({e.get('source') or 'no source'})")
    if mig.get("known_issues"):
        lines += _wrap("Known:", ", ".join(mig["known_issues"]) + " (configs/known-issues.yaml)")
    for h in mig.get("hops") or []:
        if h.get("unexplained") and not h.get("known_issue"):
            lines += _wrap("Unexplained:", f"hop {h.get('name')}: {', '.join(h['unexplained'])}")
    lines += _wrap("QEMU:", f"{build} (build {c.get('axes', {}).get('qemu')}"
                            + (f", {argv[0]}" if argv else "") + ")")
    lines += _wrap("Host:", f"{c.get('host')}: {host.get('arch', '?')} {host.get('cpu', '')}, KVM mode "
                            f"{host.get('kvm_mode') or 'none'}")
    lines += _wrap("Guest:", f"{kernel_pkg or man.get('kernel_release') or 'the kit kernel'}, caskit kit {kit.get('key')}")
    lines += _wrap("Run:", f"caskit {run.get('caskit_version')} ({str(run.get('git_sha') or '')[:12]}), run "
                           f"{run.get('id')}, cell {c['id']}")
    lines += ["", "Steps to reproduce:",
              "  1. Put the guest kit's kernel and initramfs in a directory KIT_DIR:"]
    for _, name, digest in reproduce.kit_files(kit):
        lines.append(f"       {name}  sha256 {digest}")
    lines += ["  2. bash reproduce.sh KIT_DIR   (QEMU, bash and coreutils; no caskit)",
              "  3. It prints the mode the guest negotiated, or QEMU's refusal, then",
              "     REPRODUCED (exit 0) or DIFFERENT (exit 1) against caskit's record.",
              "", "QEMU command line (as caskit ran it; reproduce.sh makes its sockets standalone):"]
    lines += ["  " + " ".join(argv)] if argv else ["  (QEMU was not started for this cell)"]
    return "\n".join(lines) + "\n"


def _add(tar: tarfile.TarFile, name: str, data: bytes, mode: int = 0o644) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = len(data), mode, int(time.time())
    tar.addfile(info, io.BytesIO(data))


def write(out: Path, results: dict, cell: dict, dest: Path) -> Path:
    """The tar.gz: SUMMARY.txt first, then the record, the logs, the reproducer, facts and hashes."""
    run = results.get("run") or {}
    cell_dir = Path(out) / "cells" / cell["id"]
    if not (cell_dir / reproduce.SCRIPT).exists() and cell_dir.is_dir():
        reproduce.write_from_run(Path(out), run, cell)  # a run from before reproducers
    argv_file = cell_dir / "qemu-argv.txt"
    argv = argv_file.read_text().splitlines() if argv_file.exists() else None
    top = f"caskit-{cell['id']}"
    host_names = [cell.get("host")] + list((cell.get("peer") or [])[:1])
    facts = {h: (run.get("hosts") or {}).get(h) for h in host_names if h}
    kit = run.get("kit") or {}
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(dest, "w:gz") as tar:
        _add(tar, f"{top}/SUMMARY.txt", summary_text(cell, run, argv).encode())
        _add(tar, f"{top}/result.json", (json.dumps(cell, indent=2, default=str) + "\n").encode())
        _add(tar, f"{top}/host-facts.json", (json.dumps(facts, indent=2, default=str) + "\n").encode())
        _add(tar, f"{top}/kit.json", (json.dumps({"key": kit.get("key"), "files": reproduce.kit_files(kit),
                                                  "manifest": kit.get("manifest")}, indent=2, default=str) + "\n").encode())
        _add(tar, f"{top}/run.json", (json.dumps({k: run.get(k) for k in ("id", "start", "end", "caskit_version",
                                                                           "git_sha", "matrices")},
                                                 indent=2, default=str) + "\n").encode())
        if cell_dir.is_dir():
            for p in sorted(cell_dir.rglob("*")):
                if p.is_file() and p.name not in ("index.html", "result.json"):
                    tar.add(p, f"{top}/{p.relative_to(cell_dir)}")
    return dest
