"""harness/config.py: loading and validating matrix files and the host inventory.

Every problem is a ConfigError that names the file and the key; these tests write real files
under tmp_path and read them with the same loader the CLI uses.
"""

from __future__ import annotations

import textwrap

import pytest

from harness.config import MATRICES, TIMEOUT_KEYS, load_domains, load_hosts, load_matrix, parse_hosts, parse_matrix
from harness.validate import load_yaml
from harness.errors import ConfigError

HOSTS = {"local", "farm1"}


def write(tmp_path, text: str, name: str = "m.yaml"):
    p = tmp_path / name
    p.write_text(textwrap.dedent(text).lstrip())
    return p


def load_error(tmp_path, text: str, known_hosts=HOSTS) -> ConfigError:
    p = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_matrix(p, known_hosts)
    assert info.value.path == str(p)
    assert str(info.value).startswith(f"{p}: ")
    return info.value


# ---------------------------------------------------------------- good files


def test_a_full_matrix_file_loads(tmp_path):
    p = write(tmp_path, """
        name: quick
        hosts: [local]
        axes:
          accel: [tcg]
          ic_mode: [dual, xics, xive]
          cpu: [POWER9]
          cpu_compat: [default, power8]
          guest_xive: [default, off]
          smp: [2]
          firmware: [vof]
        exclude:
          - {ic_mode: xics, guest_xive: off}
        workloads: []
        migration: [none]
        timeouts: {boot: 120}
        append: " nosmt "
        """)
    m = load_matrix(p, HOSTS)
    assert (m.name, m.path, m.hosts) == ("quick", str(p), ("local",))
    assert m.axes["ic_mode"] == ("dual", "xics", "xive")
    assert m.axes["guest_xive"] == ("default", "off")
    assert m.axes["kernel_irqchip"] == ("default",)  # not given: its default
    assert m.axes["qemu"] == ("system",)
    assert m.exclude == ({"ic_mode": "xics", "guest_xive": "off"},)
    assert m.timeouts == {**TIMEOUT_KEYS, "boot": 120.0}
    assert m.append == "nosmt"


def test_bare_on_and_off_are_read_as_qemus_words(tmp_path):
    p = write(tmp_path, """
        axes:
          kernel_irqchip: [on, off]
          guest_xive: [off]
        exclude:
          - {kernel_irqchip: on}
        """)
    m = load_matrix(p, HOSTS)
    assert m.axes["kernel_irqchip"] == ("on", "off")
    assert m.axes["guest_xive"] == ("off",)
    assert m.exclude == ({"kernel_irqchip": "on"},)


@pytest.mark.parametrize("text, value", [
    ("a: on", "on"), ("a: off", "off"), ("a: yes", "yes"), ("a: no", "no"), ("a: On", "On"),
    ("a: true", True), ("a: False", False), ("a: 2", 2), ("a: null", None),
])
def test_load_yaml_keeps_yaml11_booleans_as_strings(tmp_path, text, value):
    assert load_yaml(write(tmp_path, text)) == {"a": value}


def test_true_and_false_map_back_to_on_and_off(tmp_path):
    m = load_matrix(write(tmp_path, "axes: {kernel_irqchip: [true, false]}"), HOSTS)
    assert m.axes["kernel_irqchip"] == ("on", "off")


def test_values_are_matched_case_insensitively_and_deduplicated(tmp_path):
    m = load_matrix(write(tmp_path, "axes: {cpu: [power9, POWER9, Power10], ic_mode: [XIVE]}"), HOSTS)
    assert (m.axes["cpu"], m.axes["ic_mode"]) == (("POWER9", "POWER10"), ("xive",))


def test_a_scalar_axis_value_is_a_list_of_one(tmp_path):
    assert load_matrix(write(tmp_path, "axes: {ic_mode: xics, smp: 4}"), HOSTS).axes["ic_mode"] == ("xics",)


def test_smp_default_is_the_axis_default(tmp_path):
    assert load_matrix(write(tmp_path, "axes: {smp: [default, 2, 4]}"), HOSTS).axes["smp"] == (2, 4)


