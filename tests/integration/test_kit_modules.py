"""The kit's kernel modules in real guests (issue 20): the load order comes from the modules' own
.modinfo, whatever order they are asked for in, and a kit whose modules do not load is ERROR
naming the module (the kit is ours), never FAIL."""

from __future__ import annotations

import gzip

import pytest

from conftest import run_cli, write_matrix
from harness import cpio, kit as kitmod
from harness.debian_kernel import plan_modules

pytestmark = pytest.mark.guest

# Dependents before what they need: the old fixed list had virtio before virtio_ring, which
# kernel 6.1.0-57 made a dependency, and every NIC and disk workload failed.
ASKED = ("virtio_blk", "virtio_net", "virtio", "virtio_ring", "virtio_pci")


def _cell(tmp_path, kernel, initrd, workloads):
    return write_matrix(tmp_path / "m.yaml", f"""
name: kit-modules
axes: {{ic_mode: [xive], firmware: [vof], smp: [1]}}
workloads: [{', '.join(workloads)}]
kit: {{kernel: {kernel}, initrd: {initrd}}}
""")


def _moddir(kit) -> tuple:
    kpkg = next(p for p in kit.manifest["packages"] if p.startswith("linux-image-"))
    deb = kit.manifest["packages"][kpkg]["deb"]
    root = kitmod.cache_root() / "unpacked" / deb.removesuffix(".deb")
    return root / "lib" / "modules" / kit.manifest["kernel_release"], kit.manifest["kernel_release"]


def test_modules_asked_for_before_their_dependencies_load_in_the_guest(tmp_path, kit):
    moddir, release = _moddir(kit)
    plan = plan_modules(moddir, ASKED, release)
    asked = [m.replace("-", "_") for m in ASKED]
    # The kernel really makes a module depend on one asked for after it (else this proves nothing).
    later = [(m.name, d) for m in plan.load if m.name in asked for d in m.depends
             if d in asked and asked.index(d) > asked.index(m.name)]
    assert later, f"no module of {ASKED} depends on one asked for after it in {release}"

    k = kitmod.build(log=lambda m: None, modules=ASKED)
    order = [m.removesuffix(".ko") for m in k.manifest["modules"]]
    for m in plan.load:
        assert all(order.index(d) < order.index(m.name) for d in m.depends if d in order), (m.name, order)
    r = run_cli(["run", str(_cell(tmp_path, k.kernel, k.initrd, ["virtio-net", "virtio-blk"]))], tmp_path / "out")
    (c,) = r.results["cells"]
    assert (r.rc, c["verdict"]) == (0, "PASS"), (c["reason"], r.stderr[-2000:])
    assert {w["name"]: w["verdict"] for w in c["workloads"]} == {"virtio-net": "PASS", "virtio-blk": "PASS"}


def test_a_kit_whose_module_does_not_load_is_error_naming_the_module(tmp_path, kit):
    # The kit's own archive, then one that replaces its load order by the reverse (Linux unpacks
    # concatenated archives in order, the later file wins): a kit that is broken, as 6.1.0-57's was.
    order = [m for m in kit.manifest["modules"]]
    moddir, release = _moddir(kit)
    depends = {m.file_name: m.depends for m in plan_modules(moddir, kitmod.MODULES, release).load}
    reverse = order[::-1]
    first_bad = next(m for i, m in enumerate(reverse)
                     if any(d + ".ko" in reverse[i + 1:] for d in depends[m]))
    initrd = tmp_path / "broken-initrd"
    initrd.write_bytes(gzip.decompress(kit.initrd.read_bytes()) + cpio.pack([
        cpio.directory("lib"), cpio.directory("lib/modules"), cpio.directory("lib/modules/caskit"),
        cpio.file("lib/modules/caskit/order", "".join(f"{m}\n" for m in reverse).encode())]))
    r = run_cli(["run", str(_cell(tmp_path, kit.kernel, initrd, ["virtio-blk"]))], tmp_path / "out")
    (c,) = r.results["cells"]
    assert (r.rc, c["verdict"]) == (3, "ERROR"), c["reason"]
    assert f"insmod {first_bad} failed" in c["reason"], c["reason"]
    assert "kit" in c["reason"]
