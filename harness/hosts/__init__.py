"""Hosts behind one small interface (`Host`): this machine, and machines reached over SSH."""

from __future__ import annotations

from .local import Host, LocalHost, LocalProcess, Process, kill_tagged, lock_dir, tagged_pids


def make_host(spec) -> Host:
    """The Host for an inventory entry (one SSH connection per host and process)."""
    from ..errors import CaskitError

    if spec.kind == "local":
        return LocalHost(spec.name, spec.slots)
    if spec.kind == "ssh":
        from .ssh import ssh_host
        return ssh_host(spec)
    if spec.kind == "emulated":
        # An emulated host, once up, is an SSH host like any other: nothing else is special.
        from .emulated import EmulatedHost
        from .ssh import ssh_host
        return ssh_host(EmulatedHost(spec.name, str(spec.emulated_kind), slots=spec.slots).up_spec())
    raise CaskitError(f"host {spec.name}: kind {spec.kind} is not supported")


def guest_machine_options(spec) -> tuple[str, ...]:
    """The -machine options every guest on the host needs: the inventory's, else its kind's."""
    if spec.machine_options is not None:
        return tuple(spec.machine_options)
    if spec.kind == "emulated":
        from .emulated import KINDS
        return KINDS[str(spec.emulated_kind)].l2_machine_options
    return ()


__all__ = ["make_host", "guest_machine_options", "Host", "LocalHost", "LocalProcess", "Process", "kill_tagged", "lock_dir", "tagged_pids"]
