"""Loading and validating matrix files and the host inventory.

Every problem is a ConfigError naming the file and the key, raised before anything boots.
"""

from __future__ import annotations

import itertools
import math
import os
import re
import reprlib
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .axes import AXES, AXIS_BY_NAME, AXIS_NAMES, DEFAULT
from .errors import ConfigError
from .resources import CONFIGS

MATRICES = CONFIGS / "matrices"
DEFAULT_HOSTS = CONFIGS / "hosts.yaml"

# Workloads and migration plans this version can run (harness/workloads/ implements each
# workload named here; a unit test keeps the two in step).
WORKLOADS: dict[str, str] = {
    "ipi": "cross-CPU wakeups between processes pinned to CPU 0 and 1",
    "virtio-net": "ping through a MSI-X and an INTx (LSI) virtio-net NIC",
    "virtio-blk": "direct-I/O write and read-back on a virtio disk",
    "affinity": "the NIC's RX interrupt steered to each online CPU",
    "cpu-hotplug": "CPU 1 offline and back under traffic",
    "device-hotplug": "virtio-net added, used and removed at runtime on a second PCI host bridge",
    "reboot": "system_reset three times: CAS again, same mode",
}
MIGRATIONS: dict[str, str] = {
    "none": "no migration",
    "roundtrip": "A -> B -> fresh A', judged by the guest after each hop",
    "file": "to a file (exec:), source stopped, restored into a new QEMU",
    "mismatch": "into a destination that cannot take the state; must fail, source must live on",
    "cross-build": "A -> B on another QEMU build of the domain, same host -> fresh A' (needs `domain:`)",
    "cross-host": "A -> B on another host of the domain, over TCP -> fresh A' (needs `domain:`)",
}
# Plans whose middle hop runs elsewhere in a migration domain.
DOMAIN_PLANS = ("cross-build", "cross-host")
# Workloads whose state lives in a file on the source host (a disk image, a hotplugged device's
# backing): across hosts they need shared storage, which caskit does not set up.
HOST_LOCAL_WORKLOADS = ("virtio-blk", "device-hotplug")
HOST_KINDS = ("local", "ssh", "emulated")
# Emulated POWER9 KVM hosts caskit boots itself (harness/emulated/host.py KINDS; a test keeps
# the two in step): a nested-HV pseries L1, and a bare-metal PowerNV L1.
EMULATED_KINDS = ("nested-hv", "powernv9")
HOST_KEYS = {
    "local": ("kind", "slots", "qemu", "migration_address", "machine_options", "kvm"),
    "ssh": ("kind", "slots", "qemu", "migration_address", "kvm", "address", "port", "user", "key_file", "known_hosts",
            "proxy_command", "kit_dir", "machine_options"),
    "emulated": ("kind", "emulated_kind", "slots", "port", "machine_options"),
}
MATRIX_KEYS = ("name", "hosts", "axes", "exclude", "workloads", "migration", "timeouts", "kit", "append", "migration_max_bandwidth", "domain", "description")
TIMEOUT_KEYS = {"boot": 90.0, "command": 30.0, "shutdown": 10.0, "liveness": 10.0}

# Upper bounds on what a file may give. Each is far above any real use and low enough that a typo
# fails here, naming its key, instead of hours later in QEMU, in a timer or in a loop.
MAX_SMP = 65536  # QEMU's pseries cpu-max is 4096 (10.0); more stays possible so the refusal can be tested
MAX_SLOTS = 1024  # guests at once on one host (a slot lease tries each slot's lock file in turn)
MAX_TIMEOUT_S = 86400.0  # one day; Python's timers overflow on huge values
MAX_BANDWIDTH = 10**12  # bytes/s (1 TB/s): faster than any link
MAX_CELLS = 100_000  # one matrix's cross product, before exclusions (cas-full has 576)
MAX_NAME = 64  # host, build and domain names go into each cell's id, a directory name (255 bytes at most)
MAX_TEXT = 4096  # a path (PATH_MAX) or any other one-line value
MAX_APPEND = 1024  # powerpc's kernel command line holds 2048 bytes; caskit's own parameters share it
MAX_PROSE = 65536  # a description: free text over several lines


@dataclass(frozen=True)
class Matrix:
    name: str
    path: str
    hosts: tuple[str, ...]
    axes: dict[str, tuple]  # axis name -> values (every axis present)
    exclude: tuple[dict, ...] = ()
    workloads: tuple[str, ...] = ()
    migration: tuple[str, ...] = ("none",)
    timeouts: dict[str, float] = field(default_factory=lambda: dict(TIMEOUT_KEYS))
    kit: dict[str, str] | None = None  # user-supplied {kernel, initrd}
    append: str = ""  # extra guest kernel command line
    migration_max_bandwidth: int | None = None  # bytes/s for every hop (a slow link)
    domain: str | None = None  # run every cell with this migration domain's pinned options


