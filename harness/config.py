"""Loading and validating matrix files and the host inventory.

Every problem is a ConfigError naming the file and the key, raised before anything boots.
"""

from __future__ import annotations

import itertools
import os
import re
from pathlib import Path
from typing import Any


from .axes import AXES, AXIS_BY_NAME, AXIS_NAMES, DEFAULT
from . import validate as checks
from . import workloads as workload_registry
from .emulated import host as emulated_host
from .migration import plans as migration_plans
from .specs import (BACKPORTS, POOL_PREFIX, TIMEOUT_KEYS, DomainSpec, HostSpec, Inventory, Matrix, PoolSpec,
                    QemuBuildSpec, SshSpec)
from .validate import MAX_PROSE, MAX_SMP
from .errors import ConfigError
from .resources import CONFIGS

MATRICES = CONFIGS / "matrices"
DEFAULT_HOSTS = CONFIGS / "hosts.yaml"

# The names a file may use come from their registries, listed once there: the workloads
# (workloads/), the migration plans (migration/plans.py), the kinds of emulated host
# (emulated/host.py). Host kinds are the keys of HOST_KEYS below.
WORKLOADS = workload_registry.REGISTRY
PLANS = migration_plans.PLANS
EMULATED_KINDS = tuple(emulated_host.KINDS)
HOST_KEYS = {
    "local": ("kind", "slots", "qemu", "migration_address", "machine_options", "kvm"),
    "ssh": ("kind", "slots", "qemu", "migration_address", "kvm", "address", "port", "user", "key_file", "known_hosts",
            "proxy_command", "kit_dir", "machine_options", "console_batch"),
    "emulated": ("kind", "emulated_kind", "slots", "port", "machine_options"),
}
HOST_KINDS = tuple(HOST_KEYS)
MATRIX_KEYS = ("name", "hosts", "axes", "host_axes", "exclude", "workloads", "migration", "timeouts", "kit", "append", "migration_max_bandwidth", "domain", "description")

# Upper bounds on what a file may give. Each is far above any real use and low enough that a typo
# fails here, naming its key, instead of hours later in QEMU, in a timer or in a loop.
MAX_SLOTS = 1024  # guests at once on one host (a slot lease tries each slot's lock file in turn)
MAX_BANDWIDTH = 10**12  # bytes/s (1 TB/s): faster than any link
MAX_CELLS = 100_000  # one matrix's cross product, before exclusions (cas-full has 576)
MAX_APPEND = 1024  # powerpc's kernel command line holds 2048 bytes; caskit's own parameters share it










def _axis_value(path: str, key: str, axis_name: str, v: Any) -> str | int:
    axis = AXIS_BY_NAME[axis_name]
    if isinstance(v, bool):  # only true/false reach here; on/off stayed strings
        v = "on" if v else "off"
    if axis.kind == "int":
        if v == DEFAULT:
            return axis.default
        return checks.whole(path, key, v, MAX_SMP, "QEMU's pseries machines take at most 4096 vCPUs")
    if axis.kind == "name":
        if isinstance(v, str) and checks.NAME.fullmatch(v) and len(v) <= checks.MAX_NAME:
            return v
        raise ConfigError(path, key, f"{checks.show(v)} is not a build name (letters, digits, - _ ., starting with a "
                                     f"letter or digit, at most {checks.MAX_NAME} characters)")
    if isinstance(v, (int, float)):
        v = str(v)
    # Accept the case a user is likely to type for CPU models (power9 for POWER9).
    match = next((a for a in axis.values if isinstance(v, str) and a.lower() == v.lower()), None)
    if match is None:
        raise ConfigError(path, key, f"{checks.show(v)} is not allowed; allowed values: {checks.fmt(axis.values)}")
    return match


def _hosts_of(path: str, raw: Any, known_hosts: set[str] | None) -> list[str]:
    """Host names, or `pool:NAME` for any member of a pool of interchangeable hosts."""
    hosts = []
    for i, h in enumerate(checks.list_of(path, "hosts", raw, "host names")):
        if not isinstance(h, str):
            raise ConfigError(path, checks.item("hosts", raw, i), f"must be a host name (a string), {checks.got(h)}")
        if known_hosts is not None and h not in known_hosts:
            raise ConfigError(path, "hosts", f"unknown host {checks.show(h)}; hosts in the inventory: {checks.fmt(sorted(known_hosts))}")
        if h.startswith(POOL_PREFIX):
            checks.name(path, checks.item("hosts", raw, i), h[len(POOL_PREFIX):], "a pool name")
            hosts.append(h)
        else:
            hosts.append(checks.name(path, checks.item("hosts", raw, i), h, "a host name"))
    return hosts


