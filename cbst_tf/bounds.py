"""Bounds on untrusted input: how large, how deep and how long anything read from a user may be.

A config file, a ``--set`` value, a ``manifest.json`` or a path comes from a user (or an
attacker). Every reader checks it against these limits before it allocates in proportion to
it, and every message quotes such a value through :func:`quote` / :func:`show_path`, so
formatting an error can never take more memory than the error line itself.
"""

from __future__ import annotations

import os
import reprlib
from collections.abc import Iterable
from pathlib import Path
from typing import Any

#: Longest value (characters) quoted in a message.
MAX_QUOTE = 120
#: Longest path component (bytes) and path (bytes) that Linux file systems accept (NAME_MAX, PATH_MAX - 1).
MAX_COMPONENT = 255
MAX_PATH = 4095
#: Largest config file (an experiment YAML is a few kB).
MAX_YAML_BYTES = 1 << 20
#: Largest JSON file a step reads (manifests, stats, markers).
MAX_JSON_BYTES = 64 << 20
#: Deepest nesting of a YAML or JSON document (a config is 3 levels deep, a manifest 2).
MAX_DEPTH = 32
#: Most values a YAML document may hold once its aliases are expanded (a config has ~100).
MAX_YAML_VALUES = 10_000

_REPR = reprlib.Repr()
_REPR.maxstring = MAX_QUOTE
_REPR.maxother = MAX_QUOTE
_REPR.maxlong = 40
_REPR.maxlevel = 3
for _name in ("maxlist", "maxtuple", "maxdict", "maxset", "maxfrozenset"):
    setattr(_REPR, _name, 8)


def quote(value: Any) -> str:
    """``repr(value)``, but at most :data:`MAX_QUOTE` characters however large ``value`` is.

    reprlib looks at the first few items of a container only, so a value that expands to
    billions of items (a YAML alias bomb) is quoted in constant time and memory."""
    text = _REPR.repr(value)
    return text if len(text) <= MAX_QUOTE else text[: MAX_QUOTE - 3] + "..."


def show_path(path: str | Path, limit: int = 160) -> str:
    """A path for a message: long ones keep their start and end."""
    text = os.fspath(path)
    if len(text) <= limit:
        return text
    return f"{text[: limit // 2]}...{text[-(limit // 2 - 3):]}"


def path_problem(path: str | Path) -> str | None:
    """Why ``path`` cannot name a file on Linux (a component or the whole too long), or None."""
    raw = os.fsencode(os.fspath(path))
    if len(raw) > MAX_PATH:
        return f"path of {len(raw)} bytes is too long (at most {MAX_PATH})"
    longest = max((len(part) for part in raw.split(b"/")), default=0)
    if longest > MAX_COMPONENT:
        return f"a path component of {longest} bytes is too long (at most {MAX_COMPONENT})"
    return None


def check_paths(paths: Iterable[tuple[str, str | Path | None]]) -> None:
    """One-line :class:`ConfigError` for the first ``(flag or key, path)`` that no file system accepts."""
    from cbst_tf.errors import ConfigError

    for what, path in paths:
        if path is None or path == "":
            continue
        problem = path_problem(path)
        if problem:
            raise ConfigError(f"{what} {show_path(path)}: {problem}")


def depth_of(value: Any, limit: int = MAX_DEPTH) -> int:
    """Nesting depth of parsed JSON/YAML (lists and dicts), counting at most ``limit + 1`` levels.

    Iterative, so a hostile document cannot exhaust the Python stack here."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if not isinstance(item, (list, dict)):
            continue
        deepest = max(deepest, depth)
        if deepest > limit:
            return deepest
        stack.extend((v, depth + 1) for v in (item.values() if isinstance(item, dict) else item))
    return deepest
