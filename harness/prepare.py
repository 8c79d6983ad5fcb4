"""What one run needs before any cell starts: configs loaded, hosts probed, the kit built,
the run recorded. Done once by the controller; workers only read it back from run.json.
"""

from __future__ import annotations

import getpass
import secrets
import socket
import subprocess
import time
from dataclasses import dataclass, field, replace
from importlib import metadata
from pathlib import Path

from . import __version__, kit as kitmod, matrix as matrixmod, patch as patchmod, pools as poolmod, probe
from .axes import COMPAT_LEVEL, CPU_LEVEL
from .cellrun import CellContext, run_cell
from .connect import make_host
from .emulated import host as emulated, image as l1image, qemu_build
from .migration import domains as md, known_issues
from .resources import CHECKOUT
from .config import load_inventory, load_matrix
from .migration.plans import PLANS
from .specs import POOL_PREFIX, TIMEOUT_KEYS, DomainSpec, HostSpec, Matrix
from .cell import Cell, HostFacts
from .errors import CaskitError, ConfigError, KitError, NoPeer
from .results import RunStore
from . import shard as shardmod

DEFAULT_MATRIX = "quick"


@dataclass(frozen=True)
class RunPlan:
    matrices: list[Matrix]
    hosts: dict[str, HostSpec]
    cells: list[Cell]
    domains: dict[str, DomainSpec]
    pools: dict = field(default_factory=dict)  # name -> PoolSpec
    shard: shardmod.Shard | None = None  # this run runs one shard of `all_cells` (caskit run --shard)
    all_cells: list[Cell] = field(default_factory=list)  # the whole plan, every shard's cells


def useful_workers(plan: RunPlan, requested: int) -> int:
    """How many of the `requested` workers can ever run a cell at once (pure): no more than the
    slots of the hosts the cells use (a pool's members all count) and no more than the cells.
    A worker beyond those only waits for a lease, and each costs the controller an interpreter's
    start-up and imports (issue 23: about 0.45 s of CPU here) and idle polling."""
    used: set[str] = set()
    for c in plan.cells:
        if c.host.startswith(POOL_PREFIX) and (pool := plan.pools.get(c.host[len(POOL_PREFIX):])) is not None:
            used.update(pool.hosts)
        else:
            used.add(c.host)
    slots = sum(plan.hosts[h].slots for h in used if h in plan.hosts)
    return max(1, min(requested, slots, len(plan.cells)))


def new_run_id() -> str:
    return time.strftime("%Y%m%d-%H%M%S", time.gmtime()) + "-" + secrets.token_hex(2)


def load_plan(matrix_args: list[str], hosts_file: str | None, known_issues_file: str | None = None,
              patch=None, shard: shardmod.Shard | None = None) -> RunPlan:
    """Load and validate everything; raises ConfigError before anything boots. `patch` (a
    patch.Patch) puts a QEMU binary under test in place of the builds the cells use."""
    inventory = load_inventory(hosts_file)  # parsed once: hosts, domains and pools
    hosts, domains, pools = inventory.hosts, inventory.domains, inventory.pools
    known = set(hosts) | {f"{POOL_PREFIX}{p}" for p in pools}
    matrices = [load_matrix(m, known, set(domains)) for m in (matrix_args or [DEFAULT_MATRIX])]
    names: dict[str, str] = {}
    for m in matrices:
        # Cells, timeouts and migration bandwidth are looked up by the matrix's name.
        if names.setdefault(m.name, m.path) != m.path:
            raise ConfigError(m.path, "name", f"{m.name!r} is also the name of {names[m.name]}: "
                                              "matrices of one run need names of their own")
    kits = {tuple(sorted(m.kit.items())) if m.kit else None for m in matrices}
    if len(kits) > 1:
        raise ConfigError(matrices[-1].path, "kit", "matrices of one run must use the same guest kit")
    if known_issues_file and not Path(known_issues_file).is_file():
        raise ConfigError(known_issues_file, None, "no such known-issues file")
    known_issues.load(Path(known_issues_file) if known_issues_file else None)  # broken: a config error now
    cells = matrixmod.expand_all(matrices)
    if patch is not None and patch.qemu:
        patchmod._file("--qemu", patch.qemu)
        used: dict[str, set[str]] = {}
        for c in cells:
            for h in (pools[c.host[len(POOL_PREFIX):]].hosts if c.host.startswith(POOL_PREFIX) else (c.host,)):
                used.setdefault(h, set()).add(str(c.axis("qemu")))
        hosts = patchmod.with_qemu(hosts, used, str(Path(patch.qemu).resolve()))
    mine = shardmod.select(cells, shard, {n for n, h in hosts.items() if h.kind == "emulated"})
    return RunPlan(matrices, hosts, mine, domains, pools, shard, cells)


