"""Rendering QEMU command lines and guest options from templates/.

One cached jinja2 environment with StrictUndefined: a missing variable is an error, never an
empty argument. Templates render one item per line; lines become a list, so no value from a
config ever passes through a shell.
"""

from __future__ import annotations

from functools import lru_cache

import jinja2

from .resources import TEMPLATES


@lru_cache(maxsize=None)
def env(autoescape: bool = False) -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATES)),
        undefined=jinja2.StrictUndefined,
        autoescape=autoescape,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=False,
    )


def render_lines(name: str, **ctx) -> list[str]:
    text = env().get_template(name).render(**ctx)
    return [line for line in text.splitlines() if line.strip()]


def render_text(name: str, **ctx) -> str:
    return env().get_template(name).render(**ctx).strip()


def render_html(name: str, **ctx) -> str:
    return env(autoescape=True).get_template(name).render(**ctx)
