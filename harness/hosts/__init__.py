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
    raise CaskitError(f"host {spec.name}: kind {spec.kind} is not supported")


__all__ = ["make_host", "Host", "LocalHost", "LocalProcess", "Process", "kill_tagged", "lock_dir", "tagged_pids"]
