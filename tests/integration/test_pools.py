"""Pools of interchangeable hosts, for real: the two SSH test hosts (one slot each) plus a third
member that is down. Cells spread over the live members as slots free up, never two at once on
one host; the down member and one whose health check is ERROR are set aside with the reason; a
health check that FAILs is a failure of the run, never swallowed."""

from __future__ import annotations

import itertools

import pytest
import yaml

from conftest import run_cli, write_matrix
from integration.helpers import assert_no_qemu_left
from integration.test_ssh_hosts import pair  # noqa: F401  (the fixture: two sshd hosts)

pytestmark = pytest.mark.guest

MATRIX = """
name: pooled
hosts: [pool:p9]
axes: {ic_mode: [dual, xics], guest_xive: [default, "off"], smp: [1], firmware: [vof]}
"""


def pool_inventory(pair, path, **member_changes):  # noqa: F811
    inv = pair.inventory(slots=1)
    a = inv["hosts"]["hosta"]
    down = {**a, "port": 2222}  # nothing listens there: refused, like a host that is down
    if "proxy_command" in a:
        down["proxy_command"] = a["proxy_command"][:-1] + ["2222"]
    inv["hosts"]["hostdown"] = down
    for name, changes in member_changes.items():
        inv["hosts"][name].update(changes)
    inv["pools"] = {"p9": {"hosts": ["hosta", "hostb", "hostdown"]}}
    path.write_text(yaml.safe_dump(inv))
    return path


def _intervals(cells, host):
    return sorted((c["started_s"], c["started_s"] + c["duration_s"]) for c in cells if c["ran_on"] == host)


def test_cells_spread_over_the_live_members_one_slot_each(pair, tmp_path, kit):  # noqa: F811
    r = run_cli(["run", str(write_matrix(tmp_path / "m.yaml", MATRIX)), "--hosts",
                 str(pool_inventory(pair, tmp_path / "hosts.yaml")), "-n", "2"], tmp_path / "out")
    assert (tmp_path / "out" / "results.json").exists(), r.stdout[-3000:] + r.stderr[-3000:]
    assert r.rc == 0, r.stdout[-3000:]
    checks = [c for c in r.results["cells"] if c.get("health_check")]
    cells = [c for c in r.results["cells"] if not c.get("health_check")]
    # Every health check that ran is a result of the run (the down member's never ran).
    assert sorted(c["health_check"]["member"] for c in checks) == ["hosta", "hostb"]
    assert all(c["verdict"] == "PASS" for c in checks)
    assert len(cells) == 4 and all(c["verdict"] == "PASS" for c in cells), [c["reason"] for c in cells]
    assert all(c["host"] == "pool:p9" and c["id"].startswith("pool-p9-") for c in cells)
    assert {c["ran_on"] for c in cells} == {"hosta", "hostb"}  # the record names the member
    for h in ("hosta", "hostb"):  # a member's one slot is never held twice
        for (s1, e1), (s2, e2) in itertools.pairwise(_intervals(cells, h)):
            assert s2 >= e1 - 0.05, f"two cells at once on {h}"
    # Cells in flight across the pool reached the sum of the members' slots (2).
    a, b = _intervals(cells, "hosta"), _intervals(cells, "hostb")
    assert any(s1 < e2 and s2 < e1 for s1, e1 in a for s2, e2 in b)
    pool = r.results["run"]["pools"]["p9"]["members"]
    assert pool["hosta"]["healthy"] and pool["hostb"]["healthy"]
    assert not pool["hostdown"]["healthy"] and pool["hostdown"]["reason"].startswith("down:")
    # Behind a proxy command the reason is the proxy's own words, and no library traceback
    # reaches the terminal.
    assert "the proxy command exited 1" in pool["hostdown"]["reason"] and "Connection refused" in pool["hostdown"]["reason"]
    assert "Traceback" not in r.stdout + r.stderr
    html = (tmp_path / "out" / "report.html").read_text()
    assert 'id="pools"' in html and "hostdown" in html  # each member's health and cells in the report
    assert_no_qemu_left(r.results["run"]["id"])


