"""Cross plans (cross-build, cross-host): where their middle hop runs, what a matrix may ask of
them, the SSH host inventory, and the KVM mode a host's facts give."""

from __future__ import annotations

import pytest

from harness.migration import known_issues as ki
from harness.migration import domains as md
from harness.config import parse_hosts, parse_matrix
from harness.errors import ConfigError
from harness.probe import kvm_mode_from

BUILDS = {"a": ["system", "backports"], "b": ["system", "backports"], "c": ["system"]}


def test_cross_build_picks_another_build_on_the_same_host():
    assert md.choose_peer("cross-build", "a", "system", ("a", "b"), BUILDS) == ("a", "backports")
    assert md.choose_peer("cross-build", "a", "backports", ("a", "b"), BUILDS) == ("a", "system")


def test_cross_host_takes_the_next_member_with_the_same_build():
    assert md.choose_peer("cross-host", "a", "system", ("a", "b", "c"), BUILDS) == ("b", "system")
    assert md.choose_peer("cross-host", "c", "system", ("a", "b", "c"), BUILDS) == ("a", "system")
    # c has no backports: b's peer skips it and wraps around to a.
    assert md.choose_peer("cross-host", "b", "backports", ("a", "b", "c"), BUILDS) == ("a", "backports")


@pytest.mark.parametrize("plan, host, build, hosts, words", [
    ("cross-build", "c", "system", ("c",), "no QEMU build in the domain other than 'system'"),
    ("cross-host", "a", "system", ("a",), "no other host of the domain can run QEMU build 'system'"),
    ("cross-host", "a", "backports", ("a", "c"), "no other host"),
    ("cross-host", "z", "system", ("a", "b"), "not a member of the domain"),
])
def test_no_peer_says_why(plan, host, build, hosts, words):
    with pytest.raises(md.NoPeer, match=words):
        md.choose_peer(plan, host, build, hosts, BUILDS)


def test_cross_plans_need_a_domain():
    with pytest.raises(ConfigError) as e:
        parse_matrix({"name": "x", "migration": ["cross-host"]}, "m.yaml")
    assert e.value.key == "migration" and "domain" in e.value.message


def test_cross_host_refuses_workloads_that_keep_state_on_the_source_host():
    with pytest.raises(ConfigError) as e:
        parse_matrix({"name": "x", "domain": "d", "migration": ["cross-host"], "workloads": ["ipi", "virtio-blk"]},
                     "m.yaml", known_domains={"d"})
    assert e.value.key == "workloads" and "virtio-blk" in e.value.message and "shared storage" in e.value.message
    m = parse_matrix({"name": "x", "domain": "d", "migration": ["cross-build"], "workloads": ["virtio-blk"]},
                     "m.yaml", known_domains={"d"})
    assert m.migration == ("cross-build",)  # same host, same disk: fine


def ssh_entry(tmp_path, **over):
    key, kh = tmp_path / "id", tmp_path / "kh"
    key.write_text("k")
    kh.write_text("")
    return {"kind": "ssh", "address": "10.9.9.9", "user": "ck", "key_file": str(key), "known_hosts": str(kh), **over}


def test_an_ssh_host_entry(tmp_path):
    h = parse_hosts({"hosts": {"p9": ssh_entry(tmp_path, port=2222, proxy_command=["ip", "netns", "exec", "n", "nc"],
                                               qemu={"mine": {"binary": "/opt/q/qemu-system-ppc64"}})}},
                    str(tmp_path / "hosts.yaml"))["p9"]
    assert h.ssh and (h.ssh.address, h.ssh.port, h.ssh.user) == ("10.9.9.9", 2222, "ck")
    assert h.ssh.proxy_command == ("ip", "netns", "exec", "n", "nc") and h.ssh.kit_dir == "/var/tmp/caskit"
    assert h.migration_address == "10.9.9.9"  # by default the address the controller uses
    # A build fetched from a Debian suite lives in the controller's cache: not offered remotely.
    assert [b.name for b in h.qemu] == ["system", "mine"]


@pytest.mark.parametrize("over, key, words", [
    ({"port": "22"}, "port", "not a TCP port"),
    ({"proxy_command": "nc host 22"}, "proxy_command", "list of strings"),
    ({"kit_dir": "caskit"}, "kit_dir", "not an absolute path"),
    ({"qemu": {"bp": {"debian_suite": "bookworm-backports"}}}, "qemu.bp", "runs only on the local host"),
    ({"migration_address": ""}, "migration_address", "not an address"),
])
def test_bad_ssh_entries_name_the_key(tmp_path, over, key, words):
    with pytest.raises(ConfigError) as e:
        parse_hosts({"hosts": {"p9": ssh_entry(tmp_path, **over)}}, "hosts.yaml")
    assert e.value.key == f"hosts.p9.{key}" and words in e.value.message