@dataclass(frozen=True)
class QemuBuildSpec:
    name: str
    binary: str
    firmware_dir: str | None = None
    debian_suite: str | None = None  # fetched from this Debian suite on first use


BACKPORTS = QemuBuildSpec("backports", "qemu-system-ppc64", None, "bookworm-backports")


@dataclass(frozen=True)
class HostSpec:
    name: str
    kind: str
    slots: int
    qemu: tuple[QemuBuildSpec, ...]
    # Where other hosts of a migration domain send this host's incoming migration streams.
    migration_address: str = "127.0.0.1"
    ssh: SshSpec | None = None
    # -machine options every pseries guest on this host needs (e.g. the cap-* levels its KVM can
    # provide); None: the host kind's own (an emulated PowerNV host's), else none.
    machine_options: tuple[str, ...] | None = None
    emulated_kind: str | None = None  # kind emulated: nested-hv | powernv9
    port: int | None = None  # kind emulated: the loopback port forwarded to its sshd (None: any free one)
    # The host must offer KVM (`kvm: true`; always for emulated hosts, whose whole point it is):
    # a probe that finds none is the host's failure, so its cells are ERROR, never SKIP.
    kvm_required: bool = False


@dataclass(frozen=True)
class SshSpec:
    address: str
    port: int
    user: str
    key_file: str
    known_hosts: str
    proxy_command: tuple[str, ...] = ()  # argv (no shell) whose stdin/stdout reach the host's sshd
    kit_dir: str = "/var/tmp/caskit"


class _Loader(yaml.SafeLoader):
    """SafeLoader that keeps on/off/yes/no as the strings the user wrote.

    YAML 1.1 reads bare `on` as True; QEMU's words are `on` and `off`, so a user writing
    `kernel_irqchip: [on, off]` means the strings.
    """


_Loader.yaml_implicit_resolvers = {k: [r for r in v if r[0] != "tag:yaml.org,2002:bool"]
                                   for k, v in yaml.SafeLoader.yaml_implicit_resolvers.items()}
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)


def load_yaml(path: str | os.PathLike) -> Any:
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError(str(p), None, f"cannot read: {e.strerror or e}") from None
    except UnicodeDecodeError as e:
        raise ConfigError(str(p), None, f"not UTF-8 text: the byte at offset {e.start} cannot be decoded") from None
    try:
        return yaml.load(text, Loader=_Loader)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        raise ConfigError(str(p), None, f"YAML syntax error: {where}{getattr(e, 'problem', None) or e}") from None
    except RecursionError:  # PyYAML composes nested collections recursively
        raise ConfigError(str(p), None, "YAML nested too deeply to read") from None
    except Exception as e:
        # An explicit tag on a value it cannot hold (`!!int abc` is a ValueError, an empty
        # `!!int` an IndexError, `!!timestamp 2020-13-45` a ValueError): PyYAML's constructors
        # raise Python's own errors for these, with no position. Whatever they raise, the text
        # of the file is at fault, not caskit.
        raise ConfigError(str(p), None, f"YAML value error: {type(e).__name__}: {e}") from None


def _fmt(values) -> str:
    return ", ".join(str(v) for v in values)


# Values quoted in messages are cut short: a YAML alias can make a value huge (or recursive).
_REPR = reprlib.Repr()
_REPR.maxstring, _REPR.maxother, _REPR.maxlong, _REPR.maxlevel = 80, 80, 40, 3


def _show(v: Any) -> str:
    return _REPR.repr(v)


def _kind(v: Any) -> str:
    """What a value is, in the words of a YAML file."""
    if v is None:
        return "nothing (null)"
    for types, word in ((bool, "a boolean"), ((int, float), "a number"), (str, "a string"), ((list, tuple), "a list"),
                        (dict, "a mapping"), ((set, frozenset), "a set"), (bytes, "binary data")):
        if isinstance(v, types):
            return word
    return f"a {type(v).__name__}"  # dates and timestamps


def _got(v: Any) -> str:
    return f"got {_kind(v)}" if v is None else f"got {_kind(v)}: {_show(v)}"


_PLAIN_KEY = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")


def _part(k: Any) -> str:
    """One step of a dotted key: a plain name as written, anything else (a number, a key with
    spaces or control characters) as its repr, so the message stays one readable line."""
    return k if isinstance(k, str) and _PLAIN_KEY.fullmatch(k) else _show(k)


def _child(key: str | None, k: Any) -> str:
    return f"{key}.{_part(k)}" if key else _part(k)