def test_name_defaults_to_the_file_stem(tmp_path):
    assert load_matrix(write(tmp_path, "hosts: [local]", name="nightly.yaml"), HOSTS).name == "nightly"


def test_the_shipped_matrices_load():
    hosts = {"local"}
    quick = load_matrix("quick", hosts)
    assert quick.name == "quick" and quick.axes["guest_xive"] == ("default", "off")
    assert load_matrix("cas-full", hosts).axes["kernel_irqchip"] == ("default", "on", "off")
    for f in sorted(MATRICES.glob("*.yaml")):  # every shipped matrix, against the shipped inventory
        load_matrix(f, set(load_hosts()), set(load_domains()))
    assert load_matrix("cross-build", hosts, {"local-builds"}).migration == ("cross-build",)


# ---------------------------------------------------------------- errors name file and key


def test_unknown_top_level_key(tmp_path):
    e = load_error(tmp_path, "name: x\naxis: {ic_mode: [xive]}\n")
    assert e.key == "axis"
    assert "unknown key" in e.message and "axes" in e.message


def test_unknown_axis(tmp_path):
    e = load_error(tmp_path, "axes: {ic_mod: [xive]}\n")
    assert e.key == "axes.ic_mod"
    assert "unknown axis" in e.message
    assert "ic_mode" in e.message and "kernel_irqchip" in e.message


@pytest.mark.parametrize("axes, key, bad, allowed", [
    ("{ic_mode: [dual, xivee]}", "axes.ic_mode", "'xivee'", "default, dual, xics, xive"),
    ("{kernel_irqchip: [split]}", "axes.kernel_irqchip", "'split'", "default, on, off"),
    ("{cpu: [POWER11]}", "axes.cpu", "'POWER11'", "POWER8, POWER9, POWER10, host"),
    ("{cpu_compat: [power7]}", "axes.cpu_compat", "'power7'", "default, power8, power9, power10"),
    ("{guest_xive: [on]}", "axes.guest_xive", "'on'", "default, off"),
    ("{firmware: [uefi]}", "axes.firmware", "'uefi'", "slof, vof"),
    ("{accel: [hvf]}", "axes.accel", "'hvf'", "tcg, kvm"),
])
def test_bad_value_lists_the_allowed_values(tmp_path, axes, key, bad, allowed):
    e = load_error(tmp_path, f"axes: {axes}\n")
    assert e.key == key
    assert e.message == f"{bad} is not allowed; allowed values: {allowed}"


@pytest.mark.parametrize("value", ["0", "-1", "two", "1.5", "on"])
def test_bad_smp(tmp_path, value):
    e = load_error(tmp_path, f"axes: {{smp: [2, {value}]}}\n")
    assert e.key == "axes.smp"
    assert "is not a positive whole number" in e.message


@pytest.mark.parametrize("value", ["'my build'", "''", "'-x'", "'a/b'", "'..'"])
def test_bad_qemu_build_name(tmp_path, value):
    e = load_error(tmp_path, f"axes: {{qemu: [{value}]}}\n")
    assert e.key == "axes.qemu" and "is not a build name" in e.message


def test_a_list_inside_an_axis_list_is_named_by_its_index(tmp_path):
    e = load_error(tmp_path, "axes: {qemu: [system, [a]]}\n")
    assert e.key == "axes.qemu[1]" and "must be one qemu value, got a list" in e.message


def test_empty_value_list(tmp_path):
    e = load_error(tmp_path, "axes: {cpu: []}\n")
    assert (e.key, e.message) == ("axes.cpu", "empty list: give at least one value")


def test_unknown_host(tmp_path):
    e = load_error(tmp_path, "hosts: [local, farm9]\n")
    assert e.key == "hosts"
    assert e.message == "unknown host 'farm9'; hosts in the inventory: farm1, local"


def test_unknown_workload(tmp_path):
    e = load_error(tmp_path, "workloads: [fio]\n")
    assert e.key == "workloads" and "unknown workload 'fio'" in e.message