def _axes_of(path: str, raw: Any, where: str = "axes", defaults: bool = True) -> dict[str, tuple]:
    raw = checks.mapping(path, where, raw, "a mapping of axis name to a list of values")
    axes: dict[str, tuple] = {}
    for k, v in raw.items():
        if k not in AXIS_BY_NAME:
            raise ConfigError(path, checks.child(where, k), f"unknown axis; allowed axes: {checks.fmt(AXIS_NAMES)}")
        key = f"{where}.{k}"
        vals = []
        for i, x in enumerate(checks.list_of(path, key, v, "values")):
            checks.scalar(path, checks.item(key, v, i), x, f"one {k} value")
            vals.append(_axis_value(path, key, k, x))
        axes[k] = tuple(dict.fromkeys(vals))  # keep order, drop repeats
        if not axes[k]:
            raise ConfigError(path, key, "needs at least one value")
    if defaults:
        for a in AXES:
            axes.setdefault(a.name, (a.default,))
    return axes


def _host_axes_of(path: str, raw: Any, hosts: list[str]) -> dict[str, dict[str, tuple]]:
    """Per host, the axes whose values replace the matrix's for that host's cells."""
    out = {}
    for h, v in checks.mapping(path, "host_axes", raw, "a mapping of host name to axes").items():
        if h not in hosts:
            raise ConfigError(path, checks.child("host_axes", h), f"not one of the matrix's hosts ({checks.fmt(hosts)})")
        out[h] = _axes_of(path, v, checks.child("host_axes", h), defaults=False)
    return out


def _exclude_of(path: str, raw: Any) -> list[dict]:
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise ConfigError(path, "exclude", f"must be a list of partial axis mappings, {checks.got(raw)}")
    excl: list[dict] = []
    for i, e in enumerate(raw):
        key = f"exclude[{i}]"
        if not isinstance(e, dict) or not e:
            raise ConfigError(path, key, f"must be a non-empty mapping of axis to value, {checks.got(e)}")
        d = {}
        for k, v in e.items():
            if k not in AXIS_BY_NAME:
                raise ConfigError(path, checks.child(key, k), f"unknown axis; allowed axes: {checks.fmt(AXIS_NAMES)}")
            checks.scalar(path, f"{key}.{k}", v, "one value (an entry excludes one combination: write one entry per "
                                            "combination)")
            d[k] = _axis_value(path, f"{key}.{k}", k, v)
        excl.append(d)
    return excl


def _workloads_of(path: str, raw: Any) -> list[str]:
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise ConfigError(path, "workloads", f"must be a list, {checks.got(raw)}")
    for i, w in enumerate(raw):
        if not isinstance(w, str):
            raise ConfigError(path, f"workloads[{i}]", f"must be a workload name (a string), {checks.got(w)}; "
                                                       f"available: {checks.fmt(WORKLOADS)}")
        if w not in WORKLOADS:
            raise ConfigError(path, "workloads", f"unknown workload {checks.show(w)}; available: {checks.fmt(WORKLOADS) or '(none yet)'}")
    return raw


def _migration_of(path: str, raw: Any) -> list[str]:
    plans = checks.list_of(path, "migration", raw, "migration plans")
    for i, m in enumerate(plans):
        if not isinstance(m, str):
            raise ConfigError(path, checks.item("migration", raw, i), f"must be a plan name (a string), {checks.got(m)}; "
                                                                 f"available: {checks.fmt(PLANS)}")
        if m not in PLANS:
            raise ConfigError(path, "migration", f"unknown plan {checks.show(m)}; available: {checks.fmt(PLANS)}")
    return plans


def _timeouts_of(path: str, raw: Any) -> dict[str, float]:
    timeouts = dict(TIMEOUT_KEYS)
    for k, v in checks.mapping(path, "timeouts", raw, f"a mapping of timeout name ({checks.fmt(TIMEOUT_KEYS)}) to seconds").items():
        if k not in TIMEOUT_KEYS:
            raise ConfigError(path, checks.child("timeouts", k), f"unknown timeout; allowed: {checks.fmt(TIMEOUT_KEYS)}")
        timeouts[k] = checks.seconds(path, f"timeouts.{k}", v)
    return timeouts


