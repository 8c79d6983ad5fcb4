"""harness/matrix.py: expansion of a Matrix into Cells, and the cells' stable ids."""

from __future__ import annotations

import json
import re

import pytest

from harness.axes import AXES, AXIS_NAMES
from harness.config import parse_matrix
from harness.cell import Cell, HostFacts
from harness.matrix import expand, expand_all

from .factories import make_build, make_cell, make_facts


def matrix(axes: dict, *, name: str = "m", hosts=("local",), exclude=(), **extra):
    data = {"name": name, "hosts": list(hosts), "axes": axes, "exclude": list(exclude), **extra}
    return parse_matrix(data, f"/cfg/{name}.yaml", known_hosts={"local", "farm1", "farm2"})


def test_cross_product_size():
    m = matrix({"ic_mode": ["dual", "xics", "xive"], "cpu_compat": ["default", "power8"],
                "guest_xive": ["default", "off"], "smp": [1, 2]})
    assert len(expand(m)) == 3 * 2 * 2 * 2


def test_hosts_multiply_the_product():
    m = matrix({"ic_mode": ["dual", "xics"]}, hosts=("farm1", "farm2"))
    cells = expand(m)
    assert [(c.host, c.axis("ic_mode")) for c in cells] == [
        ("farm1", "dual"), ("farm1", "xics"), ("farm2", "dual"), ("farm2", "xics")]


def test_axes_not_given_take_their_defaults():
    (cell,) = expand(matrix({}))
    assert cell.axes_dict == {a.name: a.default for a in AXES}
    assert [n for n, _ in cell.axes] == list(AXIS_NAMES)


def test_exclude_removes_exactly_the_matching_cells():
    m = matrix({"ic_mode": ["dual", "xics", "xive"], "guest_xive": ["default", "off"]},
               exclude=[{"ic_mode": "xics", "guest_xive": "off"}, {"ic_mode": "xive"}])
    got = [(c.axis("ic_mode"), c.axis("guest_xive")) for c in expand(m)]
    assert got == [("dual", "default"), ("dual", "off"), ("xics", "default")]


def test_exclude_values_are_normalised_like_axis_values():
    m = matrix({"cpu": ["POWER9", "POWER10"], "smp": [1, 2]}, exclude=[{"cpu": "power10", "smp": "default"}])
    assert [(c.axis("cpu"), c.axis("smp")) for c in expand(m)] == [("POWER9", 1), ("POWER9", 2), ("POWER10", 1)]


def test_order_follows_axis_order_then_the_files_value_order():
    # accel varies slowest, qemu fastest; values keep the order they are written in.
    m = matrix({"guest_xive": ["off", "default"], "ic_mode": ["xive", "dual"]})
    assert [(c.axis("ic_mode"), c.axis("guest_xive")) for c in expand(m)] == [
        ("xive", "off"), ("xive", "default"), ("dual", "off"), ("dual", "default")]


def test_expansion_is_repeatable():
    m = matrix({"ic_mode": ["dual", "xics", "xive"], "cpu": ["POWER9", "POWER10"]})
    assert [c.id for c in expand(m)] == [c.id for c in expand(m)]


def test_ids_are_stable_across_calls_and_objects():
    assert make_cell(ic_mode="xics").id == make_cell(ic_mode="xics").id
    a = expand(matrix({"ic_mode": ["xics"]}))[0]
    assert a.id == make_cell(ic_mode="xics", firmware="slof", qemu="system").id


def test_id_is_readable_and_names_every_axis():
    cell = make_cell(ic_mode="xive", kernel_irqchip="on", cpu="POWER10", cpu_compat="power9", guest_xive="off",
                     smp=4, firmware="slof")
    assert re.fullmatch(r"local-tcg-ic_xive-kirq_on-power10-compat_power9-xive_off-smp4-slof-system-[0-9a-f]{6}",
                        cell.id)


def test_ids_do_not_depend_on_the_matrix_name():
    axes = {"ic_mode": ["dual", "xics"], "guest_xive": ["default", "off"]}
    assert [c.id for c in expand(matrix(axes, name="one"))] == [c.id for c in expand(matrix(axes, name="two"))]
    assert make_cell(matrix="quick").id == make_cell(matrix="cas-full").id


