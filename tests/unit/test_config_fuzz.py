"""Fuzzing the config loaders: whatever a matrix file, the host inventory or the known-issues file
holds, loading it gives either a plan (every matrix parses and expands to cells) or a ConfigError
that names the file and the key that is wrong. Anything else (a TypeError, a traceback at the
command line, exit 1 like a FAIL) is a bug.

The property runs in-process on the shipped files, each mutated once: a value replaced by one of
the wrong type or an odd one (huge numbers, NUL, newlines, lone surrogates, dates, sets, nested
lists), a key deleted, an unknown key added, a list grown. Hypothesis is derandomized so CI sees
the same examples every run. A few subprocess cases check the command line end to end.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from harness import matrix as matrixmod
from harness.config import (DEFAULT_HOSTS, MATRICES, MAX_APPEND, MAX_BANDWIDTH, MAX_CELLS, MAX_SLOTS, MAX_SMP,
                            parse_domains, parse_hosts, parse_matrix)
from harness.validate import MAX_TIMEOUT_S, load_yaml, part as _part
from harness.errors import ConfigError
from harness.migration import known_issues
from conftest import run_cli

MATRIX_DOCS = {str(p): load_yaml(p) for p in sorted(MATRICES.glob("*.yaml"))}
INVENTORY = str(DEFAULT_HOSTS)
KNOWN_ISSUES = str(known_issues.KNOWN_ISSUES)
DOCS = {**MATRIX_DOCS, INVENTORY: load_yaml(INVENTORY), KNOWN_ISSUES: load_yaml(KNOWN_ISSUES)}

FUZZ = settings(max_examples=400, derandomize=True, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


# ---------------------------------------------------------------- what the mutations put in

# Words the loaders know, so that many mutations stay valid and the "valid plan" side is reached.
WORDS = st.sampled_from([
    "default", "on", "off", "tcg", "kvm", "dual", "xics", "xive", "POWER9", "power8", "POWER10", "vof", "slof",
    "system", "backports", "local", "local-tcg", "local-builds", "ipi", "virtio-blk", "reboot", "none",
    "roundtrip", "file", "mismatch", "cross-build", "cross-host", "boot", "liveness", "kernel", "ssh", "hosts",
    "qemu", "binary", "debian_suite", "sid", "idle", "workload", "any", "no-heartbeat", "<8", ">=7.2,<8",
    "hard LOCKUP", "[", "/usr/bin/true",
])
# Values that have crashed loaders elsewhere: control characters, a lone surrogate (cannot be
# written to a file), path tricks, names too long for a directory, YAML 1.1 words.
ODD_STRINGS = st.sampled_from([
    "", " ", "a\nb", "a\x00b", "\ud800", "\t", "a\u2028b", "\x1b[31m", "x" * 5000, "-x", "../../etc/passwd", "a/b",
    "é", "1.0e+400", "~", "null", "yes", ".nan", "💥",
])
NUMBERS = st.one_of(
    st.booleans(), st.integers(-3, 5), st.integers(MAX_SLOTS - 1, MAX_SLOTS + 1), st.integers(MAX_SMP - 1, MAX_SMP + 1),
    st.integers(2**31, 2**300), st.integers(-(2**300), -(2**31)), st.sampled_from([MAX_BANDWIDTH + 1, MAX_TIMEOUT_S + 1]),
    st.floats(allow_nan=True, allow_infinity=True),
)
SCALARS = st.one_of(st.none(), WORDS, ODD_STRINGS, NUMBERS, st.text(max_size=12), st.dates(), st.binary(max_size=3))
KEYS = st.one_of(WORDS, st.text(max_size=8), st.integers(-2, 2), st.dates())
ODD = st.recursive(
    SCALARS,
    lambda kids: st.lists(kids, max_size=3) | st.dictionaries(KEYS, kids, max_size=3) | st.sets(st.integers(0, 3), max_size=2),
    max_leaves=8,
)
# Half plausible (a known word, a small number, a list of them), half odd.
VALUES = st.one_of(WORDS, st.integers(1, 8), st.lists(st.one_of(WORDS, st.integers(1, 4)), min_size=1, max_size=3),
                   ODD, ODD, ODD)


def nodes(doc, path=()):
    """Every path into a document: mapping keys and list indexes."""
    yield path
    if isinstance(doc, dict):
        for k, v in doc.items():
            yield from nodes(v, path + (k,))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            yield from nodes(v, path + (i,))


def get(doc, path):
    for p in path:
        doc = doc[p]
    return doc


@st.composite
def mutated(draw):
    """(file, mutated document, path of the change). The path ends in the key or index that was
    replaced, deleted, added or appended."""
    file = draw(st.sampled_from(sorted(DOCS)))
    doc = copy.deepcopy(DOCS[file])
    path = draw(st.sampled_from(list(nodes(doc))))
    target = get(doc, path)
    how = draw(st.sampled_from(["replace", "delete", "insert", "append"]))
    if how == "delete" and path:
        del get(doc, path[:-1])[path[-1]]
        return file, doc, path
    if how == "insert" and isinstance(target, dict):
        k = draw(KEYS)
        target[k] = draw(VALUES)
        return file, doc, path + (k,)
    if how == "append" and isinstance(target, list):
        target.append(draw(VALUES))
        return file, doc, path + (len(target) - 1,)
    value = draw(VALUES)
    if not path:
        return file, value, path
    get(doc, path[:-1])[path[-1]] = value
    return file, doc, path


# ---------------------------------------------------------------- the oracle


def render(path, doc) -> str | None:
    """A path as errors spell keys: `a.b[0].c` (list indexes where the document had a list)."""
    out = ""
    for p in path:
        if isinstance(doc, list):
            out += f"[{p}]"
            doc = doc[p] if p < len(doc) else None
        else:
            out += ("." if out else "") + _part(p)
            doc = doc.get(p) if isinstance(doc, dict) else None
    return out or None


def load(file: str, doc) -> list:
    """Everything a run loads, with `file` replaced by `doc`: the cells of the plan."""
    if file == KNOWN_ISSUES:
        known_issues.parse(doc, file)
        return ["(a known-issues file has no cells)"]
    inventory = doc if file == INVENTORY else copy.deepcopy(DOCS[INVENTORY])
    hosts = parse_hosts(inventory, INVENTORY)
    domains = parse_domains(inventory, INVENTORY, hosts)
    matrices = {f: doc if f == file else copy.deepcopy(d) for f, d in MATRIX_DOCS.items()}
    if file != INVENTORY:
        matrices = {file: matrices[file]}
    return matrixmod.expand_all([parse_matrix(d, f, set(hosts), set(domains)) for f, d in matrices.items()])


# Keys whose check involves another key (or the inventory): their error may follow a change made
# elsewhere, and then its message names what changed.
CROSS_KEYS = {"hosts", "domain", "migration", "workloads", "exclude", "axes", "axes.ic_mode", "axes.kernel_irqchip",
              "axes.cpu_compat"}


def names_the_change(e: ConfigError, file: str, path: tuple, original) -> bool:
    words = [str(p) for p in path if isinstance(p, str)]
    if e.path != file:
        # A change to the inventory can leave a matrix naming a host or domain that is gone.
        return file == INVENTORY and e.path in MATRIX_DOCS and e.key in ("hosts", "domain") and (
            not path or any(w in e.message for w in words))
    if not path:
        return True  # the whole document was replaced: any key of it
    want = render(path, original)
    if e.key == want or (e.key or "").startswith((want + ".", want + "[")):
        return True  # the key changed, or inside the value put there
    if e.key in {render(path[:i], original) for i in range(1, len(path))}:
        return True  # a parent: an empty list, a mapping missing what it needs, duplicate ids
    if path[-1] == "kind" and e.key and e.key.startswith(render(path[:-1], original) + "."):
        return True  # a host's kind decides which of its other keys are required or allowed
    return e.key in CROSS_KEYS and any(re.search(rf"\b{re.escape(w)}\b", e.message) for w in words)


@FUZZ
@given(mutated())
def test_a_mutated_config_loads_or_names_the_file_and_key(case):
    file, doc, path = case
    try:
        cells = load(file, doc)
    except ConfigError as e:
        assert names_the_change(e, file, path, DOCS[file]), (
            f"mutated {render(path, DOCS[file])!r} of {file}; the error names {e.path}: {e.key}: {e.message}")
        assert str(e).startswith(f"{e.path}: "), str(e)
        assert len(str(e)) < 2000 and "\n" not in str(e), "one line, bounded (values are quoted cut short)"
    else:
        assert cells, f"a valid plan has cells (mutated {render(path, DOCS[file])!r} of {file})"


# The property above reaches the YAML reader only through valid documents; this one feeds it
# arbitrary text, as a user's editor might leave it.
YAMLISH = st.lists(st.sampled_from(list("ab:-[]{},&*!|>'\"#%@`? \n\t0.~\x00\xff") +
                                   ["!!int ", "!!float ", "!!set ", "!!timestamp ", "!!binary ", "axes", "smp",
                                    "hosts", "<<", "\ud800"]),
                   max_size=40).map("".join)


@settings(max_examples=300, derandomize=True, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(YAMLISH)
def test_any_text_as_a_matrix_file_loads_or_is_a_config_error(tmp_path_factory, text):
    p = tmp_path_factory.getbasetemp() / "fuzz.yaml"
    p.write_text(text, encoding="utf-8", errors="surrogatepass")
    try:
        matrixmod.expand_all([parse_matrix(load_yaml(p), str(p), {"local"}, set())])
    except ConfigError as e:
        assert e.path == str(p)


# ---------------------------------------------------------------- limits, one by one


@pytest.mark.parametrize("text, key, words", [
    (f"axes: {{smp: [{MAX_SMP + 1}]}}", "axes.smp", f"at most {MAX_SMP}"),
    (f"axes: {{smp: [{MAX_SMP}]}}", None, None),
    ("axes: {smp: [99999999999999999999999]}", "axes.smp", "too large"),
    (f"timeouts: {{boot: {int(MAX_TIMEOUT_S) + 1}}}", "timeouts.boot", "at most 86400 (one day)"),
    ("timeouts: {boot: .inf}", "timeouts.boot", "not a positive number of seconds"),
    ("timeouts: {boot: .nan}", "timeouts.boot", "not a positive number of seconds"),
    (f"migration_max_bandwidth: {MAX_BANDWIDTH + 1}", "migration_max_bandwidth", f"at most {MAX_BANDWIDTH}"),
    (f"append: {'x' * (MAX_APPEND + 1)}", "append", f"at most {MAX_APPEND}"),
    ("append: \"a\\0b\"", "append", "control character"),
    ("append: \"a\\u2028b\"", "append", "control character"),
    ("name: \"a\\nb\"", "name", "control character"),
    ("name: 5", "name", "must be a string"),
    ("name: []", "name", "must be a string"),
    ("kit: {kernel: \"a\\0b\"}", "kit.kernel", "control character"),
    (f"kit: {{kernel: {'a' * 300}}}", "kit.kernel", "File name too long"),  # is_file() raises for it
    ("kit: {kernel: 5}", "kit.kernel", "must be a file path"),
    ("kit: {initrd: x}", "kit.kernel", "required"),
    ("kit: [vmlinux]", "kit", "must be a mapping"),
    ("hosts: {local: 1}", "hosts", "must be a list of host names"),
    ("hosts: [[local]]", "hosts[0]", "must be a host name"),
    ("hosts: [5]", "hosts[0]", "must be a host name"),
    ("hosts: ~", "hosts", "must be a list of host names"),
    ("axes: []", "axes", "must be a mapping"),
    ("axes: {5: [a]}", "axes.5", "unknown axis"),
    ("axes: {ic_mode: {a: 1}}", "axes.ic_mode", "must be a list of values"),
    ("axes: {ic_mode: [dual, [xics]]}", "axes.ic_mode[1]", "must be one ic_mode value"),
    ("exclude: [{ic_mode: [xics]}]", "exclude[0].ic_mode", "write one entry per combination"),
    ("exclude: [{ic_mode: {a: 1}}]", "exclude[0].ic_mode", "must be one value"),
    ("exclude: [5]", "exclude[0]", "non-empty mapping"),
    ("exclude: {}", "exclude", "must be a list"),
    ("axes: {ic_mode: [xics]}\nexclude: [{ic_mode: xics}]", "exclude", "no cell is left"),
    ("workloads: [[ipi]]", "workloads[0]", "must be a workload name"),
    ("workloads: ipi", "workloads", "must be a list"),
    ("migration: [[none]]", "migration[0]", "must be a plan name"),
    ("migration: ~", "migration", "must be a list of migration plans"),
    ("timeouts: [1]", "timeouts", "must be a mapping"),
    ("timeouts: {1: 5}", "timeouts.1", "unknown timeout"),
    ("domain: [x]", "domain", "is not a domain name"),
    ("domain: 5", "domain", "is not a domain name"),
    ("description: [1]", "description", "must be text"),
    ("description: \"two\\nlines\"", None, None),
    ("a: !!int abc", None, "YAML value error"),
    ("a: !!timestamp 2020-13-45", None, "YAML value error"),
    ("a: " + "[" * 1200 + "]" * 1200, None, "nested too deeply"),
])
def test_each_kind_of_bad_matrix_value(tmp_path, text, key, words):
    from harness.config import load_matrix

    p = tmp_path / "m.yaml"
    p.write_text(text + "\n")
    if words is None:
        assert load_matrix(p, {"local"}, set())
        return
    with pytest.raises(ConfigError) as info:
        load_matrix(p, {"local"}, set())
    assert (info.value.path, info.value.key) == (str(p), key), str(info.value)
    assert words in info.value.message


def test_too_many_combinations_is_refused_before_expanding():
    axes = {"smp": list(range(1, 101)), "qemu": [f"b{i}" for i in range(100)], "ic_mode": ["dual", "xics", "xive"],
            "cpu_compat": ["default", "power8", "power9", "power10"]}
    with pytest.raises(ConfigError) as info:
        parse_matrix({"axes": axes}, "m.yaml")
    assert info.value.key == "axes" and f"at most {MAX_CELLS}" in info.value.message


@pytest.mark.parametrize("hosts, key, words", [
    ({"p9": {"qemu": ["a"]}}, "hosts.p9.qemu", "must be a mapping of build name"),
    ({"p9": {"qemu": {"mine": {"binary": 5}}}}, "hosts.p9.qemu.mine.binary", "must be a program"),
    ({"p9": {"qemu": {"mine": {"binary": "/q", "firmware_dir": ["x"]}}}}, "hosts.p9.qemu.mine.firmware_dir",
     "must be a directory path"),
    ({"p9": {"qemu": {"mine": {"debian_suite": "sid/../x"}}}}, "hosts.p9.qemu.mine.debian_suite", "is not a Debian suite"),
    ({"p9": {"qemu": {"my build": {"binary": "/q"}}}}, "hosts.p9.qemu.'my build'", "is not a build name"),
    ({"p9": {"slots": MAX_SLOTS + 1}}, "hosts.p9.slots", f"at most {MAX_SLOTS}"),
    ({"p9": {"slots": 2.5}}, "hosts.p9.slots", "not a positive whole number"),
    ({"p9": {"kind": ["ssh"]}}, "hosts.p9.kind", "is not supported"),
    ({"p9": {"migration_address": 5}}, "hosts.p9.migration_address", "5 is not an address"),
    ({"p9": {"migration_address": "a\nb"}}, "hosts.p9.migration_address", "control character"),
    ({5: {}}, "hosts.5", "is not a host name"),
    ({"a/b": {}}, "hosts.'a/b'", "is not a host name"),
    ({"x" * 65: {}}, "hosts." + "x" * 65, "at most 64 characters"),
    ({"p9": []}, "hosts.p9", "must be a mapping"),
    ({"p9": 5}, "hosts.p9", "must be a mapping"),
    ({"p9": {5: 1}}, "hosts.p9.5", "unknown key for a local host"),
    ({"p9": {"kind": "ssh", "address": "a", "user": "u", "key_file": "k\x00", "known_hosts": "k"}},
     "hosts.p9.key_file", "control character"),
    ({"p9": {"kind": "ssh", "address": "a", "user": ["u"], "key_file": "k", "known_hosts": "k"}},
     "hosts.p9.user", "required for an ssh host"),
    ({"p9": {"kind": "ssh", "address": "a", "user": "u", "key_file": "k" * 300, "known_hosts": "k"}},
     "hosts.p9.key_file", "k" * 100),  # no such file, or a name too long: a ConfigError either way
])
def test_each_kind_of_bad_inventory_value(hosts, key, words):
    with pytest.raises(ConfigError) as info:
        parse_hosts({"hosts": hosts}, "/etc/caskit/hosts.yaml")
    assert info.value.path == "/etc/caskit/hosts.yaml"
    if key is not None:
        assert info.value.key == key, str(info.value)
    assert words in info.value.message


def test_ssh_host_values_are_checked_after_the_files_exist(tmp_path):
    (tmp_path / "k").write_text("key")
    base = {"kind": "ssh", "address": "a", "user": "u", "key_file": "k", "known_hosts": "k"}
    inv = str(tmp_path / "hosts.yaml")
    for extra, key, words in [({"port": 70000}, "port", "is not a TCP port"), ({"port": True}, "port", "TCP port"),
                              ({"proxy_command": "ssh -W"}, "proxy_command", "must be a list of strings"),
                              ({"proxy_command": ["ssh", 5]}, "proxy_command[1]", "must be a non-empty string"),
                              ({"kit_dir": "rel/dir"}, "kit_dir", "is not an absolute path"),
                              ({"kit_dir": 5}, "kit_dir", "must be an absolute path"),
                              ({"console_batch": "yes"}, "console_batch", "is not true or false")]:
        with pytest.raises(ConfigError) as info:
            parse_hosts({"hosts": {"p9": {**base, **extra}}}, inv)
        assert info.value.key == f"hosts.p9.{key}" and words in info.value.message, str(info.value)
    assert parse_hosts({"hosts": {"p9": base}}, inv)["p9"].ssh.port == 22
    assert parse_hosts({"hosts": {"p9": base}}, inv)["p9"].console_batch
    assert not parse_hosts({"hosts": {"p9": {**base, "console_batch": False}}}, inv)["p9"].console_batch


@pytest.mark.parametrize("domains, key, words", [
    ({"x": {"hosts": 5}}, "domains.x.hosts", "must be a host name"),
    ({"x": {"hosts": [["local"]]}}, "domains.x.hosts[0]", "must be a host name"),
    ({"x": {"hosts": []}}, "domains.x.hosts", "empty list"),
    ({"x": {"qemu": ["system"]}}, "domains.x.hosts", "required"),
    ({"x": {"hosts": ["local"], "qemu": [5]}}, "domains.x.qemu[0]", "must be a build name"),
    ({"x": {"hosts": ["local"], "qemu": {"a": 1}}}, "domains.x.qemu", "must be a list of build names"),
    ({"x": {"hosts": ["local"], "colour": 1}}, "domains.x.colour", "unknown key"),
    ({"x": ["local"]}, "domains.x", "must be a mapping"),
    ({5: {"hosts": ["local"]}}, "domains.5", "is not a domain name"),
])
def test_each_kind_of_bad_domain(domains, key, words):
    data = {"domains": domains}
    with pytest.raises(ConfigError) as info:
        parse_domains(data, "h.yaml", parse_hosts(data, "h.yaml"))
    assert (info.value.key, info.value.path) == (key, "h.yaml"), str(info.value)
    assert words in info.value.message


def test_a_domain_may_name_one_build_without_a_list():
    data = {"domains": {"x": {"hosts": "local", "qemu": "system"}}}
    assert parse_domains(data, "h.yaml", parse_hosts(data, "h.yaml"))["x"].qemu == ("system",)


ENTRY = {"id": "k1", "summary": "s", "reference": "r", "match": {"symptoms": ["no-heartbeat"]}}


@pytest.mark.parametrize("change, key, words", [
    ({"id": ["a"]}, "issues[0].id", "must be an id"),
    ({"summary": 5}, "issues[0].summary", "must be text"),
    ({"evidence": [1]}, "issues[0].evidence", "must be a mapping"),
    ({"colour": 1}, "issues[0].colour", "unknown key"),
    ({"match": ["x"]}, "issues[0].match", "must be a mapping"),
    ({"match": {"symptoms": [["x"]]}}, "issues[0].match.symptoms[0]", "must be a non-empty string"),
    ({"match": {"symptoms": ["x"], "plans": ["teleport"]}}, "issues[0].match.plans[0]", "is not allowed"),
    ({"match": {"symptoms": ["x"], "modes": ["both"]}}, "issues[0].match.modes[0]", "is not allowed"),
    ({"match": {"symptoms": ["x"], "accel": "hvf"}}, "issues[0].match.accel", "is not allowed"),
    ({"match": {"symptoms": ["x"], "smp_min": 10**30}}, "issues[0].match.smp_min", f"at most {MAX_SMP}"),
    ({"match": {"symptoms": ["x"], "qemu_version": 7.2}}, "issues[0].match.qemu_version", "a quoted string"),
    ({"match": {"log_regex": 5}}, "issues[0].match.log_regex", "must be a regular expression"),
    ({"match": {"log_regex": "(" * 900}}, "issues[0].match.log_regex", "not a regular expression"),
    ({"match": {"symptoms": ["x"], "guest_state": ["idle"]}}, "issues[0].match.guest_state", "must be one of"),
    # Boot entries: judged on a cell's boot with what its host proved, never on a hop's signals.
    ({"match": {"host_findings": ["undelivered-mer"]}}, "issues[0].match.error_kinds", "how the boot failed"),
    ({"match": {"host_findings": ["mer"], "error_kinds": ["GuestHang"]}}, "issues[0].match.host_findings[0]",
     "is not allowed"),
    ({"match": {"host_findings": ["undelivered-mer"], "error_kinds": ["QemuCrashed"]}}, "issues[0].match.error_kinds[0]",
     "is not allowed"),
    ({"match": {"host_findings": ["undelivered-mer"], "error_kinds": ["GuestHang"], "symptoms": ["no-heartbeat"]}},
     "issues[0].match.symptoms", "not on a migration hop"),
    ({"match": {"host_findings": ["undelivered-mer"], "error_kinds": ["GuestHang"], "kvm_modes": ["kvm"]}},
     "issues[0].match.kvm_modes[0]", "is not allowed"),
    ({"match": {"symptoms": ["x"], "kvm_modes": ["hv"]}}, "issues[0].match.host_findings", "need host_findings"),
])
def test_each_kind_of_bad_known_issue(change, key, words):
    with pytest.raises(ConfigError) as info:
        known_issues.parse({"issues": [{**ENTRY, **change}]}, "k.yaml")
    assert info.value.key == key, str(info.value)
    assert words in info.value.message


@pytest.mark.parametrize("data, key", [({"issues": 5}, "issues"), ({"issue": []}, "issue"), ([1], None)])
def test_a_known_issues_file_of_the_wrong_shape(data, key):
    with pytest.raises(ConfigError) as info:
        known_issues.parse(data, "k.yaml")
    assert info.value.key == key


def test_a_known_issue_may_give_one_plan_without_a_list():
    (k,) = known_issues.parse({"issues": [{**ENTRY, "match": {"symptoms": "no-heartbeat", "plans": "roundtrip"}}]},
                              "k.yaml")
    assert (k.symptoms, k.plans) == (("no-heartbeat",), ("roundtrip",))


# ---------------------------------------------------------------- the command line


# The crashes reproduced before these checks existed (exit 1 and a traceback, as for a FAIL).
BAD_MATRICES = [
    ("timeouts: [1]\n", "timeouts"),
    ("workloads: [[ipi]]\n", "workloads[0]"),
    ("domain: [x]\n", "domain"),
]


@pytest.mark.parametrize("text, key", BAD_MATRICES, ids=[k for _, k in BAD_MATRICES])
@pytest.mark.parametrize("command", ["run", "matrix"])
def test_cli_exits_2_on_a_bad_matrix(tmp_path, text, key, command):
    m = tmp_path / "bad.yaml"
    m.write_text(text)
    r = run_cli([command, str(m)], tmp_path / "out" if command == "run" else None, timeout=60)
    assert r.rc == 2, r.stderr
    assert f"caskit: config error: {m}: {key}: " in r.stderr
    assert "Traceback" not in r.stderr + r.stdout
    assert not (tmp_path / "out").exists(), "nothing ran"


@pytest.mark.parametrize("command", [["run", "quick"], ["matrix", "quick"], ["domain", "local-tcg"], ["hosts", "probe"]],
                         ids=lambda c: c[0])
def test_cli_exits_2_on_a_list_of_builds_in_the_inventory(tmp_path, command):
    check_bad_inventory(tmp_path, "hosts: {p9: {qemu: [a]}}\n", "hosts.p9.qemu", command)


def test_hosts_probe_checks_the_domains_too(tmp_path):
    check_bad_inventory(tmp_path, "domains: {x: {hosts: 5}}\n", "domains.x.hosts", ["hosts", "probe"])


def check_bad_inventory(tmp_path, text, key, command):
    inv = tmp_path / "hosts.yaml"
    inv.write_text(text)
    out = tmp_path / "out" if command[0] == "run" else None
    r = run_cli([*command, "--hosts", str(inv)], out, timeout=60)
    assert r.rc == 2, r.stderr
    assert f"caskit: config error: {inv}: {key}: " in r.stderr
    assert "Traceback" not in r.stderr + r.stdout


def test_cli_exits_2_on_a_bad_known_issues_file(tmp_path):
    k = tmp_path / "known.yaml"
    k.write_text("issues: [{id: a, summary: s, reference: r, match: {symptoms: [[x]]}}]\n")
    r = run_cli(["run", "quick", "--known-issues", str(k)], tmp_path / "out", timeout=60)
    assert r.rc == 2, r.stderr
    assert f"caskit: config error: {k}: issues[0].match.symptoms[0]: " in r.stderr
    assert "Traceback" not in r.stderr + r.stdout


def test_cli_exits_2_on_a_file_that_is_not_utf8(tmp_path):
    m = tmp_path / "bad.yaml"
    m.write_bytes(b"name: \xff\xfe\n")
    r = run_cli(["matrix", str(m)], None, timeout=60)
    assert r.rc == 2 and "not UTF-8" in r.stderr and "Traceback" not in r.stderr


def test_the_shipped_files_are_what_the_fuzzer_mutates():
    assert {Path(f).name for f in MATRIX_DOCS} >= {"quick.yaml", "cas-full.yaml", "cross-build.yaml"}
    assert load(INVENTORY, copy.deepcopy(DOCS[INVENTORY]))
    assert load(KNOWN_ISSUES, copy.deepcopy(DOCS[KNOWN_ISSUES]))
