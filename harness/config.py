"""Loading and validating matrix files and the host inventory.

Every problem is a ConfigError naming the file and the key, raised before anything boots.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .axes import AXES, AXIS_BY_NAME, AXIS_NAMES, DEFAULT
from .errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = ROOT / "configs"
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
HOST_KINDS = ("local", "ssh")
HOST_KEYS = {
    "local": ("kind", "slots", "qemu", "migration_address"),
    "ssh": ("kind", "slots", "qemu", "migration_address", "address", "port", "user", "key_file", "known_hosts",
            "proxy_command", "kit_dir"),
}
MATRIX_KEYS = ("name", "hosts", "axes", "exclude", "workloads", "migration", "timeouts", "kit", "append", "migration_max_bandwidth", "domain", "description")
TIMEOUT_KEYS = {"boot": 90.0, "command": 30.0, "shutdown": 10.0, "liveness": 10.0}


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
        text = p.read_text()
    except OSError as e:
        raise ConfigError(str(p), None, f"cannot read: {e.strerror}") from None
    try:
        return yaml.load(text, Loader=_Loader)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        raise ConfigError(str(p), None, f"YAML syntax error: {where}{getattr(e, 'problem', None) or e}") from None


def _fmt(values) -> str:
    return ", ".join(str(v) for v in values)


def _axis_value(path: str, key: str, axis_name: str, v: Any) -> str | int:
    axis = AXIS_BY_NAME[axis_name]
    if isinstance(v, bool):  # only true/false reach here; on/off stayed strings
        v = "on" if v else "off"
    if axis.kind == "int":
        if v == DEFAULT:
            return axis.default
        if isinstance(v, int) and v >= 1:
            return v
        raise ConfigError(path, key, f"{v!r} is not a positive whole number")
    if axis.kind == "name":
        if isinstance(v, str) and v and all(c.isalnum() or c in "-_." for c in v):
            return v
        raise ConfigError(path, key, f"{v!r} is not a build name (letters, digits, - _ .)")
    if isinstance(v, (int, float)):
        v = str(v)
    # Accept the case a user is likely to type for CPU models (power9 for POWER9).
    match = next((a for a in axis.values if isinstance(v, str) and a.lower() == v.lower()), None)
    if match is None:
        raise ConfigError(path, key, f"{v!r} is not allowed; allowed values: {_fmt(axis.values)}")
    return match


def _as_list(path: str, key: str, v: Any) -> list:
    if isinstance(v, list):
        if not v:
            raise ConfigError(path, key, "empty list: give at least one value")
        return v
    return [v]


def parse_matrix(data: Any, path: str, known_hosts: set[str] | None = None,
                 known_domains: set[str] | None = None) -> Matrix:
    if not isinstance(data, dict):
        raise ConfigError(path, None, "a matrix file must be a mapping with keys: " + _fmt(MATRIX_KEYS))
    for k in data:
        if k not in MATRIX_KEYS:
            raise ConfigError(path, str(k), f"unknown key; allowed keys: {_fmt(MATRIX_KEYS)}")
    name = data.get("name") or Path(path).stem
    if not isinstance(name, str):
        raise ConfigError(path, "name", "must be a string")

    hosts = [str(h) for h in _as_list(path, "hosts", data.get("hosts", ["local"]))]
    if known_hosts is not None:
        for h in hosts:
            if h not in known_hosts:
                raise ConfigError(path, "hosts", f"unknown host {h!r}; hosts in the inventory: {_fmt(sorted(known_hosts))}")

    raw_axes = data.get("axes") or {}
    if not isinstance(raw_axes, dict):
        raise ConfigError(path, "axes", "must be a mapping of axis name to a list of values")
    axes: dict[str, tuple] = {}
    for k, v in raw_axes.items():
        if k not in AXIS_BY_NAME:
            raise ConfigError(path, f"axes.{k}", f"unknown axis; allowed axes: {_fmt(AXIS_NAMES)}")
        vals = [_axis_value(path, f"axes.{k}", k, x) for x in _as_list(path, f"axes.{k}", v)]
        axes[k] = tuple(dict.fromkeys(vals))  # keep order, drop repeats
    for a in AXES:
        axes.setdefault(a.name, (a.default,))

    exclude = data.get("exclude") or []
    if not isinstance(exclude, list):
        raise ConfigError(path, "exclude", "must be a list of partial axis mappings")
    excl: list[dict] = []
    for i, e in enumerate(exclude):
        key = f"exclude[{i}]"
        if not isinstance(e, dict) or not e:
            raise ConfigError(path, key, "must be a non-empty mapping of axis to value")
        d = {}
        for k, v in e.items():
            if k not in AXIS_BY_NAME:
                raise ConfigError(path, f"{key}.{k}", f"unknown axis; allowed axes: {_fmt(AXIS_NAMES)}")
            d[k] = _axis_value(path, f"{key}.{k}", k, v)
        excl.append(d)

    workloads = data.get("workloads") or []
    if not isinstance(workloads, list):
        raise ConfigError(path, "workloads", "must be a list")
    for w in workloads:
        if w not in WORKLOADS:
            raise ConfigError(path, "workloads", f"unknown workload {w!r}; available: {_fmt(WORKLOADS) or '(none yet)'}")

    migration = [str(m) for m in _as_list(path, "migration", data.get("migration", ["none"]))]
    for m in migration:
        if m not in MIGRATIONS:
            raise ConfigError(path, "migration", f"unknown plan {m!r}; available: {_fmt(MIGRATIONS)}")

    timeouts = dict(TIMEOUT_KEYS)
    for k, v in (data.get("timeouts") or {}).items():
        if k not in TIMEOUT_KEYS:
            raise ConfigError(path, f"timeouts.{k}", f"unknown timeout; allowed: {_fmt(TIMEOUT_KEYS)}")
        if not isinstance(v, (int, float)) or isinstance(v, bool) or v <= 0:
            raise ConfigError(path, f"timeouts.{k}", f"{v!r} is not a positive number of seconds")
        timeouts[k] = float(v)

    kit = data.get("kit")
    if kit is not None:
        if not isinstance(kit, dict) or set(kit) - {"kernel", "initrd"} or "kernel" not in kit:
            raise ConfigError(path, "kit", "must be a mapping with kernel (and optionally initrd) paths")
        base = Path(path).parent
        kit = {k: str((base / str(v)).resolve()) for k, v in kit.items()}
        for k, v in kit.items():
            if not Path(v).is_file():
                raise ConfigError(path, f"kit.{k}", f"no such file: {v}")

    append = data.get("append", "")
    if not isinstance(append, str) or "\n" in append:
        raise ConfigError(path, "append", "must be one line of guest kernel command line")

    bw = data.get("migration_max_bandwidth")
    if bw is not None and (not isinstance(bw, int) or isinstance(bw, bool) or bw <= 0):
        raise ConfigError(path, "migration_max_bandwidth", f"{bw!r} is not a positive number of bytes per second")

    domain = data.get("domain")
    if domain is not None:
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


def resolve_matrix_path(arg: str) -> Path:
    """A matrix given as a path, or by name from configs/matrices/."""
    p = Path(arg)
    if p.exists() or p.suffix in (".yaml", ".yml") or "/" in arg:
        return p
    return MATRICES / f"{arg}.yaml"


def load_matrix(path: str | os.PathLike, known_hosts: set[str] | None = None,
                known_domains: set[str] | None = None) -> Matrix:
    p = resolve_matrix_path(str(path))
    if not p.exists():
        avail = sorted(x.stem for x in MATRICES.glob("*.yaml"))
        raise ConfigError(str(p), None, f"no such matrix file; shipped matrices: {_fmt(avail)}")
    return parse_matrix(load_yaml(p), str(p), known_hosts, known_domains)


def parse_hosts(data: Any, path: str) -> dict[str, HostSpec]:
    if data is None:
        data = {}
    if not isinstance(data, dict) or set(data) - {"hosts", "domains"}:
        raise ConfigError(path, None, "a host inventory is a mapping with a `hosts:` key")
    hosts = data.get("hosts") or {}
    if not isinstance(hosts, dict):
        raise ConfigError(path, "hosts", "must be a mapping of host name to its settings")
    out: dict[str, HostSpec] = {}
    for name, spec in hosts.items():
        key = f"hosts.{name}"
        spec = spec or {}
        if not isinstance(spec, dict):
            raise ConfigError(path, key, "must be a mapping")
        kind = spec.get("kind", "local")
        if kind not in HOST_KINDS:
            raise ConfigError(path, f"{key}.kind", f"{kind!r} is not supported; allowed: {_fmt(HOST_KINDS)}")
        for k in spec:
            if k not in HOST_KEYS[kind]:
                raise ConfigError(path, f"{key}.{k}", f"unknown key for a {kind} host; allowed keys: "
                                                       f"{', '.join(HOST_KEYS[kind])}")
        slots = spec.get("slots", os.cpu_count() or 1)
        if not isinstance(slots, int) or isinstance(slots, bool) or slots < 1:
            raise ConfigError(path, f"{key}.slots", f"{slots!r} is not a positive whole number")
        builds = [QemuBuildSpec("system", "qemu-system-ppc64"), BACKPORTS]
        for bname, b in (spec.get("qemu") or {}).items():
            bkey = f"{key}.qemu.{bname}"
            ok = isinstance(b, dict) and (("binary" in b) != ("debian_suite" in b)) and not set(b) - {"binary", "firmware_dir", "debian_suite"}
            if not ok:
                raise ConfigError(path, bkey, "must be a mapping with `binary` (and optionally `firmware_dir`), "
                                              "or with `debian_suite` (e.g. bookworm-backports)")
            builds = [x for x in builds if x.name != bname]
            builds.append(QemuBuildSpec(str(bname), str(b.get("binary", "qemu-system-ppc64")), b.get("firmware_dir"),
                                        b.get("debian_suite")))
        ssh = _ssh_spec(path, key, spec, Path(path).parent) if kind == "ssh" else None
        if ssh is not None:
            for b in builds:
                if b.debian_suite and b.name in {str(x) for x in (spec.get("qemu") or {})}:
                    raise ConfigError(path, f"{key}.qemu.{b.name}", "a build fetched from a Debian suite runs only "
                                                                     "on the local host; name its `binary` on this host")
            builds = [b for b in builds if not b.debian_suite]
        maddr = spec.get("migration_address", ssh.address if ssh else "127.0.0.1")
        if not isinstance(maddr, str) or not maddr:
            raise ConfigError(path, f"{key}.migration_address", f"{maddr!r} is not an address")
        out[str(name)] = HostSpec(str(name), kind, slots, tuple(builds), maddr, ssh)
    out.setdefault("local", HostSpec("local", "local", os.cpu_count() or 1,
                                     (QemuBuildSpec("system", "qemu-system-ppc64"), BACKPORTS)))
    return out


def _ssh_spec(path: str, key: str, spec: dict, base: Path) -> SshSpec:
    for k in ("address", "user", "key_file", "known_hosts"):
        if not isinstance(spec.get(k), str) or not spec.get(k):
            raise ConfigError(path, f"{key}.{k}", "required for an ssh host (a non-empty string)")
    port = spec.get("port", 22)
    if not isinstance(port, int) or isinstance(port, bool) or not 0 < port < 65536:
        raise ConfigError(path, f"{key}.port", f"{port!r} is not a TCP port")
    files = {}
    for k in ("key_file", "known_hosts"):
        f = (base / os.path.expanduser(spec[k])).resolve()
        if not f.is_file():
            raise ConfigError(path, f"{key}.{k}", f"no such file: {f}")
        files[k] = str(f)
    proxy = spec.get("proxy_command", [])
    if not isinstance(proxy, list) or not all(isinstance(x, str) and x for x in proxy):
        raise ConfigError(path, f"{key}.proxy_command", "must be a list of strings (an argv, run without a shell)")
    kit_dir = spec.get("kit_dir", "/var/tmp/caskit")
    if not isinstance(kit_dir, str) or not kit_dir.startswith("/"):
        raise ConfigError(path, f"{key}.kit_dir", f"{kit_dir!r} is not an absolute path")
    return SshSpec(spec["address"], port, spec["user"], files["key_file"], files["known_hosts"], tuple(proxy), kit_dir)


def load_hosts(path: str | os.PathLike | None = None) -> dict[str, HostSpec]:
    p = Path(path) if path else DEFAULT_HOSTS
    if path is None and not p.exists():
        return parse_hosts({}, str(p))
    if not p.exists():
        raise ConfigError(str(p), None, "no such host inventory file")
    return parse_hosts(load_yaml(p), str(p))


@dataclass(frozen=True)
class DomainSpec:
    name: str
    hosts: tuple[str, ...]
    qemu: tuple[str, ...] = ()  # builds taking part; empty: every build of every member host


def parse_domains(data: Any, path: str, hosts: dict[str, HostSpec]) -> dict[str, DomainSpec]:
    doms = (data or {}).get("domains") or {}
    if not isinstance(doms, dict):
        raise ConfigError(path, "domains", "must be a mapping of domain name to {hosts, qemu}")
    out = {}
    for name, d in doms.items():
        key = f"domains.{name}"
        if not isinstance(d, dict) or "hosts" not in d or set(d) - {"hosts", "qemu"}:
            raise ConfigError(path, key, "must be a mapping with `hosts` (and optionally `qemu` builds)")
        members = [str(h) for h in _as_list(path, f"{key}.hosts", d["hosts"])]
        for h in members:
            if h not in hosts:
                raise ConfigError(path, f"{key}.hosts", f"unknown host {h!r}; hosts: {_fmt(sorted(hosts))}")
        builds = [str(b) for b in (d.get("qemu") or [])]
        for b in builds:
            if not any(b == x.name for h in members for x in hosts[h].qemu):
                raise ConfigError(path, f"{key}.qemu", f"no member host has a QEMU build {b!r}")
        out[str(name)] = DomainSpec(str(name), tuple(members), tuple(builds))
    return out


def load_domains(path: str | os.PathLike | None = None) -> dict[str, DomainSpec]:
    p = Path(path) if path else DEFAULT_HOSTS
    if not p.exists():
        return {}
    data = load_yaml(p)
    return parse_domains(data, str(p), parse_hosts(data, str(p)))
