"""One exception tree for everything caskit raises, and the one function that turns an exception
into a verdict class.

    CaskitError
    ├── SutFailure            the system under test misbehaved             -> FAIL
    │   ├── GuestPanic        the guest kernel panicked
    │   ├── GuestHang         the guest's kernel ran, QEMU is alive, the guest stopped answering
    │   ├── QemuCrashed       QEMU died of its own fault (SIGSEGV, SIGABRT, an odd exit code)
    │   ├── QemuHung          QEMU is alive but its monitor (QMP) stopped answering
    │   ├── QemuRefused       QEMU stopped on an error of its own (exit 1 and its error line):
    │   │                     an outcome the model may have predicted (then XFAIL)
    │   ├── GuestPoweredOff   QEMU exited 0 on its own: the guest shut the machine down
    │   ├── WorkloadFailed    an in-guest workload saw interrupts misbehave
    │   └── MigrationStuck    a migration that never ended
    ├── InfraError            we could not judge: ours or the host's       -> ERROR
    │   ├── ConfigError       bad input (matrix, inventory, CLI): exit 2 at the command line
    │   ├── KitError          the guest kit cannot be built, or is not what boots
    │   │   └── MissingTools  a build needs packages this machine lacks: exit 2 at the command line
    │   ├── HostError         the host is unreachable, SSH dropped, a host command failed
    │   ├── SlotsBusy         every slot of the host is taken for now (a pool tries another)
    │   ├── QemuKilled        QEMU killed from outside (SIGKILL, SIGTERM, the OOM killer)
    │   ├── NoGuestOutput     nothing came from the guest: firmware never printed
    │   ├── ObserveError      guest or host output we cannot read
    │   ├── QmpCommandError   QEMU answered one of our commands with an error
    │   ├── PinRefused        QEMU refused machine options caskit composed (a domain pin)
    │   ├── NoPeer            a cross plan has no member of its domain to go to
    │   └── Unresolved        GuestTimeout, QemuDied, QmpLost, LaunchFailure: what we saw,
    │                         before asking the machine why (machine.resolve() turns them into
    │                         one of the above); left unresolved they are ERROR
    └── WorkloadSkipped       not a failure: the cell cannot offer this step            -> SKIP

Causes are kept (`raise ... from e`), so a log shows what happened underneath.
"""

from __future__ import annotations

from enum import Enum


class Kind(str, Enum):
    """What an exception means for a verdict (the verdict names themselves live in cell.py)."""

    FAIL = "FAIL"
    ERROR = "ERROR"
    SKIP = "SKIP"


class CaskitError(Exception):
    """Root of caskit's own errors. `stage` says where it happened (qemu-start, cas, guest, ...)."""

    stage: str | None = None


# -- the system under test misbehaved (FAIL) --------------------------------------------------

class SutFailure(CaskitError):
    """The system under test (guest kernel, QEMU, KVM) misbehaved."""


class GuestPanic(SutFailure):
    """The guest kernel panicked. A panic that means the kit cannot boot (no init, no root) is
    turned into a KitError by the caller, who knows it is ours."""

    def __init__(self, during: str, tail: str):
        import re

        self.during, self.tail = during, tail
        m = re.search(r"Kernel panic - not syncing:[^\n]*", tail)
        self.message = m.group(0).strip() if m else "Kernel panic"
        super().__init__(f"{self.message} (during {during or 'boot'})")


class GuestHang(SutFailure):
    """The guest's kernel started and QEMU is alive, but the guest stopped making progress."""

    def __init__(self, message: str, tail: str = "", forensics: str | None = None,
                 host_findings: list[dict] | None = None):
        self.tail, self.forensics = tail, forensics
        self.host_findings = host_findings or []  # what the host's side proved (machine.host_findings)
        super().__init__(message)


class QemuCrashed(SutFailure):
    """QEMU died of its own fault: a signal such as SIGSEGV or SIGABRT, or an exit code that is
    not a configuration refusal."""

    def __init__(self, message: str, exit_code: int | None, stderr: str):
        self.exit_code, self.stderr = exit_code, stderr
        super().__init__(message)


class QemuHung(SutFailure):
    """QEMU runs but its monitor no longer answers."""


class QemuRefused(SutFailure):
    """QEMU stopped on an error of its own and said why (exit status 1 and an error line)."""

    def __init__(self, error_line: str, exit_code: int | None, stderr: str):
        self.error_line, self.exit_code, self.stderr = error_line, exit_code, stderr
        super().__init__(error_line)


class GuestPoweredOff(SutFailure):
    """QEMU exited 0 without being asked to: the guest turned the machine off."""