@pytest.mark.parametrize("change", [
    {"ic_mode": "xics"}, {"kernel_irqchip": "on"}, {"cpu": "POWER10"}, {"cpu_compat": "power9"},
    {"guest_xive": "off"}, {"smp": 3}, {"firmware": "slof"}, {"qemu": "backports"}, {"accel": "kvm"},
    {"host": "farm1"}, {"workloads": ("ipi",)}, {"migration": "roundtrip"}, {"append": "nosmp"},
])
def test_anything_a_cell_does_changes_its_id(change):
    assert make_cell(**change).id != make_cell().id


def test_all_ids_of_a_large_matrix_are_distinct():
    m = matrix({"ic_mode": ["default", "dual", "xics", "xive"], "kernel_irqchip": ["default", "on", "off"],
                "cpu": ["POWER8", "POWER9", "POWER10"], "cpu_compat": ["default", "power8", "power9", "power10"],
                "guest_xive": ["default", "off"], "smp": [1, 2]})
    ids = [c.id for c in expand(m)]
    assert len(ids) == 576 == len(set(ids))


def test_expand_all_runs_a_cell_listed_twice_once():
    a = matrix({"ic_mode": ["dual", "xics"]}, name="a")
    b = matrix({"ic_mode": ["xics", "xive"]}, name="b")
    cells = expand_all([a, b])
    assert [c.axis("ic_mode") for c in cells] == ["dual", "xics", "xive"]
    assert [c.matrix for c in cells] == ["a", "a", "b"]  # the first matrix that lists it keeps it


def test_cells_carry_the_matrix_workloads_and_append():
    (cell,) = expand(matrix({}, append="nosmp"))
    assert (cell.matrix, cell.append, cell.workloads, cell.migration) == ("m", "nosmp", (), "none")


def test_a_cell_survives_the_results_store_round_trip():
    cell = make_cell(ic_mode="xive", smp=4, workloads=("ipi",), migration="roundtrip", matrix="m", append="nosmt")
    back = Cell.from_dict(json.loads(json.dumps(cell.to_dict())))
    assert back == cell and back.id == cell.id


def test_host_facts_survive_the_run_record_round_trip():
    facts = make_facts("hv-nested", kvm_xics=True, builds=(make_build(), make_build("b", firmware_dir="/fw")))
    assert HostFacts.from_dict(json.loads(json.dumps(facts.to_dict()))) == facts


def test_host_axes_replace_an_axis_for_that_hosts_cells_only():
    # A host where one value cannot run at all (VOF under PR KVM) gets the one that can.
    m = matrix({"ic_mode": ["dual", "xics"], "firmware": ["vof"]}, hosts=("farm1", "farm2"),
               host_axes={"farm2": {"firmware": ["slof"]}})
    assert [(c.host, c.axis("ic_mode"), c.axis("firmware")) for c in expand(m)] == [
        ("farm1", "dual", "vof"), ("farm1", "xics", "vof"), ("farm2", "dual", "slof"), ("farm2", "xics", "slof")]


@pytest.mark.parametrize("host_axes,key,words", [
    ({"farm9": {"firmware": ["slof"]}}, "host_axes.farm9", "not one of the matrix's hosts"),
    ({"farm1": {"colour": ["red"]}}, "host_axes.farm1.colour", "unknown axis"),
    ({"farm1": {"firmware": ["uboot"]}}, "host_axes.farm1.firmware", "uboot"),
    ({"farm1": ["slof"]}, "host_axes.farm1", "mapping of axis name"),
])
def test_host_axes_that_cannot_apply_name_their_key(host_axes, key, words):
    from harness.errors import ConfigError
    with pytest.raises(ConfigError) as e:
        matrix({}, hosts=("farm1",), host_axes=host_axes)
    assert e.value.key == key and words in str(e.value), str(e.value)


def test_the_shipped_kvm_modes_matrix_boots_pr_hosts_with_slof_and_the_others_with_vof():
    from harness.config import load_matrix
    cells = expand(load_matrix("kvm-modes"))
    by_host: dict[str, set] = {}
    for c in cells:
        by_host.setdefault(c.host, set()).add(c.axis("firmware"))
    assert by_host.pop("pr") == {"slof"}
    assert by_host == {h: {"vof"} for h in ("nested-hv", "powernv9", "nested-papr", "nested-papr-p9")}
    assert len([c for c in cells if c.host == "pr"]) == 54