def test_unknown_migration_plan(tmp_path):
    e = load_error(tmp_path, "migration: [teleport]\n")
    assert e.key == "migration" and "unknown plan 'teleport'; available: none" in e.message


@pytest.mark.parametrize("exclude, key, words", [
    ("[{ic_mode: xics, gust_xive: off}]", "exclude[0].gust_xive", "unknown axis"),
    ("[{ic_mode: xics}, {cpu: POWER7}]", "exclude[1].cpu", "allowed values: POWER8, POWER9, POWER10"),
    ("[{}]", "exclude[0]", "non-empty mapping"),
    ("{ic_mode: xics}", "exclude", "must be a list"),
])
def test_bad_exclude(tmp_path, exclude, key, words):
    e = load_error(tmp_path, f"exclude: {exclude}\n")
    assert e.key == key and words in e.message


@pytest.mark.parametrize("timeouts, key", [("{boot: 0}", "timeouts.boot"), ("{boot: yes}", "timeouts.boot"),
                                           ("{reboot: 3}", "timeouts.reboot")])
def test_bad_timeouts(tmp_path, timeouts, key):
    assert load_error(tmp_path, f"timeouts: {timeouts}\n").key == key


def test_append_must_be_one_line(tmp_path):
    assert load_error(tmp_path, 'append: "a\\nb"\n').key == "append"


def test_kit_paths_must_exist(tmp_path):
    e = load_error(tmp_path, "kit: {kernel: vmlinux-missing}\n")
    assert e.key == "kit.kernel" and str(tmp_path / "vmlinux-missing") in e.message


def test_kit_paths_resolve_beside_the_matrix_file(tmp_path):
    (tmp_path / "vmlinux").write_bytes(b"\x7fELF")
    m = load_matrix(write(tmp_path, "kit: {kernel: vmlinux}\n"), HOSTS)
    assert m.kit == {"kernel": str(tmp_path / "vmlinux")}


def test_not_a_mapping(tmp_path):
    e = load_error(tmp_path, "- ic_mode\n")
    assert e.key is None and "must be a mapping" in e.message


def test_yaml_syntax_error_names_the_file_and_line(tmp_path):
    e = load_error(tmp_path, """
        name: x
        axes:
          ic_mode: [dual, xics
          cpu: [POWER9]
        """)
    assert e.key is None
    assert e.message.startswith("YAML syntax error: line 4, column 6: ")


def test_missing_matrix_file_lists_the_shipped_ones(tmp_path):
    with pytest.raises(ConfigError) as info:
        load_matrix(tmp_path / "nope.yaml", HOSTS)
    assert info.value.path == str(tmp_path / "nope.yaml")
    assert "quick" in info.value.message and "cas-full" in info.value.message


def test_parse_matrix_without_an_inventory_accepts_any_host():
    assert parse_matrix({"hosts": ["anywhere"]}, "/x.yaml").hosts == ("anywhere",)


# ---------------------------------------------------------------- the host inventory


def test_hosts_file_loads_with_builds(tmp_path):
    p = write(tmp_path, """
        hosts:
          local:
            slots: 3
            qemu:
              backports: {binary: /opt/qemu-10/bin/qemu-system-ppc64, firmware_dir: /opt/qemu-10/share}
        """, name="hosts.yaml")
    h = load_hosts(p)["local"]
    assert (h.name, h.kind, h.slots) == ("local", "local", 3)
    assert [(b.name, b.binary, b.firmware_dir) for b in h.qemu] == [
        ("system", "qemu-system-ppc64", None),
        ("backports", "/opt/qemu-10/bin/qemu-system-ppc64", "/opt/qemu-10/share")]


def test_the_system_build_can_be_replaced():
    h = parse_hosts({"hosts": {"local": {"qemu": {"system": {"binary": "/usr/local/bin/q"}}}}}, "h.yaml")["local"]
    assert [(b.name, b.binary) for b in h.qemu] == [("backports", "qemu-system-ppc64"), ("system", "/usr/local/bin/q")]
    assert h.qemu[0].debian_suite == "bookworm-backports"  # the built-in build fetched on first use


