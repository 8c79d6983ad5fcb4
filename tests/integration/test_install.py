"""caskit installed from a wheel into a fresh venv, as a farm's controller gets it with pip or
pipx: the shipped matrices, templates and guest scripts come with the package, runs go under the
working directory, and the guest kit is the checkout's (same recipe key, one cache)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import pytest

from conftest import ROOT, write_matrix
from integration.helpers import assert_no_qemu_left

pytestmark = pytest.mark.guest

@dataclass
class Installed:
    venv: Path
    workdir: Path  # outside the checkout: nothing there may be found by accident
    install_s: float

    def run(self, argv: list[str], timeout: float = 300) -> subprocess.CompletedProcess:
        return subprocess.run(argv, cwd=self.workdir, env=_clean_env(), capture_output=True, text=True,
                              timeout=timeout)

    def caskit(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
        return self.run([str(self.venv / "bin" / "caskit"), *args], timeout)

    def python(self, code: str) -> str:
        p = self.run([str(self.venv / "bin" / "python"), "-c", code], 60)
        assert p.returncode == 0, p.stderr
        return p.stdout.strip()


def _clean_env() -> dict[str, str]:
    """This process's environment without what would lead the installed caskit to the checkout
    (PYTHONPATH) or change how its pytest runs (the outer run's PYTEST_* variables)."""
    drop = ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")
    return {k: v for k, v in os.environ.items() if k not in drop and not k.startswith("PYTEST_")}


def _source_tree(dest: Path) -> Path:
    """The checkout's files as git sees them (tracked, and new ones not ignored): a build there
    leaves no build/ or egg-info in the checkout and ships nothing that git would not."""
    names = subprocess.run(["git", "-C", str(ROOT), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                           capture_output=True, text=True, check=True).stdout.split("\0")
    for name in filter(None, dict.fromkeys(names)):
        src = ROOT / name
        if not (src.is_file() or src.is_symlink()):  # deleted in the work tree, still in the index
            continue
        (dest / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, dest / name, follow_symlinks=False)
    return dest


def _check(p: subprocess.CompletedProcess) -> None:
    assert p.returncode == 0, (p.stdout + p.stderr)[-3000:]


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Installed:
    if shutil.which("git") is None or subprocess.run(["git", "-C", str(ROOT), "rev-parse"],
                                                     capture_output=True).returncode != 0:
        pytest.skip("the wheel is built from the files git tracks: needs git and a git checkout")
    base = tmp_path_factory.mktemp("install")
    src = _source_tree(base / "src")
    wheels = base / "wheels"
    _check(subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(wheels), str(src)],
                          env=_clean_env(), capture_output=True, text=True, timeout=300))
    (wheel,) = wheels.glob("caskit-*.whl")
    venv = base / "venv"
    t0 = time.monotonic()
    _check(subprocess.run([sys.executable, "-m", "venv", str(venv)], capture_output=True, text=True, timeout=300))
    _check(subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q", str(wheel)],
                          env=_clean_env(), capture_output=True, text=True, timeout=300))
    install_s = time.monotonic() - t0
    workdir = base / "farm"
    workdir.mkdir()
    assert ROOT not in workdir.resolve().parents
    return Installed(venv, workdir, install_s)


def test_an_installed_caskit_reads_only_its_own_files(installed, kit, record_property):
    # How long the install took is recorded (a speed goal is a benchmark's, not a test's).
    record_property("install_s", round(installed.install_s, 1))
    print(f"venv + install: {installed.install_s:.1f}s")
    site = installed.python("import harness, pathlib; print(pathlib.Path(harness.__file__).parent)")
    assert Path(site).is_relative_to(installed.venv)
    roots = json.loads(installed.python(
        "import json; from harness import resources as r; "
        "print(json.dumps([str(r.CHECKOUT), str(r.TEMPLATES), str(r.CONFIGS), str(r.GUEST_TESTS)]))"))
    assert roots[0] == "None"
    assert all(Path(d).is_dir() and Path(d).is_relative_to(site) for d in roots[1:]), roots
    # Same guest_tests files, same recipe key: the installed caskit uses the checkout's cached kit.
    assert installed.python("from harness import kit; print(kit.current_key(log=lambda m: None))") == kit.key


def test_shipped_quick_matrix_by_name(installed):
    p = installed.caskit("matrix", "quick", timeout=120)
    _check(p)
    assert len(p.stdout.splitlines()) == 12, p.stdout
    assert "12 cells" in p.stderr


def test_one_real_cell_from_outside_the_checkout(installed, kit):
    m = write_matrix(installed.workdir / "one.yaml", """
name: one
axes: {ic_mode: [dual], firmware: [vof], smp: [1], qemu: [system]}
""")
    out = installed.workdir / "out"
    p = installed.caskit("run", str(m), "--out", str(out))
    results = json.loads((out / "results.json").read_text()) if (out / "results.json").exists() else None
    if results:
        assert_no_qemu_left(results["run"]["id"])
    _check(p)
    assert results is not None, p.stderr[-3000:]
    (cell,) = results["cells"]
    assert (cell["verdict"], cell["observed"]["mode"]) == ("PASS", "xive"), cell["reason"]
    assert (out / "report.html").is_file()
    run = results["run"]
    assert run["kit"]["key"] == kit.key
    assert run["git_sha"] is None  # an installed caskit is no checkout
    assert run["caskit_version"] == metadata.version("caskit")
    assert not (installed.workdir / "reports").exists()  # --out given: nothing else written
