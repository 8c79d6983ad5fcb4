"""What one run needs before any cell starts: configs loaded, hosts probed, the kit built,
the run recorded. Done once by the controller; workers only read it back from run.json.
"""

from __future__ import annotations

import getpass
import secrets
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from . import __version__, kit as kitmod, matrix as matrixmod, probe
from .config import ROOT, HostSpec, Matrix, load_hosts, load_matrix
from .domain import Cell, HostFacts
from .errors import ConfigError
from .results import RunStore

DEFAULT_MATRIX = "quick"


@dataclass(frozen=True)
class Plan:
    matrices: list[Matrix]
    hosts: dict[str, HostSpec]
    cells: list[Cell]


def new_run_id() -> str:
    return time.strftime("%Y%m%d-%H%M%S", time.gmtime()) + "-" + secrets.token_hex(2)


def plan(matrix_args: list[str], hosts_file: str | None, known_issues_file: str | None = None) -> Plan:
    """Load and validate everything; raises ConfigError before anything boots."""
    hosts = load_hosts(hosts_file)
    matrices = [load_matrix(m, set(hosts)) for m in (matrix_args or [DEFAULT_MATRIX])]
    kits = {tuple(sorted(m.kit.items())) if m.kit else None for m in matrices}
    if len(kits) > 1:
        raise ConfigError(matrices[-1].path, "kit", "matrices of one run must use the same guest kit")
    from . import known_issues
    if known_issues_file and not Path(known_issues_file).is_file():
        raise ConfigError(known_issues_file, None, "no such known-issues file")
    known_issues.load(Path(known_issues_file) if known_issues_file else None)  # broken: a config error now
    return Plan(matrices, hosts, matrixmod.expand_all(matrices))


def git_sha() -> str | None:
    try:
        return subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True,
                              text=True, timeout=5).stdout.strip() or None
    except OSError:
        return None


def prepare(p: Plan, out: Path, run_id: str, log=print, known_issues_file: str | None = None) -> dict:
    """Probe the hosts, build the kit, write run.json. Returns the run record."""
    store = RunStore(out)
    out.mkdir(parents=True, exist_ok=True)
    used_hosts = sorted({c.host for c in p.cells})
    facts: dict[str, HostFacts] = {}
    for h in used_hosts:
        log(f"caskit: probing host {h}")
        facts[h] = probe.probe(p.hosts[h], out / "hosts")
    m0 = p.matrices[0]
    if m0.kit:
        k = kitmod.user_kit(m0.kit["kernel"], m0.kit.get("initrd"))
    else:
        k = kitmod.build(log=log)
    run = {
        "id": run_id,
        "start": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "caskit_version": __version__,
        "git_sha": git_sha(),
        "controller": socket.gethostname(),
        "user": getpass.getuser(),
        "matrices": [{"name": m.name, "path": m.path} for m in p.matrices],
        "timeouts": m0.timeouts,
        "migration_max_bandwidth": m0.migration_max_bandwidth,
        "known_issues_file": str(Path(known_issues_file).resolve()) if known_issues_file else None,
        "hosts": {h: f.to_dict() for h, f in facts.items()},
        "kit": {"key": k.key, "kernel": str(k.kernel), "initrd": str(k.initrd) if k.initrd else None,
                "manifest": {x: k.manifest.get(x) for x in ("kernel_release", "packages", "suite", "files", "user_supplied")
                             if x in k.manifest}},
        "cell_order": [c.id for c in p.cells],
    }
    store.write_run(run)
    return run


def kit_from_run(run: dict) -> kitmod.Kit:
    k = run["kit"]
    return kitmod.Kit(k["key"], Path(k["kernel"]), Path(k["initrd"]) if k["initrd"] else None, k.get("manifest", {}))
