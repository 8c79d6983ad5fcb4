"""The Host for an inventory entry, whatever its kind: this machine, an SSH host, or an emulated
POWER KVM host (which, once up, is an SSH host like any other). Above the transports (hosts/) and
the emulated hosts (emulated/), so that neither needs the other.
"""

from __future__ import annotations

from .specs import HostSpec
from .emulated.host import KINDS, EmulatedHost, L1State
from .errors import CaskitError
from .hosts import Host, LocalHost
from .hosts.ssh import ssh_host


def make_host(spec: HostSpec) -> Host:
    """The Host for an inventory entry (one SSH connection per host and process)."""
    if spec.kind == "local":
        return LocalHost(spec.name, spec.slots)
    if spec.kind == "ssh":
        return ssh_host(spec)
    if spec.kind == "emulated":
        return ssh_host(EmulatedHost(spec.name, str(spec.emulated_kind), slots=spec.slots).up_spec())
    raise CaskitError(f"host {spec.name}: kind {spec.kind} is not supported")


def guest_machine_options(spec: HostSpec, forced: tuple[tuple[str, str], ...] = ()) -> tuple[str, ...]:
    """The -machine options every guest on the host needs: the inventory's, else what the host's
    KVM forced (probed: QEMU's own refusals, never the host's name or kind)."""
    if spec.machine_options is not None:
        return tuple(spec.machine_options)
    return tuple(o for o, _ in forced)


def l0_facts(spec: HostSpec) -> dict:
    """An emulated host's L0 as it was booted (its state file): the build and caskit's patches
    in it; nothing for other hosts."""
    st = L1State.load(spec.name) if spec.kind == "emulated" else None
    if st is None:
        return {}
    return {"l0_qemu": st.l0_qemu, "l0_patches": tuple(st.l0_patches)}


def guest_append(spec: HostSpec) -> str:
    """The kernel command line every guest on the host gets: on an emulated host, what its
    emulation needs (the soft-lockup watchdog's threshold: TCG starves an L2's vCPUs for tens
    of seconds on a loaded machine, which is not a defect of the guest)."""
    if spec.kind == "emulated":
        return KINDS[str(spec.emulated_kind)].l2_append
    return ""
