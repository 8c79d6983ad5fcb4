"""The build steps the kernel and QEMU builds share, with real processes: output in the log,
the build's own count behind each progress line, and a failure as KitError with the log's tail."""

from __future__ import annotations

import pytest

from harness.emulated import build_steps
from harness.emulated.qemu_build import ninja_progress
from harness.errors import KitError


def test_a_logged_command_appends_and_a_failure_names_its_tail(tmp_path):
    log = tmp_path / "patch.log"
    build_steps.run_logged(["sh", "-c", "echo first"], log, "one")
    build_steps.run_logged(["sh", "-c", "echo second"], log, "two")
    assert log.read_text() == "first\nsecond\n"  # several patches share one log
    with pytest.raises(KitError, match=r"three failed \(exit 3\): first \| second \| broken"):
        build_steps.run_logged(["sh", "-c", "echo broken; exit 3"], log, "three")


def test_progress_lines_carry_the_builds_own_count(tmp_path, monkeypatch):
    monkeypatch.setattr(build_steps, "PROGRESS_EVERY_S", 0.0)  # a line after every output line
    said, steps = [], []

    def seen(line: bytes) -> None:
        if (x := ninja_progress(line)) is not None:
            steps.append(x)

    build_steps.run_with_progress(["sh", "-c", "echo '[1/2] cc a.o'; echo '[2/2] ld qemu'"], tmp_path / "b.log",
                                  "building x", said.append, seen, lambda s: f"{steps[-1][0]}/{steps[-1][1]} steps")
    assert said == ["1/2 steps", "2/2 steps"] and (tmp_path / "b.log").read_text().count("\n") == 2
    with pytest.raises(KitError, match=r"building x failed \(sh exit 2\): nope"):
        build_steps.run_with_progress(["sh", "-c", "echo nope; exit 2"], tmp_path / "c.log", "building x",
                                      said.append, lambda line: None, lambda s: "")
