"""The transport: hosts behind one small interface (`Host`): this machine, and machines reached
over SSH. Nothing here knows what runs on them; `connect.make_host` picks one for an inventory
entry, and emulated POWER KVM hosts (emulated/) are reached through the SSH one."""

from __future__ import annotations

from .local import Host, LocalHost, LocalProcess, Process, kill_tagged, lock_dir, tagged_pids

__all__ = ["Host", "LocalHost", "LocalProcess", "Process", "kill_tagged", "lock_dir", "tagged_pids"]
