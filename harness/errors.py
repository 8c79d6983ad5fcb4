"""One root exception, so the CLI can turn every known failure into a clear message and exit code."""

from __future__ import annotations


class CaskitError(Exception):
    """Root of caskit's own errors."""


class ConfigError(CaskitError):
    """A config file, matrix file or CLI argument is wrong. Names the file and the key."""

    def __init__(self, path: str, key: str | None, message: str):
        self.path, self.key, self.message = str(path), key, message
        where = f"{self.path}: {key}: " if key else f"{self.path}: "
        super().__init__(where + message)


class InfraError(CaskitError):
    """The host, the kit or the harness failed: the cell cannot be judged (verdict ERROR)."""


class KitError(InfraError):
    """The guest kit could not be built or found."""


class LaunchFailure(CaskitError):
    """QEMU exited before the guest ran. Carries what a user needs to see why."""

    def __init__(self, message: str, exit_code: int | None, stderr: str, argv: list[str]):
        self.exit_code, self.stderr, self.argv = exit_code, stderr, argv
        super().__init__(f"{message} (exit code {exit_code}): {stderr.strip()[-2000:]}")


class GuestTimeout(InfraError):
    """The guest did not print what we waited for in time."""

    def __init__(self, what: str, timeout: float, tail: str):
        self.what, self.timeout, self.tail = what, timeout, tail
        super().__init__(f"timed out after {timeout:.0f}s waiting for {what}; console tail: {tail[-500:]!r}")


class QemuDied(InfraError):
    """QEMU went away while the cell was running (crash, kill, or guest power-off)."""

    def __init__(self, message: str, exit_code: int | None, stderr: str):
        self.exit_code, self.stderr = exit_code, stderr
        super().__init__(f"{message} (exit code {exit_code}): {stderr.strip()[-1000:]}")