def _kit_of(path: str, raw: Any) -> dict[str, str] | None:
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise ConfigError(path, "kit", f"must be a mapping with kernel (and optionally initrd) paths, {checks.got(raw)}")
    for k in raw:
        if k not in ("kernel", "initrd"):
            raise ConfigError(path, checks.child("kit", k), "unknown key; allowed keys: kernel, initrd")
    if "kernel" not in raw:
        raise ConfigError(path, "kit.kernel", "required: the guest kernel's path (initrd is optional)")
    base = Path(path).parent
    kit = {}
    for k, v in raw.items():
        f = base / checks.text(path, f"kit.{k}", v, "a file path")
        try:
            kit[k] = str(f.resolve())
            found = Path(kit[k]).is_file()
        except OSError as e:  # a name too long, a loop of links: is_file() raises those
            raise ConfigError(path, f"kit.{k}", f"cannot use {checks.show(str(f))}: {e.strerror or e}") from None
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
        raise ConfigError(path, None, "a matrix file must be a mapping with keys: " + checks.fmt(MATRIX_KEYS))
    for k in data:
        if k not in MATRIX_KEYS:
            raise ConfigError(path, checks.part(k), f"unknown key; allowed keys: {checks.fmt(MATRIX_KEYS)}")
    name = data.get("name")
    name = Path(path).stem if name is None or name == "" else checks.text(path, "name", name, "a string (the matrix's name)")
    if data.get("description") is not None:
        checks.text(path, "description", data["description"], "text", max_len=MAX_PROSE, lines=True, empty=True)

    hosts = _hosts_of(path, data.get("hosts", ["local"]), known_hosts)
    axes = _axes_of(path, data.get("axes"))
    host_axes = _host_axes_of(path, data.get("host_axes"), hosts)
    excl = _exclude_of(path, data.get("exclude"))
    workloads = _workloads_of(path, data.get("workloads"))
    migration = _migration_of(path, data.get("migration", ["none"]))
    if (n := sum(_cell_count([h], {**axes, **host_axes.get(h, {})}, migration) for h in hosts)) > MAX_CELLS:
        raise ConfigError(path, "axes", f"{n} combinations of hosts, axes and migration plans: at most {MAX_CELLS} "
                                        "in one matrix; split it")
    if all(_every_cell_excluded({**axes, **host_axes.get(h, {})}, excl) for h in hosts):
        raise ConfigError(path, "exclude", "excludes every combination of the axes: no cell is left to run")
    timeouts = _timeouts_of(path, data.get("timeouts"))
    kit = _kit_of(path, data.get("kit"))
    append = checks.text(path, "append", data.get("append", ""), "one line of guest kernel command line",
                   max_len=MAX_APPEND, empty=True)

    bw = data.get("migration_max_bandwidth")
    if bw is not None:
        bw = checks.whole(path, "migration_max_bandwidth", bw, MAX_BANDWIDTH, "bytes per second: 1 TB/s, above any link")

    domain = data.get("domain")
    if domain is not None:
        checks.name(path, "domain", domain, "a domain name")
        if known_domains is not None and domain not in known_domains:
            raise ConfigError(path, "domain", f"unknown domain {domain!r}; domains in the inventory: "
                                              f"{checks.fmt(sorted(known_domains)) or '(none)'}")
        for a in ("ic_mode", "kernel_irqchip", "cpu_compat"):
            if axes[a] != (DEFAULT,):
                raise ConfigError(path, f"axes.{a}", f"the domain {domain!r} pins it; leave it out")
            for h, ha in host_axes.items():
                if ha.get(a, (DEFAULT,)) != (DEFAULT,):
                    raise ConfigError(path, f"host_axes.{h}.{a}", f"the domain {domain!r} pins it; leave it out")
    for m in migration:
        if PLANS[m].needs_domain and domain is None:
            raise ConfigError(path, "migration", f"plan {m!r} migrates between members of a migration domain; "
                                                 "name one with `domain:` (see `domains:` in the host inventory)")
    if "cross-host" in migration:
        local_only = [w for w in workloads if WORKLOADS[w].host_local]
        if local_only:
            raise ConfigError(path, "workloads", f"{', '.join(local_only)} keep state in a file on the source "
                                                 "host; plan 'cross-host' would need shared storage between hosts")

    return Matrix(name, path, tuple(hosts), axes, tuple(excl), tuple(workloads), tuple(migration), timeouts, kit,
                  append.strip(), bw, domain, host_axes)