def _item(key: str, v: Any, i: int) -> str:
    """The key of the i-th value of `v`: indexed when the file gave a list, else the key itself."""
    return f"{key}[{i}]" if isinstance(v, list) else key


def _mapping(path: str, key: str, v: Any, what: str) -> dict:
    """A mapping; absent (null) is empty."""
    if v is None:
        return {}
    if not isinstance(v, dict):
        raise ConfigError(path, key, f"must be {what}, {_got(v)}")
    return v


def _list(path: str, key: str, v: Any, what: str) -> list:
    """A non-empty list; a single value stands for a list of one."""
    if isinstance(v, list):
        if not v:
            raise ConfigError(path, key, "empty list: give at least one value")
        return v
    if v is not None and not isinstance(v, (dict, set, frozenset, tuple)):
        return [v]
    raise ConfigError(path, key, f"must be a list of {what} (or one), {_got(v)}")


def _scalar(path: str, key: str, v: Any, what: str) -> None:
    if isinstance(v, (list, dict, set, frozenset, tuple)):
        raise ConfigError(path, key, f"must be {what}, {_got(v)}")


# Control characters never belong in a value: a NUL cannot reach a path or an argv, a newline
# would split a log line or a kernel command line, a lone surrogate cannot even be written to a
# file. Prose (descriptions) may span lines.
_BAD_CATEGORIES = {"Cc", "Cs", "Zl", "Zp"}


def _text(path: str, key: str, v: Any, what: str, *, max_len: int = MAX_TEXT, lines: bool = False,
          empty: bool = False) -> str:
    if not isinstance(v, str):
        raise ConfigError(path, key, f"must be {what}, {_got(v)}")
    if not v and not empty:
        raise ConfigError(path, key, f"must be {what}, not empty")
    bad = next((c for c in v if unicodedata.category(c) in _BAD_CATEGORIES and not (lines and c in "\n\t")), None)
    if bad is not None:
        allowed = "only newlines and tabs are allowed" if lines else "it must be one line of printable text"
        raise ConfigError(path, key, f"{_show(v)} contains the control character {bad!r}; {allowed}")
    if len(v) > max_len:
        raise ConfigError(path, key, f"{len(v)} characters is too long: at most {max_len}")
    return v


_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


def _name(path: str, key: str, v: Any, what: str) -> str:
    """A name that becomes part of a cell id, a file name and a command line."""
    if not (isinstance(v, str) and _NAME.fullmatch(v) and len(v) <= MAX_NAME):
        raise ConfigError(path, key, f"{_show(v)} is not {what} (letters, digits, - _ ., starting with a letter "
                                     f"or digit, at most {MAX_NAME} characters)")
    return v


def _whole(path: str, key: str, v: Any, hi: int, too_many: str) -> int:
    """A whole number from 1 to `hi`; `too_many` says why more is refused."""
    if isinstance(v, bool) or not isinstance(v, int) or v < 1:
        raise ConfigError(path, key, f"{_show(v)} is not a positive whole number")
    if v > hi:
        raise ConfigError(path, key, f"{_show(v)} is too large: at most {hi} ({too_many})")
    return v


def _seconds(path: str, key: str, v: Any) -> float:
    # Compare before converting: float() of a huge int overflows.
    if (isinstance(v, bool) or not isinstance(v, (int, float)) or (isinstance(v, float) and not math.isfinite(v))
            or v <= 0):
        raise ConfigError(path, key, f"{_show(v)} is not a positive number of seconds")
    if v > MAX_TIMEOUT_S:
        raise ConfigError(path, key, f"{_show(v)} seconds is too long: at most {MAX_TIMEOUT_S:.0f} (one day)")
    return float(v)


def _axis_value(path: str, key: str, axis_name: str, v: Any) -> str | int:
    axis = AXIS_BY_NAME[axis_name]
    if isinstance(v, bool):  # only true/false reach here; on/off stayed strings
        v = "on" if v else "off"
    if axis.kind == "int":
        if v == DEFAULT:
            return axis.default
        return _whole(path, key, v, MAX_SMP, "QEMU's pseries machines take at most 4096 vCPUs")
    if axis.kind == "name":
        if isinstance(v, str) and _NAME.fullmatch(v) and len(v) <= MAX_NAME:
            return v
        raise ConfigError(path, key, f"{_show(v)} is not a build name (letters, digits, - _ ., starting with a "
                                     f"letter or digit, at most {MAX_NAME} characters)")
    if isinstance(v, (int, float)):
        v = str(v)
    # Accept the case a user is likely to type for CPU models (power9 for POWER9).
    match = next((a for a in axis.values if isinstance(v, str) and a.lower() == v.lower()), None)
    if match is None:
        raise ConfigError(path, key, f"{_show(v)} is not allowed; allowed values: {_fmt(axis.values)}")
    return match