def test_a_member_whose_health_check_is_error_takes_no_cells_and_the_run_says_so(pair, tmp_path, kit):  # noqa: F811
    # hostb's QEMU cannot run: its health check is ERROR (the host's trouble), so it is set aside;
    # hosta runs everything, and the run is not green: exit 3 with the check among the results.
    inv = pool_inventory(pair, tmp_path / "hosts.yaml", hostb={"qemu": {"system": {"binary": "/bin/false"}}})
    m = write_matrix(tmp_path / "m.yaml", MATRIX.replace('guest_xive: [default, "off"]', "guest_xive: [default]"))
    r = run_cli(["run", str(m), "--hosts", str(inv), "-n", "2"], tmp_path / "out")
    assert r.rc == 3, r.stdout[-3000:] + r.stderr[-2000:]
    cells = [c for c in r.results["cells"] if not c.get("health_check")]
    assert {c["ran_on"] for c in cells} == {"hosta"} and all(c["verdict"] == "PASS" for c in cells)
    hb = r.results["run"]["pools"]["p9"]["members"]["hostb"]
    assert not hb["healthy"] and hb["set_aside"] and hb["verdict"] == "ERROR" and "/bin/false" in hb["reason"]
    (check,) = [c for c in r.results["cells"] if (c.get("health_check") or {}).get("member") == "hostb"]
    assert check["verdict"] == "ERROR"
    assert_no_qemu_left(r.results["run"]["id"])


def test_a_health_check_that_fails_is_a_failure_of_the_run(pair, tmp_path, kit):  # noqa: F811
    # hostb's QEMU forces XICS on every guest: its health check (a dual machine, XIVE expected)
    # FAILs. That is the system under test failing: FAIL in the results and exit 1, never a
    # member quietly set aside behind a green run.
    wrapper = kit.kernel.parent.parent.parent / "test-wrappers" / f"force-xics-{tmp_path.name}"  # visible in the hosts
    wrapper.parent.mkdir(parents=True, exist_ok=True)
    # Guests only (they get -kernel): the probe must still read the build's true defaults.
    wrapper.write_text("#!/bin/sh\n"
                       'case " $* " in *" -kernel "*) exec qemu-system-ppc64 "$@" -machine ic-mode=xics;; esac\n'
                       'exec qemu-system-ppc64 "$@"\n')
    wrapper.chmod(0o755)
    inv = pool_inventory(pair, tmp_path / "hosts.yaml", hostb={"qemu": {"system": {"binary": str(wrapper)}}})
    m = write_matrix(tmp_path / "m.yaml", MATRIX.replace("ic_mode: [dual, xics]", "ic_mode: [xics]")
                     .replace('guest_xive: [default, "off"]', "guest_xive: [default]"))
    r = run_cli(["run", str(m), "--hosts", str(inv)], tmp_path / "out")
    assert r.rc == 1, r.stdout[-3000:] + r.stderr[-2000:]
    (check,) = [c for c in r.results["cells"] if (c.get("health_check") or {}).get("member") == "hostb"]
    assert check["verdict"] == "FAIL" and "xics" in check["reason"], check["reason"]
    hb = r.results["run"]["pools"]["p9"]["members"]["hostb"]
    assert not hb["healthy"] and not hb["set_aside"]
    assert_no_qemu_left(r.results["run"]["id"])


def test_a_pool_with_no_healthy_member_makes_its_cells_error(pair, tmp_path, kit):  # noqa: F811
    bad = {"qemu": {"system": {"binary": "/bin/false"}}}
    inv = pool_inventory(pair, tmp_path / "hosts.yaml", hosta=bad, hostb=bad)
    m = write_matrix(tmp_path / "m.yaml", MATRIX.replace("ic_mode: [dual, xics]", "ic_mode: [dual]")
                     .replace('guest_xive: [default, "off"]', "guest_xive: [default]"))
    r = run_cli(["run", str(m), "--hosts", str(inv)], tmp_path / "out")
    assert r.rc == 3, r.stdout[-2000:]
    checks = [c for c in r.results["cells"] if c.get("health_check")]
    assert len(checks) == 2 and all(c["verdict"] == "ERROR" for c in checks)  # both in the results
    cells = [c for c in r.results["cells"] if not c.get("health_check")]
    assert cells and all(c["verdict"] == "ERROR" and "no healthy member" in c["reason"] for c in cells)