def _exists(p: Path) -> bool:
    """Path.exists(), but a name the OS refuses (too long, say) is a config error, not a crash."""
    try:
        return p.exists()
    except OSError as e:
        raise ConfigError(str(p)[:checks.MAX_TEXT], None, f"cannot read: {e.strerror or e}") from None


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
        raise ConfigError(str(p), None, f"no such matrix file; shipped matrices: {checks.fmt(avail)}")
    return parse_matrix(checks.load_yaml(p), str(p), known_hosts, known_domains)


def _inventory(data: Any, path: str) -> dict:
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(path, None, "a host inventory is a mapping with a `hosts:` key (and optionally `domains:`), "
                                      + checks.got(data))
    for k in data:
        if k not in ("hosts", "domains", "pools"):
            raise ConfigError(path, checks.part(k), "unknown key; a host inventory has `hosts:` (and optionally `domains:` "
                                              "and `pools:`)")
    return data


def _build_spec(path: str, key: str, name: str, b: Any) -> QemuBuildSpec:
    ok = isinstance(b, dict) and (("binary" in b) != ("debian_suite" in b)) and not set(b) - {"binary", "firmware_dir", "debian_suite"}
    if not ok:
        raise ConfigError(path, key, "must be a mapping with `binary` (and optionally `firmware_dir`), "
                                     "or with `debian_suite` (e.g. bookworm-backports)")
    binary = checks.text(path, f"{key}.binary", b["binary"], "a program (a path or a name on PATH)") if "binary" in b else None
    fw = b.get("firmware_dir")
    if fw is not None:
        fw = checks.text(path, f"{key}.firmware_dir", fw, "a directory path")
    suite = checks.name(path, f"{key}.debian_suite", b["debian_suite"], "a Debian suite") if "debian_suite" in b else None
    return QemuBuildSpec(name, binary or "qemu-system-ppc64", fw, suite)


def parse_hosts(data: Any, path: str) -> dict[str, HostSpec]:
    data = _inventory(data, path)
    hosts = checks.mapping(path, "hosts", data.get("hosts"), "a mapping of host name to its settings")
    out: dict[str, HostSpec] = {}
    for name, spec in hosts.items():
        key = checks.child("hosts", name)
        checks.name(path, key, name, "a host name")
        spec = checks.mapping(path, key, spec, "a mapping of the host's settings")
        kind = spec.get("kind", "local")
        if not isinstance(kind, str) or kind not in HOST_KINDS:
            raise ConfigError(path, f"{key}.kind", f"{checks.show(kind)} is not supported; allowed: {checks.fmt(HOST_KINDS)}")
        for k in spec:
            if k not in HOST_KEYS[kind]:
                raise ConfigError(path, checks.child(key, k), f"unknown key for a {kind} host; allowed keys: "
                                                        f"{', '.join(HOST_KEYS[kind])}")
        slots = spec.get("slots", 1 if kind == "emulated" else os.cpu_count() or 1)
        if "slots" in spec:
            slots = checks.whole(path, f"{key}.slots", slots, MAX_SLOTS, "guests at once on one host")
        builds = [QemuBuildSpec("system", "qemu-system-ppc64"), BACKPORTS]
        qemu = checks.mapping(path, f"{key}.qemu", spec.get("qemu"), "a mapping of build name to {binary, firmware_dir} "
                                                               "or {debian_suite}")
        for bname, b in qemu.items():
            bkey = checks.child(f"{key}.qemu", bname)
            checks.name(path, bkey, bname, "a build name")
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
                raise ConfigError(path, f"{key}.emulated_kind", f"{checks.show(ek)}: an emulated host is one of "
                                                                 f"{checks.fmt(EMULATED_KINDS)}")
            port = spec.get("port")
            if port is not None and (not isinstance(port, int) or isinstance(port, bool) or not 1024 <= port < 65536):
                raise ConfigError(path, f"{key}.port", f"{checks.show(port)} is not a free loopback port (1024-65535)")
            # Its QEMU is the one in its image: the `system` build, inside it.
            out[name] = HostSpec(name, kind, slots, (QemuBuildSpec("system", "qemu-system-ppc64"),), "127.0.0.1",
                                 None, mopts, ek, port, kvm_required=True)
            continue
        kvm = spec.get("kvm", False)
        if not isinstance(kvm, bool):
            raise ConfigError(path, f"{key}.kvm", f"{checks.show(kvm)} is not true or false (true: this host must offer KVM)")
        maddr = spec.get("migration_address", ssh.address if ssh else "127.0.0.1")
        if not isinstance(maddr, str) or not maddr:
            raise ConfigError(path, f"{key}.migration_address", f"{checks.show(maddr)} is not an address (a host name or IP)")
        checks.text(path, f"{key}.migration_address", maddr, "an address (a host name or IP)", max_len=checks.MAX_NAME * 4)
        batch = spec.get("console_batch", True)
        if not isinstance(batch, bool):
            raise ConfigError(path, f"{key}.console_batch", f"{checks.show(batch)} is not true or false (true: a "
                                                            "python3 bridge on the host batches guest consoles)")
        out[name] = HostSpec(name, kind, slots, tuple(builds), maddr, ssh, mopts, kvm_required=kvm, console_batch=batch)
    out.setdefault("local", HostSpec("local", "local", os.cpu_count() or 1,
                                     (QemuBuildSpec("system", "qemu-system-ppc64"), BACKPORTS)))
    return out