@pytest.mark.parametrize("arch, dev, modules, platform, want", [
    ("x86_64", True, {"kvm_hv"}, "", ("tcg-only", False, False)),  # an x86 /dev/kvm cannot run POWER guests
    ("ppc64le", False, {"kvm_hv"}, "PowerNV", ("tcg-only", False, False)),
    ("ppc64le", True, {"kvm_hv"}, "platform : PowerNV", ("hv", True, True)),
    ("ppc64le", True, {"kvm_hv"}, "platform : pSeries", ("hv-nested", True, False)),
    ("ppc64le", True, {"kvm_pr"}, "platform : pSeries", ("pr", False, False)),
])
def test_kvm_mode_from_host_facts(arch, dev, modules, platform, want):
    assert kvm_mode_from(arch, dev, modules, platform) == want


def test_qemu_version_must_hold_for_both_builds_of_a_cross_build_hop():
    entry = ki.KnownIssue("old", "x", "r", qemu_version="<8", symptoms=("migration-failed",))
    assert ki.hop_applies(entry, _xhop("system 7.2.22", "system 7.2.22", "x"))
    assert not ki.hop_applies(entry, _xhop("backports 10.0.2", "system 7.2.22", "x"))
    assert not ki.hop_applies(entry, _xhop("system 7.2.22", "backports 10.0.2", "x"))


def test_cells_crossing_in_opposite_directions_never_deadlock_on_slots(tmp_path, monkeypatch):
    """Two cells, one at home on a and crossing to b, one the other way, on one-slot hosts: with
    slots taken in name order both finish; taken home-first they would each hold one and wait."""
    import threading

    from harness.cellrun import lease_all
    from harness.hosts import LocalHost

    monkeypatch.setenv("CASKIT_LOCK_DIR", str(tmp_path))
    a, b = LocalHost("a", 1), LocalHost("b", 1)
    inside = threading.Barrier(2, timeout=2)  # both try to be inside at once: only one can
    done, overlapped = [], []

    def cell(hosts):
        with lease_all(hosts, timeout=20):
            try:
                inside.wait()
                overlapped.append(True)
            except threading.BrokenBarrierError:
                pass
        done.append(True)

    ts = [threading.Thread(target=cell, args=(hs,)) for hs in ([a, b], [b, a])]
    for t in ts:
        t.start()
    for t in ts:
        t.join(30)
    assert len(done) == 2 and not overlapped


def _xhop(src: str, dst: str, error: str, verdict: str = "FAIL") -> dict:
    return {"name": "B", "verdict": verdict, "symptoms": ["migration-failed"] if verdict == "FAIL" else [],
            "kernel_log": [], "problems": [f"migration failed: {error}"] if error else [],
            "qmp": {"status": "failed" if error else "completed", "error": None, "destination_error": error},
            "source_build": src, "destination_build": dst}


SLB = {"id": "slb", "summary": "s", "reference": "r",
       "match": {"plans": ["cross-build"], "source_version": ">=9.2", "destination_version": "<9.2",
                 "symptoms": ["migration-failed"], "error_regex": r"cpu/slb: incoming version_id 2 is too new"}}
CROSS_FACTS = ki.CellFacts("tcg", "cross-build", "idle", 1, "xive")


def test_a_cross_build_entry_matches_by_direction_and_by_qemus_words():
    issues = ki.parse({"issues": [SLB]}, "k.yaml")
    slb = "cpu/slb: incoming version_id 2 is too new for local version_id 1"
    assert ki.classify(issues, CROSS_FACTS, [_xhop("backports 10.0.2", "system 7.2.22", slb)])["verdict"] == "XFAIL"
    # The same words the other way round, or another refusal the same way: not this defect.
    assert ki.classify(issues, CROSS_FACTS, [_xhop("system 7.2.22", "backports 10.0.2", slb)])["verdict"] == "FAIL"
    other = "Unknown savevm section or instance 'icp/server' 0"
    assert ki.classify(issues, CROSS_FACTS, [_xhop("backports 10.0.2", "system 7.2.22", other)])["verdict"] == "FAIL"


def test_a_cross_build_entry_is_stale_only_where_its_hop_ran():
    issues = ki.parse({"issues": [SLB]}, "k.yaml")
    passed_back = _xhop("backports 10.0.2", "system 7.2.22", "", verdict="PASS")
    assert ki.classify(issues, CROSS_FACTS, [passed_back])["no_longer_reproduces"] == ["slb"]
    forward_only = _xhop("system 7.2.22", "backports 10.0.2", "", verdict="PASS")
    assert ki.classify(issues, CROSS_FACTS, [forward_only])["no_longer_reproduces"] == []


def test_bad_version_and_regex_keys_are_named():
    bad = {**SLB, "match": {**SLB["match"], "source_version": "~9"}}
    with pytest.raises(ConfigError) as e:
        ki.parse({"issues": [bad]}, "k.yaml")
    assert e.value.key == "issues[0].match.source_version"
    bad = {**SLB, "match": {"error_regex": "("}}
    with pytest.raises(ConfigError) as e:
        ki.parse({"issues": [bad]}, "k.yaml")
    assert e.value.key == "issues[0].match.error_regex"


def test_a_known_refusal_that_loses_the_source_guest_is_a_failure():
    issues = ki.parse({"issues": [SLB]}, "k.yaml")
    h = _xhop("backports 10.0.2", "system 7.2.22", "cpu/slb: incoming version_id 2 is too new for local version_id 1")
    h["symptoms"].append("source-lost")
    assert ki.classify(issues, CROSS_FACTS, [h])["verdict"] == "FAIL"
