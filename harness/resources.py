"""Where caskit's own files are: templates/, configs/ (matrices, the default inventory, known
issues), guest_tests/ (the guest initramfs), l1/ (the emulated hosts' image and kernels) and
patches/ (caskit's patches to QEMU, for the L0 of an emulated host).

The repository keeps them at its top level, the single source of truth. A built wheel carries
copies under harness/_shipped/ (setup.py's build_py puts them there), so an installed caskit
finds them inside the package. A checkout (editable install, or PYTHONPATH) reads its own
top-level directories, so an edit there takes effect without reinstalling.
"""

from __future__ import annotations

import re
from importlib import resources
from pathlib import Path

SHIPPED_DIRS = ("templates", "configs", "guest_tests", "l1", "patches")


def package_dir() -> Path:
    pkg = resources.files(__package__)
    # QEMU and jinja2's FileSystemLoader read these files by path: they must be on disk.
    if not isinstance(pkg, Path):
        raise RuntimeError(f"caskit must be installed as files on disk, not imported from {pkg!r}")
    return pkg


def checkout_root() -> Path | None:
    """The repository's top level when the package runs from a checkout, else None."""
    top = package_dir().parent
    # All three, not one: an installed package's parent is site-packages, where some other
    # distribution may well have put a `templates/`.
    return top if all((top / d).is_dir() for d in SHIPPED_DIRS) else None


def data_root() -> Path:
    """The directory holding templates/, configs/ and guest_tests/."""
    return checkout_root() or package_dir() / "_shipped"


CHECKOUT = checkout_root()
ROOT = data_root()
TEMPLATES = ROOT / "templates"
CONFIGS = ROOT / "configs"
GUEST_TESTS = ROOT / "guest_tests"
QEMU_PATCHES = ROOT / "patches" / "qemu"  # caskit's own patches to QEMU (emulated/qemu_build.py)


def qemu_patch_id(name: str) -> str:
    """A QEMU patch's short id: its file name without the series number and .patch (pure)."""
    return re.sub(r"^\d{4}-", "", name.removesuffix(".patch"))


def qemu_patch_ids() -> tuple[str, ...]:
    return tuple(sorted(qemu_patch_id(p.name) for p in QEMU_PATCHES.glob("*.patch")))
