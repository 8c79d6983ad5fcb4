"""Only a build step; pyproject.toml holds the project's metadata.

templates/, configs/ and guest_tests/ stay at the repository's top level (the single source of
truth). A wheel, and so any non-editable install, carries copies under harness/_shipped/, where
harness.resources finds them once the checkout is out of reach.
"""

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py
from setuptools.errors import FileError

HERE = Path(__file__).resolve().parent
SHIPPED_DIRS = ("templates", "configs", "guest_tests", "l1", "patches")  # harness.resources.SHIPPED_DIRS


class BuildPyWithShipped(build_py):
    def run(self):
        super().run()
        if self.editable_mode:  # an editable install reads the checkout's directories themselves
            return
        for name in SHIPPED_DIRS:
            self._ship(name)

    def _ship(self, name: str) -> None:
        src = HERE / name
        if not src.is_dir():
            # A wheel without them installs a caskit that finds no matrix: refuse to build one.
            raise FileError(f"{src} is missing; build from a checkout or from an sdist (MANIFEST.in grafts it)")
        dest = Path(self.build_lib) / "harness" / "_shipped" / name
        shutil.rmtree(dest, ignore_errors=True)  # a reused build/ must not keep files deleted since
        shutil.copytree(src, dest, ignore=shutil.ignore_patterns("__pycache__", "*.py[co]"))


setup(cmdclass={"build_py": BuildPyWithShipped})
