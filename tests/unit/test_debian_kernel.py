"""The modules the kit and the L1 image load: their order from each module's own .modinfo, and
the build-time check that refuses an image whose modules cannot load (issue 20)."""

from __future__ import annotations

import lzma
import shutil
import subprocess
from pathlib import Path

import pytest

from harness.debfetch import Resolved
from harness.debian_kernel import plan_modules
from harness.errors import KitError
from harness import kit as kitmod

RELEASE = "6.1.0-57-powerpc64le"

pytestmark = pytest.mark.skipif(not shutil.which("gcc"), reason="gcc builds the test's module objects")


def module(moddir: Path, name: str, depends: str = "", release: str = RELEASE, xz: bool = False) -> Path:
    """A real ELF object whose .modinfo says what a kernel module's does (gcc writes the section)."""
    sub = moddir / "kernel" / "drivers"
    sub.mkdir(parents=True, exist_ok=True)
    src = sub / f"{name}.c"
    src.write_text('__attribute__((section(".modinfo"), used)) static const char mi[] = '
                   f'"depends={depends}\\0name={name}\\0vermagic={release} SMP mod_unload modversions \\0";\n')
    ko = sub / f"{name}.ko"
    subprocess.run(["gcc", "-c", "-o", str(ko), str(src)], check=True)
    src.unlink()
    if xz:
        xzd = ko.with_name(ko.name + ".xz")
        xzd.write_bytes(lzma.compress(ko.read_bytes(), format=lzma.FORMAT_XZ))
        ko.unlink()
        return xzd
    return ko


def test_a_module_depending_on_one_wanted_after_it_loads_after_it(tmp_path):
    # Kernel 6.1.0-57's change: virtio needs virtio_ring, which the old fixed list put after it.
    module(tmp_path, "virtio", "virtio_ring")
    module(tmp_path, "virtio_ring")
    module(tmp_path, "virtio_net", "virtio,virtio_ring,net_failover")
    module(tmp_path, "net_failover", "failover")
    module(tmp_path, "failover")
    plan = plan_modules(tmp_path, ("virtio", "virtio_ring", "virtio_net"), RELEASE)
    names = list(plan.names)
    assert sorted(names) == ["failover", "net_failover", "virtio", "virtio_net", "virtio_ring"]
    for m in plan.load:
        assert all(names.index(d) < names.index(m.name) for d in m.depends), (m.name, names)


def test_a_dependency_built_into_the_kernel_is_satisfied(tmp_path):
    module(tmp_path, "virtio_net", "virtio")
    (tmp_path / "modules.builtin").write_text("kernel/drivers/virtio/virtio.ko\n")
    plan = plan_modules(tmp_path, ("virtio", "virtio_net"), RELEASE)
    assert plan.names == ("virtio_net",) and plan.builtin == ("virtio",) and plan.absent == ()


def test_a_dependency_nobody_provides_refuses_the_build_naming_both(tmp_path):
    module(tmp_path, "virtio", "virtio_ring")
    with pytest.raises(KitError, match=r"virtio\.ko depends on virtio_ring, which kernel 6\.1\.0-57-powerpc64le has "
                                       r"neither as a module file nor built in"):
        plan_modules(tmp_path, ("virtio",), RELEASE)


def test_a_module_of_another_kernel_release_refuses_the_build(tmp_path):
    module(tmp_path, "virtio_blk", release="6.12.9+bpo-powerpc64le")
    with pytest.raises(KitError, match=r"virtio_blk\.ko was built for kernel 6\.12\.9\+bpo-powerpc64le, not 6\.1\.0-57"):
        plan_modules(tmp_path, ("virtio_blk",), RELEASE)


def test_compressed_modules_are_read_and_handed_to_insmod_decompressed(tmp_path):
    plain = module(tmp_path / "a", "virtio_ring")
    xz = module(tmp_path / "b", "virtio_ring", xz=True)
    (km,) = plan_modules(tmp_path / "b", ("virtio_ring",), RELEASE).load
    assert km.path == xz and km.file_name == "virtio_ring.ko" and km.data == plain.read_bytes()


def test_a_wanted_module_in_neither_form_is_reported_absent(tmp_path):
    plan = plan_modules(tmp_path, ("rpaphp",), RELEASE)
    assert plan.load == () and plan.absent == ("rpaphp",)


def test_the_kit_key_follows_the_exact_packages_apt_resolved():
    files = {"init": b"#!/bin/sh\n"}
    base = {"linux-image-6.1.0-57-powerpc64le": Resolved("linux-image-6.1.0-57-powerpc64le", "6.1.192-3", "ab" * 32),
            "busybox-static": Resolved("busybox-static", "1:1.35.0-4", "cd" * 32)}
    k = kitmod.recipe_key(base, files)
    assert k == kitmod.recipe_key(dict(base), dict(files))
    updated = {**base, "busybox-static": Resolved("busybox-static", "1:1.35.0-5", "cd" * 32)}
    rebuilt = {**base, "busybox-static": Resolved("busybox-static", "1:1.35.0-4", "ef" * 32)}
    assert len({k, kitmod.recipe_key(updated, files), kitmod.recipe_key(rebuilt, files)}) == 3
    assert kitmod.recipe_key(base, files, modules=("virtio_net",)) != k