def _file(path: str, key: str, base: Path, v: str) -> str:
    """A file named relative to the inventory (or with ~), which must exist."""
    try:
        f = (base / os.path.expanduser(v)).resolve()
        found = f.is_file()
    except OSError as e:  # a name too long, a loop of links
        raise ConfigError(path, key, f"cannot use {checks.show(v)}: {e.strerror or e}") from None
    if not found:
        raise ConfigError(path, key, f"no such file: {f}")
    return str(f)


def _ssh_spec(path: str, key: str, spec: dict, base: Path) -> SshSpec:
    for k in ("address", "user", "key_file", "known_hosts"):
        if not isinstance(spec.get(k), str) or not spec.get(k):
            raise ConfigError(path, f"{key}.{k}", f"required for an ssh host (a non-empty string), {checks.got(spec.get(k))}")
        checks.text(path, f"{key}.{k}", spec[k], "a non-empty string")
    port = spec.get("port", 22)
    if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
        raise ConfigError(path, f"{key}.port", f"{checks.show(port)} is not a TCP port (1 to 65535)")
    files = {k: _file(path, f"{key}.{k}", base, spec[k]) for k in ("key_file", "known_hosts")}
    proxy = spec.get("proxy_command", [])
    if not isinstance(proxy, list):
        raise ConfigError(path, f"{key}.proxy_command", f"must be a list of strings (an argv, run without a shell), "
                                                        f"{checks.got(proxy)}")
    for i, x in enumerate(proxy):
        checks.text(path, f"{key}.proxy_command[{i}]", x, "a non-empty string (one argument; the list is run without a shell)")
    kit_dir = checks.text(path, f"{key}.kit_dir", spec.get("kit_dir", "/var/tmp/caskit"), "an absolute path")
    if not kit_dir.startswith("/"):
        raise ConfigError(path, f"{key}.kit_dir", f"{checks.show(kit_dir)} is not an absolute path")
    return SshSpec(spec["address"], port, spec["user"], files["key_file"], files["known_hosts"], tuple(proxy), kit_dir)




def load_inventory(path: str | os.PathLike | None = None) -> Inventory:
    """The host inventory (default configs/hosts.yaml; without one, just the local host), every
    part of the file checked whichever part the caller needs."""
    p = Path(path) if path else DEFAULT_HOSTS
    if not _exists(p):
        if path is None:
            return Inventory(str(p), parse_hosts({}, str(p)), {}, {})
        raise ConfigError(str(p), None, "no such host inventory file")
    data = checks.load_yaml(p)
    hosts = parse_hosts(data, str(p))
    return Inventory(str(p), hosts, parse_domains(data, str(p), hosts), parse_pools(data, str(p), hosts))


