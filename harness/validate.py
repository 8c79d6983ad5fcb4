"""Reading YAML and checking its values, for every file caskit reads (matrices, the host
inventory, known issues). Each check raises a ConfigError naming the file and the dotted key, and
quotes the value cut short; nothing here knows what a matrix or a host is."""

from __future__ import annotations

import math
import os
import re
import reprlib
import unicodedata
from pathlib import Path
from typing import Any

import yaml

from .errors import ConfigError

# Upper bounds on what a file may give. Each is far above any real use and low enough that a typo
# fails here, naming its key, instead of hours later in QEMU, in a timer or in a loop.
MAX_TIMEOUT_S = 86400.0  # one day; Python's timers overflow on huge values
MAX_NAME = 64  # host, build and domain names go into each cell's id, a directory name (255 bytes at most)
MAX_TEXT = 4096  # a path (PATH_MAX) or any other one-line value
MAX_PROSE = 65536  # a description: free text over several lines
MAX_SMP = 65536  # QEMU's pseries cpu-max is 4096 (10.0); more stays possible so the refusal can be tested


class Loader(yaml.SafeLoader):
    """SafeLoader that keeps on/off/yes/no as the strings the user wrote.

    YAML 1.1 reads bare `on` as True; QEMU's words are `on` and `off`, so a user writing
    `kernel_irqchip: [on, off]` means the strings.
    """


Loader.yaml_implicit_resolvers = {k: [r for r in v if r[0] != "tag:yaml.org,2002:bool"]
                                   for k, v in yaml.SafeLoader.yaml_implicit_resolvers.items()}
Loader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)


def load_yaml(path: str | os.PathLike) -> Any:
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError(str(p), None, f"cannot read: {e.strerror or e}") from None
    except UnicodeDecodeError as e:
        raise ConfigError(str(p), None, f"not UTF-8 text: the byte at offset {e.start} cannot be decoded") from None
    try:
        return yaml.load(text, Loader=Loader)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        raise ConfigError(str(p), None, f"YAML syntax error: {where}{getattr(e, 'problem', None) or e}") from None
    except RecursionError:  # PyYAML composes nested collections recursively
        raise ConfigError(str(p), None, "YAML nested too deeply to read") from None
    except Exception as e:
        # An explicit tag on a value it cannot hold (`!!int abc` is a ValueError, an empty
        # `!!int` an IndexError, `!!timestamp 2020-13-45` a ValueError): PyYAML's constructors
        # raise Python's own errors for these, with no position. Whatever they raise, the text
        # of the file is at fault, not caskit.
        raise ConfigError(str(p), None, f"YAML value error: {type(e).__name__}: {e}") from None


def fmt(values) -> str:
    return ", ".join(str(v) for v in values)


# Values quoted in messages are cut short: a YAML alias can make a value huge (or recursive).
_REPR = reprlib.Repr()
_REPR.maxstring, _REPR.maxother, _REPR.maxlong, _REPR.maxlevel = 80, 80, 40, 3


def show(v: Any) -> str:
    return _REPR.repr(v)


def kind_of(v: Any) -> str:
    """What a value is, in the words of a YAML file."""
    if v is None:
        return "nothing (null)"
    for types, word in ((bool, "a boolean"), ((int, float), "a number"), (str, "a string"), ((list, tuple), "a list"),
                        (dict, "a mapping"), ((set, frozenset), "a set"), (bytes, "binary data")):
        if isinstance(v, types):
            return word
    return f"a {type(v).__name__}"  # dates and timestamps


def got(v: Any) -> str:
    return f"got {kind_of(v)}" if v is None else f"got {kind_of(v)}: {show(v)}"


_PLAIN_KEY = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")


def part(k: Any) -> str:
    """One step of a dotted key: a plain name as written, anything else (a number, a key with
    spaces or control characters) as its repr, so the message stays one readable line."""
    return k if isinstance(k, str) and _PLAIN_KEY.fullmatch(k) else show(k)


def child(key: str | None, k: Any) -> str:
    return f"{key}.{part(k)}" if key else part(k)


def item(key: str, v: Any, i: int) -> str:
    """The key of the i-th value of `v`: indexed when the file gave a list, else the key itself."""
    return f"{key}[{i}]" if isinstance(v, list) else key


def mapping(path: str, key: str, v: Any, what: str) -> dict:
    """A mapping; absent (null) is empty."""
    if v is None:
        return {}
    if not isinstance(v, dict):
        raise ConfigError(path, key, f"must be {what}, {got(v)}")
    return v


def list_of(path: str, key: str, v: Any, what: str) -> list:
    """A non-empty list; a single value stands for a list of one."""
    if isinstance(v, list):
        if not v:
            raise ConfigError(path, key, "empty list: give at least one value")
        return v
    if v is not None and not isinstance(v, (dict, set, frozenset, tuple)):
        return [v]
    raise ConfigError(path, key, f"must be a list of {what} (or one), {got(v)}")


def scalar(path: str, key: str, v: Any, what: str) -> None:
    if isinstance(v, (list, dict, set, frozenset, tuple)):
        raise ConfigError(path, key, f"must be {what}, {got(v)}")


# Control characters never belong in a value: a NUL cannot reach a path or an argv, a newline
# would split a log line or a kernel command line, a lone surrogate cannot even be written to a
# file. Prose (descriptions) may span lines.
_BAD_CATEGORIES = {"Cc", "Cs", "Zl", "Zp"}


def text(path: str, key: str, v: Any, what: str, *, max_len: int = MAX_TEXT, lines: bool = False,
          empty: bool = False) -> str:
    if not isinstance(v, str):
        raise ConfigError(path, key, f"must be {what}, {got(v)}")
    if not v and not empty:
        raise ConfigError(path, key, f"must be {what}, not empty")
    bad = next((c for c in v if unicodedata.category(c) in _BAD_CATEGORIES and not (lines and c in "\n\t")), None)
    if bad is not None:
        allowed = "only newlines and tabs are allowed" if lines else "it must be one line of printable text"
        raise ConfigError(path, key, f"{show(v)} contains the control character {bad!r}; {allowed}")
    if len(v) > max_len:
        raise ConfigError(path, key, f"{len(v)} characters is too long: at most {max_len}")
    return v


NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


def name(path: str, key: str, v: Any, what: str) -> str:
    """A name that becomes part of a cell id, a file name and a command line."""
    if not (isinstance(v, str) and NAME.fullmatch(v) and len(v) <= MAX_NAME):
        raise ConfigError(path, key, f"{show(v)} is not {what} (letters, digits, - _ ., starting with a letter "
                                     f"or digit, at most {MAX_NAME} characters)")
    return v


def whole(path: str, key: str, v: Any, hi: int, too_many: str) -> int:
    """A whole number from 1 to `hi`; `too_many` says why more is refused."""
    if isinstance(v, bool) or not isinstance(v, int) or v < 1:
        raise ConfigError(path, key, f"{show(v)} is not a positive whole number")
    if v > hi:
        raise ConfigError(path, key, f"{show(v)} is too large: at most {hi} ({too_many})")
    return v


def seconds(path: str, key: str, v: Any) -> float:
    # Compare before converting: float() of a huge int overflows.
    if (isinstance(v, bool) or not isinstance(v, (int, float)) or (isinstance(v, float) and not math.isfinite(v))
            or v <= 0):
        raise ConfigError(path, key, f"{show(v)} is not a positive number of seconds")
    if v > MAX_TIMEOUT_S:
        raise ConfigError(path, key, f"{show(v)} seconds is too long: at most {MAX_TIMEOUT_S:.0f} (one day)")
    return float(v)
