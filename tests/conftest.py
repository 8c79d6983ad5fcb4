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
