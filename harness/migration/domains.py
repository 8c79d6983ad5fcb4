"""Migration domains: the capability set common to a group of hosts (and QEMU builds), and the
machine options that pin it, so that a guest started anywhere in the domain can migrate to any
other member. Pure: it reads HostFacts, it probes nothing.

What must agree across a domain (cas-rules.md section 7): the machine version, ic-mode,
kernel-irqchip, max-cpu-compat and every spapr cap-* (QEMU refuses an incoming stream whose
capability level is higher than its own).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from ..cell import HostFacts, QemuBuild
from ..errors import NoPeer

# Levels of the tri-state caps, weakest first. Booleans order false < true; numbers by value.
CAP_LEVELS = {
    "cap-cfpc": ("broken", "workaround", "fixed"),
    "cap-sbbc": ("broken", "workaround", "fixed"),
    "cap-ibs": ("broken", "workaround", "fixed-ibs", "fixed-ccd", "fixed-na"),
}
COMPAT_ORDER = ("power8", "power9", "power10")


@dataclass(frozen=True)
class Member:
    host: HostFacts
    build: QemuBuild


@dataclass(frozen=True)
class Pin:
    machine: str
    ic_mode: str
    kernel_irqchip: str
    cpu_compat: str
    caps: dict = field(default_factory=dict)
    notes: tuple[str, ...] = ()

    def machine_options(self) -> list[str]:
        opts = [f"ic-mode={self.ic_mode}", f"kernel-irqchip={self.kernel_irqchip}", f"max-cpu-compat={self.cpu_compat}"]
        return opts + [f"{k}={v}" for k, v in sorted(self.caps.items())]

    def to_dict(self) -> dict:
        return {"machine": self.machine, "ic_mode": self.ic_mode, "kernel_irqchip": self.kernel_irqchip,
                "cpu_compat": self.cpu_compat, "caps": dict(self.caps), "notes": list(self.notes),
                "machine_option": ",".join([self.machine] + self.machine_options())}


def _machine_version(name: str | None) -> tuple[int, ...]:
    return tuple(int(x) for x in re.findall(r"\d+", name or "")) or (0,)


def _max_compat(m: Member) -> str:
    """The highest compat level a member can run: the emulated CPUs under TCG, the host CPU under KVM."""
    if m.host.kvm_mode == "tcg-only":
        levels = [c.lower() for c in m.build.cpu_models if c.lower() in COMPAT_ORDER]
        return max(levels, key=COMPAT_ORDER.index) if levels else "power8"
    found = re.search(r"POWER(\d+)", m.host.cpu, re.I)
    return f"power{found.group(1)}" if found and f"power{found.group(1)}" in COMPAT_ORDER else "power8"


def _weakest(cap: str, values: list[str]) -> str:
    if cap in CAP_LEVELS:
        order = CAP_LEVELS[cap]
        known = [v for v in values if v in order]
        return min(known, key=order.index) if known else values[0]
    if all(v in ("true", "false") for v in values):
        return "false" if "false" in values else "true"
    if all(v.isdigit() for v in values):
        return str(min(int(v) for v in values))
    return values[0]


def pin(members: list[Member], cpu: str | None = None) -> Pin:
    """The options every member can run and migrate between; `cpu`: the CPU model the cells run
    (the pin must fit it: under TCG a member emulates every CPU up to POWER10, but a POWER9
    cell can neither take max-cpu-compat=power10 nor POWER10-only caps such as cap-dawr1)."""
    if not members:
        raise ValueError("a migration domain needs at least one member")
    notes = []
    machine = min((m.build.machine or "pseries" for m in members), key=_machine_version)
    levels = [_max_compat(m) for m in members]
    if cpu and f"power{cpu.upper().removeprefix('POWER')}" in COMPAT_ORDER:
        levels.append(f"power{cpu.upper().removeprefix('POWER')}")
    compat = min(levels, key=COMPAT_ORDER.index)
    ic_mode = "dual" if COMPAT_ORDER.index(compat) >= COMPAT_ORDER.index("power9") else "xics"
    in_kernel = all(m.host.kvm_mode != "tcg-only" and m.host.kvm_xics and m.host.kvm_xive for m in members)
    kirq = "on" if in_kernel else "off"
    if not in_kernel:
        notes.append("kernel-irqchip=off: not every member has both in-kernel controllers (TCG or nested/PR KVM)")
    member_caps = [dict(m.build.caps_for(cpu)) for m in members]
    if cpu and any(cpu not in dict(m.build.caps_by_cpu) for m in members):
        notes.append(f"caps of some member not probed for {cpu}: its defaults used")
    caps: dict[str, str] = {}
    names = set.intersection(*(set(c) for c in member_caps))
    for cap in sorted(names):
        caps[cap] = _weakest(cap, [c[cap] for c in member_caps])
    missing = set.union(*(set(c) for c in member_caps)) - names
    if missing:
        notes.append(f"not pinned, unknown to some member's QEMU: {', '.join(sorted(missing))}")
    # QEMU spells boolean caps on/off on the command line.
    caps = {k: {"true": "on", "false": "off"}.get(v, v) for k, v in caps.items()}
    return Pin(machine, ic_mode, kirq, compat, caps, tuple(notes))


def choose_peer(plan: str, host: str, build: str, domain_hosts: tuple[str, ...],
                builds: dict[str, list[str]]) -> tuple[str, str]:
    """Where the middle hop of a cross plan runs, as (host, build).

    `builds` maps each domain host to the builds of the domain it could run (probed without
    error). cross-build: another build on the same host. cross-host: the next host of the domain
    after this one (so the members of a domain take turns), running the same build name, since a
    farm compares like with like; a different build is what cross-build is for.
    """
    if host not in domain_hosts:
        raise NoPeer(f"host {host} is not a member of the domain ({', '.join(domain_hosts)})")
    if plan == "cross-build":
        others = [b for b in builds.get(host, []) if b != build]
        if not others:
            raise NoPeer(f"host {host} has no QEMU build in the domain other than {build!r} "
                         f"(usable: {', '.join(builds.get(host, [])) or 'none'})")
        return host, others[0]
    if plan == "cross-host":
        i = domain_hosts.index(host)
        for other in domain_hosts[i + 1:] + domain_hosts[:i]:
            if other != host and build in builds.get(other, []):
                return other, build
        raise NoPeer(f"no other host of the domain can run QEMU build {build!r} "
                     f"(members: {', '.join(f'{h}: {sorted(builds.get(h, []))}' for h in domain_hosts)})")
    raise NoPeer(f"plan {plan!r} has no peer")
