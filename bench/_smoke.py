"""What the benches' `--smoke` modes share (bench/README.md, "Smoke mode").

`--smoke` is the smallest real run of a bench's own code path (one cell, one repeat, the
shortest windows): real guests through caskit, the figures written to a temporary file (never
under bench/results/), every process the bench started stopped by PID, and exit status 1 when
the measurement could not be taken. tests/integration/test_bench_smoke.py runs them.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import tempfile
from pathlib import Path

BENCH = Path(__file__).resolve().parent
RESULTS = BENCH / "results"


def add_args(ap, name: str) -> None:
    """--smoke, and --json FILE (default: bench/results/NAME.json; with --smoke a temp file)."""
    ap.add_argument("--smoke", action="store_true",
                    help="the smallest real run (one cell, one repeat); figures to a temp file; exit 1 when "
                         "the measurement could not be taken")
    ap.add_argument("--json", metavar="FILE", default=None,
                    help=f"where to write the figures (default bench/results/{name}.json; with --smoke a new "
                         "temporary file)")


def json_path(arg: str | None, smoke: bool, name: str) -> Path:
    if arg:
        p = Path(arg)
        if smoke and p.resolve().is_relative_to(RESULTS.resolve()):
            raise SystemExit(f"--smoke writes no figures under {RESULTS}: {p}")
        return p
    if smoke:
        fd, p = tempfile.mkstemp(prefix=f"caskit-smoke-{name}-", suffix=".json")
        os.close(fd)
        return Path(p)
    return RESULTS / f"{name}.json"


def write(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, default=str) + "\n")
    print(f"figures: {path}")


def sigterm_unwinds() -> None:
    """SIGTERM raises KeyboardInterrupt, so that the `finally` blocks stop what was started."""

    def on_term(*_):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)


def qemu_left(tags: list[str]) -> list[int]:
    """Local processes still running with `-name <tag>...` for any of the tag prefixes."""
    from harness.hosts import tagged_pids

    return sorted({pid for t in tags for pid in tagged_pids(t)})


def caskit_run(matrix: str, out: Path, smoke: bool, label: str, problems: list[str]) -> dict | None:
    """One `caskit run MATRIX` into `out` (-n 2; a smoke: -n 1 and no history), its results, or
    None with the reason added to `problems`. A smoke's run must also exit 0."""
    import subprocess

    p = subprocess.run([sys.executable, "-m", "harness.cli", "run", matrix, "-n", "1" if smoke else "2",
                        "--out", str(out), *(["--db", "off"] if smoke else [])],
                       cwd=BENCH.parent, capture_output=True, text=True)
    print(f"{label}: caskit exit {p.returncode}", file=sys.stderr)
    try:
        res = json.loads((out / "results.json").read_text())
    except (OSError, ValueError):
        problems.append(f"{label}: no results.json (caskit exit {p.returncode}): {p.stderr.strip()[-1500:]}")
        return None
    if smoke and p.returncode != 0:
        problems.append(f"{label}: caskit exit {p.returncode}")
    return res


def status(problems: list[str], smoke: bool) -> int:
    """Exit status: 1 in smoke mode when the measurement could not be taken; the problems are
    printed either way."""
    for p in problems:
        print(f"{'SMOKE FAILED' if smoke else 'WARNING'}: {p}", file=sys.stderr)
    return 1 if smoke and problems else 0
