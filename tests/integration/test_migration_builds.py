"""Migration on QEMU 10.0 from bookworm-backports (fetched privately on first use): one-vCPU
guests migrate cleanly in both modes, a XIVE guest with device interrupts in flight too; the
defects measured on this build (XICS MSIs lost after the hop, the two-vCPU stall) are XFAIL only
through their known-issues entries."""

from __future__ import annotations

import pytest

from conftest import run_cli, write_matrix
from integration.helpers import assert_no_qemu_left

pytestmark = pytest.mark.guest

MATRICES = {
    "idle": """
name: bp-idle
axes: {ic_mode: [dual], guest_xive: [default, "off"], smp: [1], firmware: [vof], qemu: [backports]}
migration: [roundtrip, file]
timeouts: {liveness: 5, command: 30}
""",
    "xive-devices": """
name: bp-xive-devices
axes: {ic_mode: [dual], smp: [1], firmware: [vof], qemu: [backports]}
workloads: [virtio-net, virtio-blk]
migration: [roundtrip]
timeouts: {liveness: 5, command: 30}
""",
    "xics-devices": """
name: bp-xics-devices
axes: {ic_mode: [xics], smp: [1], firmware: [vof], qemu: [backports]}
workloads: [virtio-net]
migration: [roundtrip]
timeouts: {liveness: 5, command: 30}
""",
    "cross": """
name: bp-cross
domain: local-builds
axes: {smp: [1], firmware: [vof], qemu: [system, backports]}
migration: [cross-build]
timeouts: {liveness: 5, command: 30}
""",
    "mismatch": """
name: bp-mismatch
axes: {ic_mode: [xics, xive], smp: [1], firmware: [vof], qemu: [backports]}
workloads: [virtio-net]
migration: [mismatch]
timeouts: {liveness: 5, command: 30}
""",
    "smp2": """
name: bp-smp2
axes: {ic_mode: [dual], smp: [2], firmware: [vof], qemu: [backports]}
migration: [roundtrip]
timeouts: {liveness: 5, command: 30}
""",
}


@pytest.fixture(scope="module")
def bp(tmp_path_factory, kit):
    d = tmp_path_factory.mktemp("bp")
    files = [str(write_matrix(d / f"{k}.yaml", v)) for k, v in MATRICES.items()]
    r = run_cli(["run", *files, "-n", "2"], d / "out")
    assert_no_qemu_left(r.results["run"]["id"])
    return r


def cells(bp, matrix):
    return [c for c in bp.results["cells"] if c["matrix"] == matrix]


def test_build_versions_are_recorded(bp):
    builds = {b["name"]: b for b in bp.results["run"]["hosts"]["local"]["qemu"]}
    assert builds["backports"]["version"].startswith("10.")
    assert builds["backports"]["machine"].startswith("pseries-10")
    for c in bp.results["cells"]:
        assert c["qemu_version"] == builds[c["axes"]["qemu"]]["version"]
    assert builds["system"]["version"].startswith("7.2")


def assert_clean(c):
    assert c["verdict"] == "PASS", c["reason"]
    for h in c["migration"]["hops"]:
        assert h["verdict"] == "PASS" and h["qmp"]["status"] == "completed"
        assert h["liveness"]["beats"] > 5 and h["liveness"]["first_beat_s"] < 5
        assert not h["liveness"]["seq_gaps"] and not h["kernel_log"]
        assert (h["mode_after"]["guest"], h["mode_after"]["host"]) == (c["observed"]["mode"],) * 2
        assert h["qmp"]["downtime_ms"] is not None and h["qmp"]["transferred_bytes"] > 0
        assert h["harness_s"] > 0 and h["window_s"] >= 4.5


@pytest.mark.parametrize("plan", ["roundtrip", "file"])
def test_idle_one_vcpu_guests_migrate_cleanly_in_both_modes(bp, plan):
    cs = [c for c in cells(bp, "bp-idle") if c["migration_plan"] == plan]
    assert {c["observed"]["mode"] for c in cs} == {"xive", "xics"}
    for c in cs:
        assert_clean(c)
        assert [h["name"] for h in c["migration"]["hops"]] == (["B", "A2"] if plan == "roundtrip" else ["file"])
    if plan == "file":
        assert all(c["migration"]["hops"][0]["qmp"]["file_bytes"] > 1 << 20 for c in cs)