def _hosts_of(path: str, raw: Any, known_hosts: set[str] | None) -> list[str]:
    """Host names, or `pool:NAME` for any member of a pool of interchangeable hosts."""
    hosts = []
    for i, h in enumerate(_list(path, "hosts", raw, "host names")):
        if not isinstance(h, str):
            raise ConfigError(path, _item("hosts", raw, i), f"must be a host name (a string), {_got(h)}")
        if known_hosts is not None and h not in known_hosts:
            raise ConfigError(path, "hosts", f"unknown host {_show(h)}; hosts in the inventory: {_fmt(sorted(known_hosts))}")
        if h.startswith(POOL_PREFIX):
            _name(path, _item("hosts", raw, i), h[len(POOL_PREFIX):], "a pool name")
            hosts.append(h)
        else:
            hosts.append(_name(path, _item("hosts", raw, i), h, "a host name"))
    return hosts


def _axes_of(path: str, raw: Any) -> dict[str, tuple]:
    raw = _mapping(path, "axes", raw, "a mapping of axis name to a list of values")
    axes: dict[str, tuple] = {}
    for k, v in raw.items():
        if k not in AXIS_BY_NAME:
            raise ConfigError(path, _child("axes", k), f"unknown axis; allowed axes: {_fmt(AXIS_NAMES)}")
        key = f"axes.{k}"
        vals = []
        for i, x in enumerate(_list(path, key, v, "values")):
            _scalar(path, _item(key, v, i), x, f"one {k} value")
            vals.append(_axis_value(path, key, k, x))
        axes[k] = tuple(dict.fromkeys(vals))  # keep order, drop repeats
    for a in AXES:
        axes.setdefault(a.name, (a.default,))
    return axes


def _exclude_of(path: str, raw: Any) -> list[dict]:
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise ConfigError(path, "exclude", f"must be a list of partial axis mappings, {_got(raw)}")
    excl: list[dict] = []
    for i, e in enumerate(raw):
        key = f"exclude[{i}]"
        if not isinstance(e, dict) or not e:
            raise ConfigError(path, key, f"must be a non-empty mapping of axis to value, {_got(e)}")
        d = {}
        for k, v in e.items():
            if k not in AXIS_BY_NAME:
                raise ConfigError(path, _child(key, k), f"unknown axis; allowed axes: {_fmt(AXIS_NAMES)}")
            _scalar(path, f"{key}.{k}", v, "one value (an entry excludes one combination: write one entry per "
                                            "combination)")
            d[k] = _axis_value(path, f"{key}.{k}", k, v)
        excl.append(d)
    return excl


def _workloads_of(path: str, raw: Any) -> list[str]:
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise ConfigError(path, "workloads", f"must be a list, {_got(raw)}")
    for i, w in enumerate(raw):
        if not isinstance(w, str):
            raise ConfigError(path, f"workloads[{i}]", f"must be a workload name (a string), {_got(w)}; "
                                                       f"available: {_fmt(WORKLOADS)}")
        if w not in WORKLOADS:
            raise ConfigError(path, "workloads", f"unknown workload {_show(w)}; available: {_fmt(WORKLOADS) or '(none yet)'}")
    return raw


def _migration_of(path: str, raw: Any) -> list[str]:
    plans = _list(path, "migration", raw, "migration plans")
    for i, m in enumerate(plans):
        if not isinstance(m, str):
            raise ConfigError(path, _item("migration", raw, i), f"must be a plan name (a string), {_got(m)}; "
                                                                 f"available: {_fmt(MIGRATIONS)}")
        if m not in MIGRATIONS:
            raise ConfigError(path, "migration", f"unknown plan {_show(m)}; available: {_fmt(MIGRATIONS)}")
    return plans


def _timeouts_of(path: str, raw: Any) -> dict[str, float]:
    timeouts = dict(TIMEOUT_KEYS)
    for k, v in _mapping(path, "timeouts", raw, f"a mapping of timeout name ({_fmt(TIMEOUT_KEYS)}) to seconds").items():
        if k not in TIMEOUT_KEYS:
            raise ConfigError(path, _child("timeouts", k), f"unknown timeout; allowed: {_fmt(TIMEOUT_KEYS)}")
        timeouts[k] = _seconds(path, f"timeouts.{k}", v)
    return timeouts


