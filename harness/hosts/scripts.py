"""The small shell helpers caskit runs on a host (this machine or one over SSH), kept as files in
remote/ so that each is read, linted and shipped as what it is."""

from __future__ import annotations

from importlib import resources


def script(name: str) -> str:
    return resources.files(__package__).joinpath("remote", name).read_text()
