"""Shared fixtures: the real guest kit, and running the real caskit CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CASKIT = [sys.executable, "-m", "harness.cli"]


@dataclass
class CliRun:
    rc: int
    stdout: str
    stderr: str
    out: Path

    @property
    def results(self) -> dict:
        return json.loads((self.out / "results.json").read_text())

    def cells(self) -> dict[str, dict]:
        return {c["id"]: c for c in self.results["cells"]}


def run_cli(args: list[str], out: Path | None = None, timeout: float = 600, env: dict | None = None) -> CliRun:
    argv = CASKIT + args + (["--out", str(out)] if out else [])
    p = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=timeout,
                       env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})})
    return CliRun(p.returncode, p.stdout, p.stderr, out or Path("/nonexistent"))


@pytest.fixture(scope="module")
def pg():
    """A throw-away PostgreSQL cluster (tests/pgserver.py), stopped by PID after the module;
    skipped with the reason only where Debian's postgresql package is missing."""
    import pgserver

    why = pgserver.available()
    if why:
        pytest.skip(why)
    with pgserver.running() as s:
        yield s


@pytest.fixture(scope="session")
def kit():
    """The real guest kit (built once; later calls find it in the cache)."""
    from harness import kit as kitmod

    return kitmod.build(log=lambda m: print(m, file=sys.stderr))


def write_matrix(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


# The modules that hold a worker longest (each boots emulated hosts or runs many guests; their
# measured times in `.ci/run`'s slowest durations, 1.5-7 minutes each): started first, so that
# under `--dist loadscope` the short ones fill in around them instead of one long module
# starting last on one worker while the other sits idle. The emulated hosts' modules are kept
# apart in the order: two TCG L1s at once on 2 cores slow both.
LONGEST_FIRST = ("test_emulated_hosts.py", "test_ssh_hosts.py", "test_migration_builds.py", "test_quick_matrix.py",
                 "test_workloads.py", "test_pr_host.py", "test_bench_smoke.py", "test_nested_papr_host.py",
                 "test_shards.py", "test_migration.py", "test_farm_runs.py", "test_patch.py")


def pytest_collection_modifyitems(session, config, items):
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: each module keeps its order