def _kit_of(path: str, raw: Any) -> dict[str, str] | None:
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise ConfigError(path, "kit", f"must be a mapping with kernel (and optionally initrd) paths, {_got(raw)}")
    for k in raw:
        if k not in ("kernel", "initrd"):
            raise ConfigError(path, _child("kit", k), "unknown key; allowed keys: kernel, initrd")
    if "kernel" not in raw:
        raise ConfigError(path, "kit.kernel", "required: the guest kernel's path (initrd is optional)")
    base = Path(path).parent
    kit = {}
    for k, v in raw.items():
        f = base / _text(path, f"kit.{k}", v, "a file path")
        try:
            kit[k] = str(f.resolve())
            found = Path(kit[k]).is_file()
        except OSError as e:  # a name too long, a loop of links: is_file() raises those
            raise ConfigError(path, f"kit.{k}", f"cannot use {_show(str(f))}: {e.strerror or e}") from None
        if not found:
            raise ConfigError(path, f"kit.{k}", f"no such file: {kit[k]}")
    return kit


def _every_cell_excluded(axes: dict[str, tuple], excl: list[dict]) -> bool:
    """No combination survives the exclusions (a run of nothing). Called after the MAX_CELLS
    check, which bounds the walk; it stops at the first combination left."""
    if not excl:
        return False
    names = list(axes)
    for combo in itertools.product(*(axes[n] for n in names)):
        a = dict(zip(names, combo))
        if not any(all(a[k] == v for k, v in e.items()) for e in excl):
            return False
    return True


def _cell_count(hosts: list, axes: dict[str, tuple], migration: list) -> int:
    n = len(hosts) * len(migration)
    for values in axes.values():
        n *= len(values)
    return n


def parse_matrix(data: Any, path: str, known_hosts: set[str] | None = None,
                 known_domains: set[str] | None = None) -> Matrix:
    if not isinstance(data, dict):
        raise ConfigError(path, None, "a matrix file must be a mapping with keys: " + _fmt(MATRIX_KEYS))
    for k in data:
        if k not in MATRIX_KEYS:
            raise ConfigError(path, _part(k), f"unknown key; allowed keys: {_fmt(MATRIX_KEYS)}")
    name = data.get("name")
    name = Path(path).stem if name is None or name == "" else _text(path, "name", name, "a string (the matrix's name)")
    if data.get("description") is not None:
        _text(path, "description", data["description"], "text", max_len=MAX_PROSE, lines=True, empty=True)

    hosts = _hosts_of(path, data.get("hosts", ["local"]), known_hosts)
    axes = _axes_of(path, data.get("axes"))
    excl = _exclude_of(path, data.get("exclude"))
    workloads = _workloads_of(path, data.get("workloads"))
    migration = _migration_of(path, data.get("migration", ["none"]))
    if (n := _cell_count(hosts, axes, migration)) > MAX_CELLS:
        raise ConfigError(path, "axes", f"{n} combinations of hosts, axes and migration plans: at most {MAX_CELLS} "
                                        "in one matrix; split it")
    if _every_cell_excluded(axes, excl):
        raise ConfigError(path, "exclude", "excludes every combination of the axes: no cell is left to run")
    timeouts = _timeouts_of(path, data.get("timeouts"))
    kit = _kit_of(path, data.get("kit"))
    append = _text(path, "append", data.get("append", ""), "one line of guest kernel command line",
                   max_len=MAX_APPEND, empty=True)

    bw = data.get("migration_max_bandwidth")
    if bw is not None:
        bw = _whole(path, "migration_max_bandwidth", bw, MAX_BANDWIDTH, "bytes per second: 1 TB/s, above any link")

    domain = data.get("domain")
    if domain is not None:
        _name(path, "domain", domain, "a domain name")
        if known_domains is not None and domain not in known_domains:
            raise ConfigError(path, "domain", f"unknown domain {domain!r}; domains in the inventory: "
                                              f"{_fmt(sorted(known_domains)) or '(none)'}")
        for a in ("ic_mode", "kernel_irqchip", "cpu_compat"):
            if axes[a] != (DEFAULT,):
                raise ConfigError(path, f"axes.{a}", f"the domain {domain!r} pins it; leave it out")
    for m in migration:
        if m in DOMAIN_PLANS and domain is None:
            raise ConfigError(path, "migration", f"plan {m!r} migrates between members of a migration domain; "
                                                 "name one with `domain:` (see `domains:` in the host inventory)")
    if "cross-host" in migration:
        local_only = [w for w in workloads if w in HOST_LOCAL_WORKLOADS]
        if local_only:
            raise ConfigError(path, "workloads", f"{', '.join(local_only)} keep state in a file on the source "
                                                 "host; plan 'cross-host' would need shared storage between hosts")

    return Matrix(name, path, tuple(hosts), axes, tuple(excl), tuple(workloads), tuple(migration), timeouts, kit,
                  append.strip(), bw, domain)


def _exists(p: Path) -> bool:
    """Path.exists(), but a name the OS refuses (too long, say) is a config error, not a crash."""
    try:
        return p.exists()
    except OSError as e:
        raise ConfigError(str(p)[:MAX_TEXT], None, f"cannot read: {e.strerror or e}") from None