class WorkloadFailed(SutFailure):
    """An in-guest workload saw the system misbehave. `symptom` names what was seen (for known
    issues and reports), e.g. pings-lost or disk-data-corrupt."""

    def __init__(self, reason: str, excerpt: str = "", metrics: dict | None = None, symptom: str = "workload-failed"):
        self.reason, self.excerpt, self.metrics, self.symptom = reason, excerpt, metrics or {}, symptom
        super().__init__(reason)


class MigrationStuck(SutFailure):
    """A migration that neither completed nor failed in its time."""


# -- we could not judge (ERROR) ----------------------------------------------------------------

class InfraError(CaskitError):
    """The host, the kit or the harness failed: the cell cannot be judged."""


class ConfigError(InfraError):
    """A config file, matrix file or CLI argument is wrong. Names the file and the key."""

    def __init__(self, path: str, key: str | None, message: str):
        self.path, self.key, self.message = str(path), key, message
        where = f"{self.path}: {key}: " if key else f"{self.path}: "
        super().__init__(where + message)


class KitError(InfraError):
    """The guest kit could not be built or found, or the guest did not run it."""


class MissingTools(KitError):
    """This machine lacks what a build caskit makes needs (Debian packages, meson): named, so
    scripts/bootstrap.sh or the user can install them; exit 2 at the command line."""


class HostError(InfraError):
    """The host is unreachable or a command on it failed (SSH dropped, command refused)."""


class SlotsBusy(InfraError):
    """Every slot of the host is taken (by this or another controller) for now."""


class QemuKilled(InfraError):
    """QEMU was killed from outside (SIGKILL, SIGTERM, the OOM killer): nobody can judge the guest."""

    def __init__(self, message: str, exit_code: int | None, stderr: str):
        self.exit_code, self.stderr = exit_code, stderr
        super().__init__(message)


class NoGuestOutput(InfraError):
    """The guest printed nothing at all: the firmware never ran, or its console is not ours."""


class ObserveError(InfraError):
    """Guest or host output that does not have the expected shape."""


class QmpCommandError(InfraError):
    """QEMU answered a command with an error. Carries what was sent and what came back."""

    def __init__(self, command: str, args: dict, reply: str):
        import json

        self.command, self.args, self.reply = command, args, reply
        super().__init__(f"QMP {command} {json.dumps(args)} failed: {reply}")


class PinRefused(InfraError):
    """QEMU refused machine options that caskit composed itself (a migration domain's pin)."""


class NoPeer(InfraError):
    """The domain has no member a cross plan could migrate to."""


class Unresolved(InfraError):
    """What was seen before asking the machine why (see machine.resolve)."""


class GuestTimeout(Unresolved):
    """The guest did not print what we waited for in time."""

    def __init__(self, what: str, timeout: float, tail: str):
        self.what, self.timeout, self.tail = what, timeout, tail
        super().__init__(f"timed out after {timeout:.0f}s waiting for {what}; console tail: {tail[-500:]!r}")


class QemuDied(Unresolved):
    """QEMU went away while the cell was running (crash, kill, or guest power-off)."""

    def __init__(self, message: str, exit_code: int | None, stderr: str):
        self.exit_code, self.stderr = exit_code, stderr
        super().__init__(f"{message} (exit code {exit_code}): {stderr.strip()[-1000:]}")


class QmpLost(Unresolved):
    """The QMP connection broke (QEMU exited, or hung)."""


class LaunchFailure(Unresolved):
    """QEMU exited (or could not be attached to) before the guest ran."""

    def __init__(self, message: str, exit_code: int | None, stderr: str, argv: list[str]):
        self.exit_code, self.stderr, self.argv = exit_code, stderr, argv
        super().__init__(f"{message} (exit code {exit_code}): {stderr.strip()[-2000:]}")


# -- not a failure (SKIP) ------------------------------------------------------------------------

class WorkloadSkipped(CaskitError):
    """The workload cannot run in this cell (e.g. too few vCPUs); the reason says why."""


def classify(exc: BaseException) -> tuple[str | None, Kind]:
    """(stage, what it means) for any exception; the one place FAIL and ERROR are told apart.
    Anything that is not caskit's own is a harness bug: ERROR."""
    if isinstance(exc, SutFailure):
        return exc.stage, Kind.FAIL
    if isinstance(exc, WorkloadSkipped):
        return exc.stage, Kind.SKIP
    if isinstance(exc, CaskitError):
        return exc.stage, Kind.ERROR
    return None, Kind.ERROR


def at(stage: str, exc: CaskitError) -> CaskitError:
    """`exc` with its stage set where the caller knows it and it does not."""
    if exc.stage is None:
        exc.stage = stage
    return exc
