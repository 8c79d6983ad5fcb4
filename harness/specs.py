"""The inventory's and the matrices' settings as typed values: what harness/config.py makes of
hosts.yaml and a matrix file once it has checked them, and what the rest of caskit reads. Pure
data, so that the transport (hosts/), the emulated hosts and the probes can name a host's settings
without depending on how a file is read."""

from __future__ import annotations

from dataclasses import dataclass, field

# A matrix's timeouts (seconds) where it names none.
TIMEOUT_KEYS = {"boot": 90.0, "command": 30.0, "shutdown": 10.0, "liveness": 10.0}


def matrix_settings(run: dict, matrix: str | None) -> tuple[dict[str, float], int | None]:
    """The timeouts and migration bandwidth of a cell's matrix, as run.json records them (each
    matrix its own); a run recorded before that kept the first matrix's at the top level."""
    for m in run.get("matrices") or []:
        if m.get("name") == matrix and "timeouts" in m:
            return {**TIMEOUT_KEYS, **m["timeouts"]}, m.get("migration_max_bandwidth")
    return {**TIMEOUT_KEYS, **(run.get("timeouts") or {})}, run.get("migration_max_bandwidth")


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
    # host -> axis -> values that replace `axes` for that host's cells (a host where one value of
    # an axis cannot run at all, e.g. VOF under PR KVM, gets the value that can)
    host_axes: dict[str, dict[str, tuple]] = field(default_factory=dict)

    def axes_for(self, host: str) -> dict[str, tuple]:
        return {**self.axes, **self.host_axes.get(host, {})}


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
    # A file on the controller where the host's own console is logged (an emulated host's L1): what
    # its kernel said when it stops answering over SSH goes into a hang's forensics.
    console_log: str | None = None
    # The QMP socket, on the controller, of the QEMU that emulates the host (an emulated host's
    # L0): how its vCPUs look while a guest inside hangs goes into that hang's forensics.
    monitor: str | None = None
    # That host's own kernel (an ELF vmlinux) on the controller: its symbols name where the
    # L0 found the host's vCPUs.
    host_kernel: str | None = None
    # A guest's console sent in batches by a python3 bridge on the host (harness/hosts/ssh.py's
    # BATCH_S) rather than forwarded write by write: fewer SSH packets for the controller. Off where
    # starting a process on the host costs more than that saves (an emulated host runs it under TCG).
    console_batch: bool = True


@dataclass(frozen=True)
class SshSpec:
    address: str
    port: int
    user: str
    key_file: str
    known_hosts: str
    proxy_command: tuple[str, ...] = ()  # argv (no shell) whose stdin/stdout reach the host's sshd
    kit_dir: str = "/var/tmp/caskit"


@dataclass(frozen=True)
class Inventory:
    """hosts.yaml, parsed once: its hosts, migration domains and pools."""

    path: str
    hosts: dict[str, HostSpec]
    domains: dict[str, "DomainSpec"]
    pools: dict[str, "PoolSpec"]


@dataclass(frozen=True)
class DomainSpec:
    name: str
    hosts: tuple[str, ...]
    qemu: tuple[str, ...] = ()  # builds taking part; empty: every build of every member host


POOL_PREFIX = "pool:"


@dataclass(frozen=True)
class PoolSpec:
    """Interchangeable hosts: a cell of the pool runs once, on whichever member can offer it and
    has a free slot first, after that member passed its health check (one known-good cell)."""

    name: str
    hosts: tuple[str, ...]
    health_check: tuple[tuple[str, str | int], ...] = ()  # axes of the known-good cell