def resolve_matrix_path(arg: str) -> Path:
    """A matrix given as a path, or by name from configs/matrices/."""
    p = Path(arg)
    if _exists(p) or p.suffix in (".yaml", ".yml") or "/" in arg:
        return p
    return MATRICES / f"{arg}.yaml"


def load_matrix(path: str | os.PathLike, known_hosts: set[str] | None = None,
                known_domains: set[str] | None = None) -> Matrix:
    p = resolve_matrix_path(str(path))
    if not _exists(p):
        avail = sorted(x.stem for x in MATRICES.glob("*.yaml"))
        raise ConfigError(str(p), None, f"no such matrix file; shipped matrices: {_fmt(avail)}")
    return parse_matrix(load_yaml(p), str(p), known_hosts, known_domains)


def _inventory(data: Any, path: str) -> dict:
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(path, None, "a host inventory is a mapping with a `hosts:` key (and optionally `domains:`), "
                                      + _got(data))
    for k in data:
        if k not in ("hosts", "domains", "pools"):
            raise ConfigError(path, _part(k), "unknown key; a host inventory has `hosts:` (and optionally `domains:` "
                                              "and `pools:`)")
    return data


def _build_spec(path: str, key: str, name: str, b: Any) -> QemuBuildSpec:
    ok = isinstance(b, dict) and (("binary" in b) != ("debian_suite" in b)) and not set(b) - {"binary", "firmware_dir", "debian_suite"}
    if not ok:
        raise ConfigError(path, key, "must be a mapping with `binary` (and optionally `firmware_dir`), "
                                     "or with `debian_suite` (e.g. bookworm-backports)")
    binary = _text(path, f"{key}.binary", b["binary"], "a program (a path or a name on PATH)") if "binary" in b else None
    fw = b.get("firmware_dir")
    if fw is not None:
        fw = _text(path, f"{key}.firmware_dir", fw, "a directory path")
    suite = _name(path, f"{key}.debian_suite", b["debian_suite"], "a Debian suite") if "debian_suite" in b else None
    return QemuBuildSpec(name, binary or "qemu-system-ppc64", fw, suite)


def parse_hosts(data: Any, path: str) -> dict[str, HostSpec]:
    data = _inventory(data, path)
    hosts = _mapping(path, "hosts", data.get("hosts"), "a mapping of host name to its settings")
    out: dict[str, HostSpec] = {}
    for name, spec in hosts.items():
        key = _child("hosts", name)
        _name(path, key, name, "a host name")
        spec = _mapping(path, key, spec, "a mapping of the host's settings")
        kind = spec.get("kind", "local")
        if not isinstance(kind, str) or kind not in HOST_KINDS:
            raise ConfigError(path, f"{key}.kind", f"{_show(kind)} is not supported; allowed: {_fmt(HOST_KINDS)}")
        for k in spec:
            if k not in HOST_KEYS[kind]:
                raise ConfigError(path, _child(key, k), f"unknown key for a {kind} host; allowed keys: "
                                                        f"{', '.join(HOST_KEYS[kind])}")
        slots = spec.get("slots", 1 if kind == "emulated" else os.cpu_count() or 1)
        if "slots" in spec:
            slots = _whole(path, f"{key}.slots", slots, MAX_SLOTS, "guests at once on one host")
        builds = [QemuBuildSpec("system", "qemu-system-ppc64"), BACKPORTS]
        qemu = _mapping(path, f"{key}.qemu", spec.get("qemu"), "a mapping of build name to {binary, firmware_dir} "
                                                               "or {debian_suite}")
        for bname, b in qemu.items():
            bkey = _child(f"{key}.qemu", bname)
            _name(path, bkey, bname, "a build name")
            builds = [x for x in builds if x.name != bname]
            builds.append(_build_spec(path, bkey, bname, b))
        ssh = _ssh_spec(path, key, spec, Path(path).parent) if kind == "ssh" else None
        if ssh is not None:
            for b in builds:
                if b.debian_suite and b.name in qemu:
                    raise ConfigError(path, f"{key}.qemu.{b.name}", "a build fetched from a Debian suite runs only "
                                                                     "on the local host; name its `binary` on this host")
            builds = [b for b in builds if not b.debian_suite]
        mopts = None
        if "machine_options" in spec:
            mopts = spec["machine_options"]
            if not isinstance(mopts, list) or not all(isinstance(o, str) and re.fullmatch(r"[a-z0-9-]+=[\w.-]+", o)
                                                      for o in mopts):
                raise ConfigError(path, f"{key}.machine_options", "must be a list of -machine key=value options, "
                                                                  "e.g. [cap-cfpc=broken, cap-ccf-assist=off]")
            mopts = tuple(mopts)
        if kind == "emulated":
            ek = spec.get("emulated_kind")
            if ek not in EMULATED_KINDS:
                raise ConfigError(path, f"{key}.emulated_kind", f"{_show(ek)}: an emulated host is one of "
                                                                 f"{_fmt(EMULATED_KINDS)}")
            port = spec.get("port")
            if port is not None and (not isinstance(port, int) or isinstance(port, bool) or not 1024 <= port < 65536):
                raise ConfigError(path, f"{key}.port", f"{_show(port)} is not a free loopback port (1024-65535)")
            # Its QEMU is the one in its image: the `system` build, inside it.
            out[name] = HostSpec(name, kind, slots, (QemuBuildSpec("system", "qemu-system-ppc64"),), "127.0.0.1",
                                 None, mopts, ek, port, kvm_required=True)
            continue
        kvm = spec.get("kvm", False)
        if not isinstance(kvm, bool):
            raise ConfigError(path, f"{key}.kvm", f"{_show(kvm)} is not true or false (true: this host must offer KVM)")
        maddr = spec.get("migration_address", ssh.address if ssh else "127.0.0.1")
        if not isinstance(maddr, str) or not maddr:
            raise ConfigError(path, f"{key}.migration_address", f"{_show(maddr)} is not an address (a host name or IP)")
        _text(path, f"{key}.migration_address", maddr, "an address (a host name or IP)", max_len=MAX_NAME * 4)
        out[name] = HostSpec(name, kind, slots, tuple(builds), maddr, ssh, mopts, kvm_required=kvm)
    out.setdefault("local", HostSpec("local", "local", os.cpu_count() or 1,
                                     (QemuBuildSpec("system", "qemu-system-ppc64"), BACKPORTS)))
    return out


