"""Per-patch validation for real: a guest kernel under test (Debian's bookworm-backports 6.12, as
a new user would try it) in place of the kit's, and a QEMU under test whose regression the diff
against a baseline run catches, while two identical runs stay quiet."""

from __future__ import annotations

import os
import stat

import pytest

from conftest import run_cli, write_matrix
from integration.helpers import assert_no_qemu_left

pytestmark = pytest.mark.guest


@pytest.fixture(scope="module")
def kernel_deb():
    """bookworm-backports' ppc64el kernel package, fetched with caskit's private apt (cached)."""
    from harness.debfetch import PrivateApt, debian_codename
    from harness.debian_kernel import kernel_package
    from harness.kit import cache_root

    c = debian_codename()
    apt = PrivateApt(cache_root() / "apt" / "ppc64el-backports", "ppc64el",
                     [c, f"{c}-updates", f"{c}-security", f"{c}-backports"], default_release=f"{c}-backports")
    apt.ensure_index(log=lambda m: None)
    k = kernel_package(apt)  # the same resolution the kit uses
    return apt.download(k.name, k.version)


def test_a_kernel_package_under_test_boots_with_caskits_initramfs(tmp_path, kernel_deb):
    m = write_matrix(tmp_path / "m.yaml", "axes: {ic_mode: [dual], guest_xive: [default, \"off\"], smp: [2], "
                                          "firmware: [vof]}\nworkloads: [ipi, virtio-net]\n")
    r = run_cli(["run", str(m), "--kernel", str(kernel_deb), "-n", "2"], tmp_path / "out")
    assert r.rc == 0, r.stdout[-3000:] + r.stderr[-2000:]
    assert {c["observed"]["mode"] for c in r.results["cells"]} == {"xive", "xics"}
    k = r.results["run"]["patch"]["kernel"]
    assert k["release"].startswith("6.12") and len(k["sha256"]) == 64 and k["source"] == str(kernel_deb)
    assert_no_qemu_left(r.results["run"]["id"])


def test_a_bare_vmlinux_boots_and_a_missing_module_is_refused_before_any_boot(tmp_path, kernel_deb):
    import subprocess
    subprocess.run(["dpkg-deb", "-x", str(kernel_deb), str(tmp_path / "x")], check=True)
    (vmlinux,) = (tmp_path / "x" / "boot").glob("vmlinux-*")
    idle = write_matrix(tmp_path / "idle.yaml", "axes: {ic_mode: [dual], smp: [1], firmware: [vof]}\n")
    r = run_cli(["run", str(idle), "--kernel", str(vmlinux)], tmp_path / "idle-out")
    assert r.rc == 0 and r.results["cells"][0]["verdict"] == "PASS", r.stdout[-3000:] + r.stderr[-2000:]
    net = write_matrix(tmp_path / "net.yaml", "axes: {ic_mode: [dual], smp: [1], firmware: [vof]}\n"
                                              "workloads: [virtio-net]\n")
    r = run_cli(["run", str(net), "--kernel", str(vmlinux)], tmp_path / "net-out")
    assert r.rc == 2, r.stdout[-2000:]
    assert "virtio_net (for virtio-net)" in r.stdout + r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "net-out" / "cells").exists()  # nothing booted
    r = run_cli(["run", str(net), "--kernel", str(vmlinux), "--modules", str(tmp_path / "x")], tmp_path / "mod-out")
    assert r.rc == 0, r.stdout[-2000:] + r.stderr[-2000:]


CAS = "axes: {ic_mode: [dual, xics], guest_xive: [default, \"off\"], smp: [1], firmware: [vof]}\n"


def test_the_diff_catches_a_patched_qemu_and_stays_quiet_on_identical_runs(tmp_path):
    m = write_matrix(tmp_path / "m.yaml", CAS)
    base = run_cli(["run", str(m), "-n", "2"], tmp_path / "base")
    assert base.rc == 0, base.stdout[-2000:]
    # The "patch" under test: a QEMU that forces every guest machine to XICS.
    wrapper = tmp_path / "qemu-forcing-xics"
    wrapper.write_text('#!/bin/sh\n# A guest (it has -kernel) gets ic-mode=xics; the probe does not.\n'
                       'case " $* " in *" -kernel "*) ;; *) exec qemu-system-ppc64 "$@";; esac\n'
                       'for a in "$@"; do shift; if [ "$prev" = -machine ]; then a="$a,ic-mode=xics"; fi; '
                       'set -- "$@" "$a"; prev=$a; done\nexec qemu-system-ppc64 "$@"\n')
    wrapper.chmod(wrapper.stat().st_mode | stat.S_IXUSR)
    same = run_cli(["run", str(m), "-n", "2", "--baseline", str(tmp_path / "base")], tmp_path / "same")
    assert same.rc == 0 and "0 regression(s)" in same.stdout, same.stdout[-3000:]
    bad = run_cli(["run", str(m), "-n", "2", "--qemu", str(wrapper), "--baseline", str(tmp_path / "base")],
                  tmp_path / "bad")
    assert bad.rc == 1, bad.stdout[-3000:] + bad.stderr[-2000:]
    dual = next(c for c in bad.results["cells"] if c["axes"]["ic_mode"] == "dual" and c["axes"]["guest_xive"] == "default")
    assert dual["verdict"] == "FAIL" and dual["observed"]["mode"] == "xics"
    assert dual["id"] in bad.stdout and "regression" in bad.stdout
    assert bad.results["run"]["patch"]["qemu"]["sha256"]
    assert os.path.samefile(bad.results["run"]["patch"]["qemu"]["source"], wrapper)