def load_hosts(path: str | os.PathLike | None = None) -> dict[str, HostSpec]:
    return load_inventory(path).hosts




def _group_members(path: str, key: str, d: Any, hosts: dict[str, HostSpec], optional: str, what: str = "") -> list[str]:
    """The member hosts of a group of the inventory's hosts (a domain, a pool): a mapping with
    `hosts` and one optional key, every member a host the inventory names."""
    if not isinstance(d, dict):
        raise ConfigError(path, key, f"must be a mapping with `hosts` (and optionally `{optional}`"
                                     f"{' ' + what if what else ''}), {checks.got(d)}")
    for k in d:
        if k not in ("hosts", optional):
            raise ConfigError(path, checks.child(key, k), f"unknown key; allowed keys: hosts, {optional}")
    if "hosts" not in d:
        raise ConfigError(path, f"{key}.hosts", "required: the member hosts (names from `hosts:`)")
    members = []
    for i, h in enumerate(checks.list_of(path, f"{key}.hosts", d["hosts"], "host names")):
        where = checks.item(f"{key}.hosts", d["hosts"], i)
        if not isinstance(h, str):
            raise ConfigError(path, where, f"must be a host name (a string), {checks.got(h)}")
        if h not in hosts:
            raise ConfigError(path, where, f"unknown host {checks.show(h)}; hosts: {checks.fmt(sorted(hosts))}")
        members.append(h)
    return members


def parse_domains(data: Any, path: str, hosts: dict[str, HostSpec]) -> dict[str, DomainSpec]:
    doms = checks.mapping(path, "domains", _inventory(data, path).get("domains"), "a mapping of domain name to {hosts, qemu}")
    out = {}
    for name, d in doms.items():
        key = checks.child("domains", name)
        checks.name(path, key, name, "a domain name")
        members = _group_members(path, key, d, hosts, "qemu", "builds")
        raw_builds = d.get("qemu")
        builds = []
        for i, b in enumerate(checks.list_of(path, f"{key}.qemu", raw_builds, "build names") if raw_builds not in (None, []) else []):
            if not isinstance(b, str):
                raise ConfigError(path, checks.item(f"{key}.qemu", raw_builds, i), f"must be a build name (a string), {checks.got(b)}")
            if not any(b == x.name for h in members for x in hosts[h].qemu):
                raise ConfigError(path, f"{key}.qemu", f"no member host has a QEMU build {checks.show(b)}")
            builds.append(b)
        out[name] = DomainSpec(name, tuple(members), tuple(builds))
    return out






# The known-good cell a pool member must pass before it takes cells, unless the pool says
# otherwise: a dual machine whose guest negotiates XIVE, the fastest boot (VOF, one vCPU).
HEALTH_CHECK_DEFAULT = {"ic_mode": "dual", "smp": 1, "firmware": "vof"}


def parse_pools(data: Any, path: str, hosts: dict[str, HostSpec]) -> dict[str, PoolSpec]:
    pools = checks.mapping(path, "pools", _inventory(data, path).get("pools"), "a mapping of pool name to {hosts, health_check}")
    out = {}
    for name, d in pools.items():
        key = checks.child("pools", name)
        checks.name(path, key, name, "a pool name")
        members = _group_members(path, key, d, hosts, "health_check")
        if len(set(members)) != len(members):
            raise ConfigError(path, f"{key}.hosts", "a host is named twice")
        hc = dict(HEALTH_CHECK_DEFAULT)
        raw_hc = checks.mapping(path, f"{key}.health_check", d.get("health_check"), "a mapping of axis name to one value")
        for k, v in raw_hc.items():
            if k not in AXIS_BY_NAME:
                raise ConfigError(path, f"{key}.health_check.{k}", f"unknown axis; allowed axes: {checks.fmt(AXIS_NAMES)}")
            hc[k] = _axis_value(path, f"{key}.health_check.{k}", k, v)
        full = {a.name: hc.get(a.name, a.default) for a in AXES}
        out[str(name)] = PoolSpec(str(name), tuple(members), tuple(full.items()))
    return out


def load_pools(path: str | os.PathLike | None = None) -> dict[str, PoolSpec]:
    return load_inventory(path).pools


def load_domains(path: str | os.PathLike | None = None) -> dict[str, DomainSpec]:
    return load_inventory(path).domains