def _file(path: str, key: str, base: Path, v: str) -> str:
    """A file named relative to the inventory (or with ~), which must exist."""
    try:
        f = (base / os.path.expanduser(v)).resolve()
        found = f.is_file()
    except OSError as e:  # a name too long, a loop of links
        raise ConfigError(path, key, f"cannot use {_show(v)}: {e.strerror or e}") from None
    if not found:
        raise ConfigError(path, key, f"no such file: {f}")
    return str(f)


def _ssh_spec(path: str, key: str, spec: dict, base: Path) -> SshSpec:
    for k in ("address", "user", "key_file", "known_hosts"):
        if not isinstance(spec.get(k), str) or not spec.get(k):
            raise ConfigError(path, f"{key}.{k}", f"required for an ssh host (a non-empty string), {_got(spec.get(k))}")
        _text(path, f"{key}.{k}", spec[k], "a non-empty string")
    port = spec.get("port", 22)
    if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
        raise ConfigError(path, f"{key}.port", f"{_show(port)} is not a TCP port (1 to 65535)")
    files = {k: _file(path, f"{key}.{k}", base, spec[k]) for k in ("key_file", "known_hosts")}
    proxy = spec.get("proxy_command", [])
    if not isinstance(proxy, list):
        raise ConfigError(path, f"{key}.proxy_command", f"must be a list of strings (an argv, run without a shell), "
                                                        f"{_got(proxy)}")
    for i, x in enumerate(proxy):
        _text(path, f"{key}.proxy_command[{i}]", x, "a non-empty string (one argument; the list is run without a shell)")
    kit_dir = _text(path, f"{key}.kit_dir", spec.get("kit_dir", "/var/tmp/caskit"), "an absolute path")
    if not kit_dir.startswith("/"):
        raise ConfigError(path, f"{key}.kit_dir", f"{_show(kit_dir)} is not an absolute path")
    return SshSpec(spec["address"], port, spec["user"], files["key_file"], files["known_hosts"], tuple(proxy), kit_dir)


@dataclass(frozen=True)
class Inventory:
    """hosts.yaml, parsed once: its hosts, migration domains and pools."""

    path: str
    hosts: dict[str, HostSpec]
    domains: dict[str, "DomainSpec"]
    pools: dict[str, "PoolSpec"]


def load_inventory(path: str | os.PathLike | None = None) -> Inventory:
    """The host inventory (default configs/hosts.yaml; without one, just the local host), every
    part of the file checked whichever part the caller needs."""
    p = Path(path) if path else DEFAULT_HOSTS
    if not _exists(p):
        if path is None:
            return Inventory(str(p), parse_hosts({}, str(p)), {}, {})
        raise ConfigError(str(p), None, "no such host inventory file")
    data = load_yaml(p)
    hosts = parse_hosts(data, str(p))
    return Inventory(str(p), hosts, parse_domains(data, str(p), hosts), parse_pools(data, str(p), hosts))


