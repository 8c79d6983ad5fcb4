"""The pytest plugin used directly, user-supplied kits, and the cached kit."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys

import pytest

from conftest import ROOT, run_cli, write_matrix
from harness import kit as kitmod
from integration.helpers import assert_no_qemu_left

pytestmark = pytest.mark.guest


def test_plain_pytest_with_a_matrix_file(tmp_path, kit):
    m = write_matrix(tmp_path / "two.yaml", """
name: two
axes: {ic_mode: [xics, xive], firmware: [vof], smp: [1]}
""")
    out = tmp_path / "out"
    p = subprocess.run([sys.executable, "-m", "pytest", "-n", "2", "-p", "no:cacheprovider", "--caskit-matrix",
                        str(m), "--caskit-out", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stdout[-3000:]
    res = json.loads((out / "results.json").read_text())
    assert {c["axes"]["ic_mode"]: c["observed"]["mode"] for c in res["cells"]} == {"xics": "xics", "xive": "xive"}
    assert "2 passed" in p.stdout
    # The project's addopts group tests by module; cells are spread over the workers all the same.
    assert {c["worker"] for c in res["cells"]} == {"gw0", "gw1"}
    assert_no_qemu_left(res["run"]["id"])


def test_plain_pytest_ends_with_caskits_exit_status_as_caskit_run_and_report_do(tmp_path):
    # A host that must offer KVM and has none: its KVM cell is ERROR without booting anything.
    hosts = tmp_path / "hosts.yaml"
    hosts.write_text("hosts:\n  local:\n    kind: local\n    slots: 2\n    kvm: true\n")
    m = write_matrix(tmp_path / "kvm.yaml", "name: kvm\naxes: {accel: [kvm], ic_mode: [dual]}\n")
    out = tmp_path / "out"
    p = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--caskit-matrix", str(m),
                        "--caskit-hosts", str(hosts), "--caskit-out", str(out), "--caskit-db", "off"],
                       cwd=ROOT, capture_output=True, text=True, timeout=300)
    r = run_cli(["run", str(m), "--hosts", str(hosts), "--db", "off"], tmp_path / "out2")
    report = run_cli(["report", str(out)])
    assert p.returncode == r.rc == report.rc == 3, (p.stdout[-2000:], r.stderr[-1000:])
    assert [c["verdict"] for c in json.loads((out / "results.json").read_text())["cells"]] == ["ERROR"]


def test_user_supplied_kernel_and_initrd(tmp_path, kit):
    m = write_matrix(tmp_path / "own.yaml", f"""
name: own-kit
axes: {{ic_mode: [dual], guest_xive: ["off"], firmware: [vof], smp: [1]}}
kit: {{kernel: {kit.kernel}, initrd: {kit.initrd}}}
""")
    r = run_cli(["run", str(m)], tmp_path / "out")
    assert r.rc == 0, r.stderr
    assert r.results["run"]["kit"]["key"].startswith("user-")  # keyed by the files' content
    (c,) = r.results["cells"]
    assert (c["verdict"], c["observed"]["mode"]) == ("PASS", "xics")


def test_missing_user_kernel_is_a_config_error(tmp_path):
    m = write_matrix(tmp_path / "own.yaml", "kit: {kernel: /nonexistent/vmlinux}\n")
    r = run_cli(["matrix", str(m)], None, timeout=60)
    assert r.rc == 2
    assert "kit.kernel" in r.stderr and "no such file" in r.stderr


def test_warm_kit_is_the_cached_one_and_its_manifest_is_true(kit):
    again = kitmod.build(log=lambda m: pytest.fail(f"a warm build must not fetch anything: {m}"))
    assert again.key == kit.key and again.kernel == kit.kernel
    man = again.manifest
    assert man["kernel_release"].endswith("powerpc64le")
    assert set(man["packages"]) >= {"busybox-static"}
    assert any(p.startswith("linux-image-") for p in man["packages"])
    for name, digest in man["files"].items():
        assert hashlib.sha256((again.kernel.parent / name).read_bytes()).hexdigest() == digest
    assert "init" in man["initrd_files"] and "bin/busybox" in man["initrd_files"]
    assert man["modules"], "virtio modules are carried for the workloads"
    # The exact kernel the kit was built from, and the versions apt resolved, are on record.
    kpkg = next(p for p in man["packages"] if p.startswith("linux-image-"))
    assert man["kernel_package"] == f"{kpkg} {man['packages'][kpkg]['version']}"
    assert all(len(p["sha256"]) == 64 for p in man["packages"].values())


def test_changing_guest_tests_changes_the_kit_key(kit):
    files = kitmod._guest_files()
    pkgs = kitmod.resolve_packages(kitmod.private_apt(), log=lambda m: None)
    assert kitmod.recipe_key(pkgs, files) == kit.key
    changed = dict(files, init=files["init"] + b"\n# changed\n")
    assert kitmod.recipe_key(pkgs, changed) != kitmod.recipe_key(pkgs, files)
    assert kitmod.recipe_key(pkgs, dict(files)) == kitmod.recipe_key(pkgs, files)


def test_kit_build_command_prints_the_kit(kit):
    r = run_cli(["kit", "build"], None, timeout=120)
    assert r.rc == 0, r.stderr
    info = json.loads(r.stdout)
    assert info["key"] == kit.key and info["kernel"] == str(kit.kernel)


def test_hosts_probe_reads_qemu_defaults():
    r = run_cli(["hosts", "probe", "local"], None, timeout=120)
    assert r.rc == 0, r.stderr
    facts = json.loads(r.stdout)["local"]
    (system,) = [b for b in facts["qemu"] if b["name"] == "system"]
    assert system["default_ic_mode"] == "dual"
    assert system["machine"].startswith("pseries-")
    assert {"POWER8", "POWER9", "POWER10"} <= set(system["cpu_models"])


def test_resume_keeps_finished_cells_and_refuses_to_overwrite(tmp_path, kit):
    m = write_matrix(tmp_path / "one.yaml", "axes: {ic_mode: [xics], firmware: [vof], smp: [1]}\n")
    out = tmp_path / "out"
    first = run_cli(["run", str(m)], out)
    assert first.rc == 0, first.stderr
    (c1,) = first.results["cells"]
    first_id = first.results["run"]["id"]

    again = run_cli(["run", str(m)], out)
    assert again.rc == 2 and "--resume" in again.stderr

    resumed = run_cli(["run", str(m), "--resume"], out)
    assert resumed.rc == 0, resumed.stderr
    (c2,) = resumed.results["cells"]
    assert c2["started"] == c1["started"] and c2["duration_s"] == c1["duration_s"]  # not run again
    assert resumed.results["run"]["id"] != first_id