def test_a_build_from_another_debian_suite():
    h = parse_hosts({"hosts": {"local": {"qemu": {"sid": {"debian_suite": "sid"}}}}}, "h.yaml")["local"]
    assert {b.name: b.debian_suite for b in h.qemu} == {"system": None, "backports": "bookworm-backports", "sid": "sid"}


def test_a_build_needs_a_binary_or_a_suite():
    with pytest.raises(ConfigError) as e:
        parse_hosts({"hosts": {"local": {"qemu": {"x": {"firmware_dir": "/fw"}}}}}, "h.yaml")
    assert e.value.key == "hosts.local.qemu.x"


def test_an_empty_inventory_still_has_local():
    hosts = parse_hosts(None, "h.yaml")
    assert list(hosts) == ["local"] and hosts["local"].qemu[0].name == "system"


@pytest.mark.parametrize("hosts, key, words", [
    ({"box": {"kind": "telnet"}}, "hosts.box.kind", "'telnet' is not supported; allowed: local, ssh"),
    ({"box": {"kind": "ssh"}}, "hosts.box.address", "required for an ssh host"),
    ({"box": {"kind": "ssh", "address": "10.1.1.1", "user": "ck", "key_file": "/nonexistent/key",
              "known_hosts": "/nonexistent/kh"}}, "hosts.box.key_file", "no such file: /nonexistent/key"),
    ({"box": {"kind": "ssh", "address": "10.1.1.1", "port": 70000}}, "hosts.box.user", "required"),
    ({"box": {"kind": "local", "address": "10.1.1.1"}}, "hosts.box.address", "unknown key for a local host"),
    ({"box": {"slots": 0}}, "hosts.box.slots", "0 is not a positive whole number"),
    ({"box": {"slots": True}}, "hosts.box.slots", "True is not a positive whole number"),
    ({"box": {"slot": 2}}, "hosts.box.slot", "unknown key for a local host; allowed keys: kind, slots, qemu"),
    ({"box": {"qemu": {"mine": {"bin": "/q"}}}}, "hosts.box.qemu.mine", "must be a mapping with `binary`"),
    ({"box": ["local"]}, "hosts.box", "must be a mapping"),
])
def test_bad_host_inventory(hosts, key, words):
    with pytest.raises(ConfigError) as info:
        parse_hosts({"hosts": hosts}, "/etc/caskit/hosts.yaml")
    assert (info.value.path, info.value.key) == ("/etc/caskit/hosts.yaml", key)
    assert words in info.value.message


def test_inventory_with_an_unknown_top_level_key():
    with pytest.raises(ConfigError) as info:
        parse_hosts({"host": {}}, "h.yaml")
    assert info.value.key == "host" and "unknown key" in info.value.message and "`hosts:`" in info.value.message


def test_an_inventory_that_is_not_a_mapping():
    with pytest.raises(ConfigError) as info:
        parse_hosts(["local"], "h.yaml")
    assert info.value.key is None and "`hosts:`" in info.value.message


def test_missing_hosts_file_given_explicitly(tmp_path):
    with pytest.raises(ConfigError) as info:
        load_hosts(tmp_path / "hosts.yaml")
    assert info.value.path == str(tmp_path / "hosts.yaml")


def test_a_host_may_say_it_must_offer_kvm(tmp_path):
    f = tmp_path / "hosts.yaml"
    f.write_text("hosts:\n  p9:\n    kind: local\n    kvm: true\n  plain: {kind: local}\n")
    hosts = load_hosts(str(f))
    assert hosts["p9"].kvm_required and not hosts["plain"].kvm_required
    f.write_text("hosts:\n  p9:\n    kind: local\n    kvm: maybe\n")
    with pytest.raises(ConfigError, match=r"hosts\.p9\.kvm.*not true or false"):
        load_hosts(str(f))