def load_hosts(path: str | os.PathLike | None = None) -> dict[str, HostSpec]:
    return load_inventory(path).hosts


@dataclass(frozen=True)
class DomainSpec:
    name: str
    hosts: tuple[str, ...]
    qemu: tuple[str, ...] = ()  # builds taking part; empty: every build of every member host


def _group_members(path: str, key: str, d: Any, hosts: dict[str, HostSpec], optional: str, what: str = "") -> list[str]:
    """The member hosts of a group of the inventory's hosts (a domain, a pool): a mapping with
    `hosts` and one optional key, every member a host the inventory names."""
    if not isinstance(d, dict):
        raise ConfigError(path, key, f"must be a mapping with `hosts` (and optionally `{optional}`"
                                     f"{' ' + what if what else ''}), {_got(d)}")
    for k in d:
        if k not in ("hosts", optional):
            raise ConfigError(path, _child(key, k), f"unknown key; allowed keys: hosts, {optional}")
    if "hosts" not in d:
        raise ConfigError(path, f"{key}.hosts", "required: the member hosts (names from `hosts:`)")
    members = []
    for i, h in enumerate(_list(path, f"{key}.hosts", d["hosts"], "host names")):
        where = _item(f"{key}.hosts", d["hosts"], i)
        if not isinstance(h, str):
            raise ConfigError(path, where, f"must be a host name (a string), {_got(h)}")
        if h not in hosts:
            raise ConfigError(path, where, f"unknown host {_show(h)}; hosts: {_fmt(sorted(hosts))}")
        members.append(h)
    return members


def parse_domains(data: Any, path: str, hosts: dict[str, HostSpec]) -> dict[str, DomainSpec]:
    doms = _mapping(path, "domains", _inventory(data, path).get("domains"), "a mapping of domain name to {hosts, qemu}")
    out = {}
    for name, d in doms.items():
        key = _child("domains", name)
        _name(path, key, name, "a domain name")
        members = _group_members(path, key, d, hosts, "qemu", "builds")
        raw_builds = d.get("qemu")
        builds = []
        for i, b in enumerate(_list(path, f"{key}.qemu", raw_builds, "build names") if raw_builds not in (None, []) else []):
            if not isinstance(b, str):
                raise ConfigError(path, _item(f"{key}.qemu", raw_builds, i), f"must be a build name (a string), {_got(b)}")
            if not any(b == x.name for h in members for x in hosts[h].qemu):
                raise ConfigError(path, f"{key}.qemu", f"no member host has a QEMU build {_show(b)}")
            builds.append(b)
        out[name] = DomainSpec(name, tuple(members), tuple(builds))
    return out


POOL_PREFIX = "pool:"


@dataclass(frozen=True)
class PoolSpec:
    """Interchangeable hosts: a cell of the pool runs once, on whichever member can offer it and
    has a free slot first, after that member passed its health check (one known-good cell)."""

    name: str
    hosts: tuple[str, ...]
    health_check: tuple[tuple[str, str | int], ...] = ()  # axes of the known-good cell


# The known-good cell a pool member must pass before it takes cells, unless the pool says
# otherwise: a dual machine whose guest negotiates XIVE, the fastest boot (VOF, one vCPU).
HEALTH_CHECK_DEFAULT = {"ic_mode": "dual", "smp": 1, "firmware": "vof"}


def parse_pools(data: Any, path: str, hosts: dict[str, HostSpec]) -> dict[str, PoolSpec]:
    pools = _mapping(path, "pools", _inventory(data, path).get("pools"), "a mapping of pool name to {hosts, health_check}")
    out = {}
    for name, d in pools.items():
        key = _child("pools", name)
        _name(path, key, name, "a pool name")
        members = _group_members(path, key, d, hosts, "health_check")
        if len(set(members)) != len(members):
            raise ConfigError(path, f"{key}.hosts", "a host is named twice")
        hc = dict(HEALTH_CHECK_DEFAULT)
        raw_hc = _mapping(path, f"{key}.health_check", d.get("health_check"), "a mapping of axis name to one value")
        for k, v in raw_hc.items():
            if k not in AXIS_BY_NAME:
                raise ConfigError(path, f"{key}.health_check.{k}", f"unknown axis; allowed axes: {_fmt(AXIS_NAMES)}")
            hc[k] = _axis_value(path, f"{key}.health_check.{k}", k, v)
        full = {a.name: hc.get(a.name, a.default) for a in AXES}
        out[str(name)] = PoolSpec(str(name), tuple(members), tuple(full.items()))
    return out


def load_pools(path: str | os.PathLike | None = None) -> dict[str, PoolSpec]:
    return load_inventory(path).pools


def load_domains(path: str | os.PathLike | None = None) -> dict[str, DomainSpec]:
    return load_inventory(path).domains