def test_a_xive_guest_keeps_its_devices_across_the_round_trip(bp):
    (c,) = cells(bp, "bp-xive-devices")
    assert c["observed"]["mode"] == "xive"
    assert_clean(c)
    for h in c["migration"]["hops"]:
        assert h["progress"]["virtio-net"]["received"] == h["progress"]["virtio-net"]["sent"] > 0
        assert h["progress"]["virtio-blk"]["read"] == h["progress"]["virtio-blk"]["wrote"]  # written before the first hop


def test_xics_guests_lose_their_msis_a_known_issue(bp):
    (c,) = cells(bp, "bp-xics-devices")
    assert c["observed"]["mode"] == "xics"
    assert c["verdict"] == "XFAIL", c["reason"]
    assert c["migration"]["known_issues"] == ["qemu10.0-tcg-xics-msi-lost-after-migration"]
    (hop,) = c["migration"]["hops"]
    assert hop["liveness"]["beats"] > 5  # the guest itself lives on; its devices do not


def test_two_vcpu_stall_is_the_known_issue(bp):
    (c,) = cells(bp, "bp-smp2")
    assert c["verdict"] == "XFAIL", c["reason"]
    assert c["migration"]["known_issues"] == ["qemu10.0-tcg-smp2-stall-after-migration"]


def test_cross_build_hops_are_refused_by_the_known_upstream_defects(bp):
    """7.2 -> 10.0.2 and 10.0.2 -> 7.2 with the domain's pins (pseries-7.2, weakest caps): each
    direction is refused by the destination for a known upstream reason, matched by QEMU's own
    words, and the source guest lives on."""
    cs = {c["axes"]["qemu"]: c for c in cells(bp, "bp-cross")}
    want = {"system": ("qemu9.2-icp-server-not-migrated", "icp/server"),
            "backports": ("qemu9.2-slb-version-breaks-backward-migration", "cpu/slb: incoming version_id 2")}
    for home, (issue, words) in want.items():
        c = cs[home]
        assert c["pinned"][0] == "pseries-7.2" and c["migration"]["peer"]["qemu"] != home
        assert c["verdict"] == "XFAIL", c["reason"]
        assert c["migration"]["known_issues"] == [issue]
        (hop,) = c["migration"]["hops"]
        assert hop["source_build"].split()[0] == home and hop["destination_build"].split()[0] != home
        assert words in hop["qmp"]["destination_error"]
        assert hop["source_alive"] is True
        # The refused guest lives on where it was: heartbeat, mode, IPIs all checked again.
        assert hop["source_after"]["verdict"] == "PASS", hop["source_after"]["problems"]
        assert hop["source_after"]["liveness"]["beats"] > 5


def test_single_controller_guests_into_a_dual_destination(bp):
    """The stream cannot say that a dual destination has one controller more, so QEMU takes it:
    a XIVE guest lives on there (PASS, judged like any hop); a XICS guest's destination aborts
    (XFAIL by its entry). Both first refuse the destination that lacks their controller."""
    cs = {c["axes"]["ic_mode"]: c for c in cells(bp, "bp-mismatch")}
    xive, xics = cs["xive"], cs["xics"]
    assert [(h["name"], h["qmp"]["expected"]) for h in xive["migration"]["hops"]] == [
        ("B-ic_mode-xics", "refused"), ("B-ic_mode-dual", "accepted")]
    assert xive["verdict"] == "PASS", xive["reason"]
    into_dual = xive["migration"]["hops"][1]
    assert into_dual["qmp"]["status"] == "completed" and into_dual["mode_after"]["guest"] == "xive"
    assert into_dual["progress"]["virtio-net"]["received"] == into_dual["progress"]["virtio-net"]["sent"] > 0
    assert xics["verdict"] == "XFAIL", xics["reason"]
    assert xics["migration"]["known_issues"] == ["xics-guest-into-dual-destination-aborts"]
    refused, aborted = xics["migration"]["hops"]
    assert refused["name"] == "B-ic_mode-xive" and refused["verdict"] == "PASS"
    assert aborted["qmp"]["status"] == "completed" and aborted["destination_alive"] is False