def matrices_record(matrices: list[Matrix]) -> list[dict]:
    """run.json's matrices, each with its own timeouts and bandwidth for its cells (a cell two
    matrices list is the first one's): a run of a quick matrix and a slow one keeps both."""
    return [{"name": m.name, "path": m.path, "timeouts": m.timeouts,
             "migration_max_bandwidth": m.migration_max_bandwidth} for m in matrices]


def git_sha() -> str | None:
    """The checkout's commit; None for an installed caskit or when git cannot tell."""
    if CHECKOUT is None:
        return None
    try:
        p = subprocess.run(["git", "-C", str(CHECKOUT), "rev-parse", "--show-toplevel", "HEAD"],
                           capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    lines = p.stdout.split()
    # A tree exported without .git into some other repository would report that one's commit.
    if p.returncode != 0 or len(lines) != 2 or Path(lines[0]).resolve() != CHECKOUT.resolve():
        return None
    return lines[1]


def caskit_version() -> str:
    """The installed distribution's version; the package's own when it runs uninstalled."""
    try:
        return metadata.version("caskit")
    except metadata.PackageNotFoundError:
        return __version__


def ensure_emulated_up(spec: HostSpec, log=print) -> bool:
    """Boot an emulated host the run needs and finds down; True if this call booted it (the run
    then stops it at its end). A host that cannot boot is the host's failure: HostError."""

    if emulated.is_up(spec.name):
        st = next(s for s in emulated.list_states() if s.name == spec.name)
        kind = emulated.KINDS[str(spec.emulated_kind)]
        if (current := l1image.current_key(log=log, **kind.image_recipe)) != st.image:
            # Not rebooted under whoever started it; said, and recorded by `caskit hosts list`.
            log(f"caskit: warning: emulated host {spec.name} runs image {st.image}, built from packages that have "
                f"since changed (today's image is {current}): `caskit hosts down {spec.name}` to boot the new one")
        if kind.l0_build and (l0 := qemu_build.current_key(kind.l0_build, log=log)) != st.l0_key:
            # Its facts say which L0 it runs (l0_qemu, l0_patches): a stock one keeps the stock known issues.
            log(f"caskit: warning: emulated host {spec.name} runs L0 {st.l0_key or 'not built by caskit'}, not today's "
                f"{kind.l0_build} build {l0}: `caskit hosts down {spec.name}` to boot it on the new one")
        return False
    log(f"caskit: emulated host {spec.name} ({spec.emulated_kind}) is down: booting it for this run")
    emulated.EmulatedHost(spec.name, str(spec.emulated_kind), slots=spec.slots).up(port=spec.port, log=log)
    return True


def missing_kvm(spec: HostSpec, facts: HostFacts) -> HostFacts:
    """Facts of a host that must offer KVM and does not, turned into the host's failure: its cells
    are then ERROR (exit 3), never SKIP as a host that never claimed KVM would make them."""
    if spec.kvm_required and facts.kvm_mode == "tcg-only" and not facts.error:
        why = "an emulated KVM host" if spec.kind == "emulated" else "the inventory says `kvm: true`"
        return replace(facts, error=f"host {spec.name} must offer KVM ({why}), but its probe found none"
                                    + (f": {facts.kvm_note}" if facts.kvm_note else ""))
    if spec.kind == "emulated" and not facts.error and facts.kvm_mode != "tcg-only":
        want = emulated.KINDS[str(spec.emulated_kind)].kvm_mode
        if facts.kvm_mode != want:
            # An emulated host stands for one KVM mode in the report; facts of another (a v2 L0
            # whose kernel fell back to nested API v1, say) would publish cells under a wrong column.
            evidence = f" ({facts.nested_api_evidence})" if facts.nested_api_evidence else ""
            return replace(facts, error=f"host {spec.name} is an emulated {spec.emulated_kind} host (KVM mode {want}), "
                                        f"but its probe found KVM mode {facts.kvm_mode}{evidence}")
    return facts


def probe_hosts(p: RunPlan, log_dir: Path, log=print, run_id: str | None = None, *, boot: bool = True,
                booted: list[str] | None = None) -> dict[str, HostFacts]:
    """HostFacts of every host the plan uses: the cells' hosts and their domains' members, each
    with the builds the cells (or the domain) name, and the cap defaults of the CPU models that
    domain-pinned cells run. Probe machines carry the run's tag (`caskit cleanup RUN` finds them).
    Emulated hosts that are down are booted when `boot` (their names go to `booted`); without it
    (`caskit matrix` boots nothing) their facts from their last probe stand in, where there are."""
    used_hosts = {c.host for c in p.cells if not poolmod.is_pool(c.host)} | poolmod.members_used(p.cells, p.pools)
    domain_matrices = {m.name for m in p.matrices if m.domain}
    cpus = frozenset(str(c.axis("cpu")) for c in p.cells if c.matrix in domain_matrices)
    tag = f"caskit:{run_id}:probe" if run_id else "caskit-probe"
    for m in p.matrices:
        if m.domain:
            used_hosts |= set(p.domains[m.domain].hosts)
    facts: dict[str, HostFacts] = {}
    for h in sorted(used_hosts):
        spec = p.hosts[h]
        builds = {str(c.axis("qemu")) for c in p.cells
                  if c.host == h or (poolmod.is_pool(c.host) and h in p.pools[poolmod.pool_name(c.host)].hosts)}
        builds |= {str(dict(pl.health_check)["qemu"]) for pl in p.pools.values() if h in pl.hosts}
        for m in p.matrices:
            if m.domain and h in p.domains[m.domain].hosts:
                builds |= set(p.domains[m.domain].qemu) or {b.name for b in spec.qemu if not b.debian_suite}
        try:
            if spec.kind == "emulated":
                if not boot and not emulated.is_up(h):
                    facts[h] = emulated.last_facts(h) or HostFacts.unreachable(
                        h, f"emulated host {h} is down and was never probed (`caskit hosts up {h}`)")
                    continue
                if boot and ensure_emulated_up(spec, log) and booted is not None:
                    booted.append(h)
            log(f"caskit: probing host {h}")
            facts[h] = missing_kvm(spec, probe.probe(spec, log_dir, builds, log, cpus=cpus, tag=tag))
            if spec.kind == "emulated":
                emulated.save_facts(h, facts[h])
        except CaskitError as e:
            # One host down must not stop a farm's run: its cells are ERROR, the others run.
            log(f"caskit: host {h} is unreachable, its cells will be ERROR: {e}")
            facts[h] = HostFacts.unreachable(h, str(e))
    return facts


def prepare_run(p: RunPlan, out: Path, run_id: str, log=print, known_issues_file: str | None = None,
                patch=None) -> dict:
    """Probe the hosts, build the kit, write run.json. Returns the run record."""
    store = RunStore(out)
    out.mkdir(parents=True, exist_ok=True)
    m0 = p.matrices[0]
    # The kit first: a kernel under test that lacks a workload's module is refused before any
    # host is probed or booted.
    kit = kit_record(m0, log, patch, {w for m in p.matrices for w in m.workloads})
    booted: list[str] = []
    facts = probe_hosts(p, out / "hosts", log, run_id, booted=booted)
    cells, pins = pin_cells(p, facts)
    pool_report = pool_health(p, facts, kit, out, run_id, log)
    run = {
        "id": run_id,
        "start": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "caskit_version": caskit_version(),
        "git_sha": git_sha(),
        "controller": socket.gethostname(),
        "user": getpass.getuser(),
        "matrices": matrices_record(p.matrices),
        "known_issues_file": str(Path(known_issues_file).resolve()) if known_issues_file else None,
        "hosts": {h: f.to_dict() for h, f in facts.items()},
        "kit": kit,
        # The planned results: the pools' health checks (each a result of the run), then the cells.
        "cell_order": pool_report.pop("_records", []) + [c.id for c in cells],
        "cells": [c.to_dict() for c in cells],
        "domains": pins,
        "booted_hosts": booted,  # emulated hosts this run booted, stopped at its end
        "pools": pool_report,
        "patch": _patch_record(patch, kit, facts),
        # A shard records the whole plan, so that a merge knows the cells of a shard that never ran.
        "shard": {"index": p.shard.index, "of": p.shard.of, "plan": [c.id for c in p.all_cells],
                  "plan_specs": [c.to_dict() for c in p.all_cells]} if p.shard else None,
    }
    store.write_run(run)
    return run


def pool_health(p: RunPlan, facts: dict[str, HostFacts], kit: dict, out: Path, run_id: str, log=print) -> dict:
    """Health checks of the pools the cells name, and the pools' own entries in `facts` (the
    first healthy member's, under the pool's name), before any cell runs."""

    used = {poolmod.pool_name(c.host) for c in p.cells if poolmod.is_pool(c.host)}
    if not used:
        return {}

    def run_health(cell: Cell) -> dict:
        host = make_host(p.hosts[cell.host])
        ctx = CellContext(cell, facts[cell.host], host, kit_from_run({"kit": kit}), RunStore(out / "health" / cell.host),
                          run_id, dict(TIMEOUT_KEYS), "health", kit_error=kit.get("error"))
        return run_cell(ctx)

    report, records = poolmod.check_health(p.pools, used, facts, run_health, out, log)
    store = RunStore(out)
    for rec in records:  # each check is a result of the run, judged with its cells
        store.write_cell(rec)
    for name in used:
        usable = [m for m, e in report[name]["members"].items() if not e.get("set_aside", not e["healthy"])]
        facts[f"{POOL_PREFIX}{name}"] = poolmod.pool_facts(p.pools[name], facts, usable)
    report["_records"] = [r["id"] for r in records]
    return report


def _patch_record(patch, kit: dict, facts: dict) -> dict | None:
    if patch is None or not patch.any:
        return None
    return patchmod.provenance(patch, kit, {h: f.to_dict() for h, f in facts.items()})


def kit_record(m0: Matrix, log=print, patch=None, workloads: set[str] | None = None) -> dict:
    """The run's guest kit, or why it could not be built. A kit that cannot be built is caskit's
    failure, not bad input: every cell is then ERROR with the reason (exit 3), never exit 2.
    With a kernel under test (`patch`), caskit's initramfs is built around it; a workload whose
    module that kernel lacks is bad input (ConfigError, before anything boots)."""
    try:
        if patch is not None and patch.kernel and patch.initrd:
            k = kitmod.user_kit(str(patchmod._file("--kernel", patch.kernel)), str(patchmod._file("--initrd", patch.initrd)))
        elif patch is not None and patch.kernel:
            k = kitmod.build(log=log, kernel=patchmod.kernel_under_test(patch.kernel, patch.modules))
            patchmod.check_modules(k, workloads or set())
        else:
            k = kitmod.user_kit(m0.kit["kernel"], m0.kit.get("initrd")) if m0.kit else kitmod.build(log=log)
    except (KitError, OSError) as e:
        log(f"caskit: the guest kit cannot be built, every cell will be ERROR: {e}")
        return {"key": None, "error": f"{type(e).__name__}: {e}"}
    return {"key": k.key, "kernel": str(k.kernel), "initrd": str(k.initrd) if k.initrd else None,
            "manifest": {x: k.manifest.get(x) for x in ("kernel_release", "kernel_package", "packages", "suite", "files",
                                                     "user_supplied",
                                                     "kernel_under_test", "modules", "modules_builtin")
                         if x in k.manifest}}


def kit_from_run(run: dict) -> kitmod.Kit | None:
    k = run["kit"]
    if k.get("error"):
        return None
    return kitmod.Kit(k["key"], Path(k["kernel"]), Path(k["initrd"]) if k["initrd"] else None, k.get("manifest", {}))


def domain_pin(spec: DomainSpec, facts: dict[str, HostFacts], cpu: str | None = None):

    members = [md.Member(facts[h], b) for h in spec.hosts for b in facts[h].qemu
               if not b.error and (not spec.qemu or b.name in spec.qemu)]
    if not members:
        raise CaskitError(f"domain {spec.name}: no member could be probed ("
                          + "; ".join(f"{h}: {facts[h].error or 'no usable QEMU build'}" for h in spec.hosts) + ")")
    pin = md.pin(members, cpu)
    down = [h for h in spec.hosts if facts[h].error]
    if down:  # pinned without them: a guest may not be able to go there when they come back
        pin = replace(pin, notes=pin.notes + (f"unreachable, left out: {', '.join(down)}",))
    return pin


def pin_cells(p: RunPlan, facts: dict[str, HostFacts]) -> tuple[list[Cell], dict]:
    """Cells of matrices that name a migration domain get the domain's pinned machine options."""


    by_matrix = {m.name: m for m in p.matrices}
    # One pin per domain and CPU model: the pin must fit the CPU the cells run.
    wanted = {(by_matrix[c.matrix].domain, str(c.axis("cpu"))) for c in p.cells
              if c.matrix in by_matrix and by_matrix[c.matrix].domain}
    pins = {key: domain_pin(p.domains[key[0]], facts, key[1]) for key in sorted(wanted)}
    out = []
    for c in p.cells:
        m = by_matrix.get(c.matrix)
        if m is None or not m.domain:
            out.append(c)
            continue
        pin = pins[(m.domain, str(c.axis("cpu")))]
        a = c.axes_dict
        # Never above the cell's own CPU model: QEMU refuses a compat level the CPU lacks.
        level = CPU_LEVEL.get(str(a["cpu"]))  # -cpu host: the domain's pin already fits its members
        compat = min(pin.cpu_compat, f"power{level}", key=lambda x: COMPAT_LEVEL[x]) if level else pin.cpu_compat
        a.update(ic_mode=pin.ic_mode, kernel_irqchip=pin.kernel_irqchip, cpu_compat=compat)
        caps = [f"{k}={v}" for k, v in sorted(pin.caps.items())]
        peer: tuple[str, ...] = ()
        if PLANS[c.migration].needs_domain:
            spec = p.domains[m.domain]
            usable = {h: [b.name for b in facts[h].qemu if not b.error and (not spec.qemu or b.name in spec.qemu)]
                      for h in spec.hosts}
            try:
                peer = md.choose_peer(c.migration, c.host, str(a["qemu"]), spec.hosts, usable)
            except NoPeer as e:
                if not any(facts[h].error for h in spec.hosts):
                    raise CaskitError(f"{m.path}: migration {c.migration!r} in domain {m.domain!r}: {e}") from e
                peer = ()  # the peer it needs is down: the cell's migration is ERROR, not the run
        out.append(replace(c, axes=tuple(a.items()), pinned=(pin.machine, *caps), peer=peer))
    return out, {f"{dom}/{cpu}": v.to_dict() for (dom, cpu), v in pins.items()}
