"""Typing and merging of configuration values: one value checked against its annotation and
range, a nested mapping merged into the dataclasses, ``--set a.b=value`` parsed. Every error is
one :class:`~cbst_tf.errors.ConfigError` line naming the key, where it came from and, for a typo,
the closest valid key."""

from __future__ import annotations

import dataclasses
import difflib
import math
import typing
from typing import Any, Literal

from cbst_tf.bounds import quote
from cbst_tf.errors import ConfigError


def type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        return " or ".join(type_name(a) for a in typing.get_args(tp))
    if origin is list:
        return f"list of {type_name(typing.get_args(tp)[0])}"
    if tp is type(None):
        return "null"
    return getattr(tp, "__name__", str(tp))


def _coerce(value: Any, tp: Any, key: str, where: str) -> Any:
    """Check ``value`` against annotation ``tp``; return it in canonical form."""
    origin = typing.get_origin(tp)
    bad = ConfigError(f"{where}: key '{key}' expects {type_name(tp)}, got {quote(value)} ({type(value).__name__})")
    if origin is Literal:
        if value in typing.get_args(tp):
            return value
        raise bad
    if origin is typing.Union or type(tp).__name__ == "UnionType":
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key, where)
            except ConfigError as exc:
                if "finite number" in str(exc):
                    raise
        raise bad
    if origin is list:
        if isinstance(value, tuple):
            value = list(value)
        if not isinstance(value, list):
            raise bad
        (item,) = typing.get_args(tp)
        return [_coerce(v, item, f"{key}[{i}]", where) for i, v in enumerate(value)]
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise bad
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise bad
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            number = float(value)
        elif isinstance(value, str):  # PyYAML reads "1e-4" as a string
            try:
                number = float(value)
            except ValueError:
                raise bad from None
        else:
            raise bad
        if not math.isfinite(number):  # nan passes every range check, inf most
            raise ConfigError(f"{where}: key '{key}' expects a finite number, got {quote(value)}")
        return number
    if tp is str:
        if isinstance(value, str):
            return value
        raise bad
    raise bad


def number_text(value: float) -> str:
    return str(value) if isinstance(value, int) else f"{value:g}"


def _check_range(value: Any, meta: dict, key: str, where: str) -> None:
    if "items" in meta and value is not None:
        hi, length = meta["items"]
        if len(value) > length or any(v > hi for v in value):
            raise ConfigError(f"{where}: key '{key}' expects at most {length} values of at most {number_text(hi)} each, "
                              f"got {quote(value)}")
    if "range" not in meta or value is None:
        return
    lo, hi, lo_open = meta["range"]
    if (lo is not None and (value <= lo if lo_open else value < lo)) or (
        hi is not None and value > hi
    ):
        lo_s = "-inf" if lo is None else number_text(lo)
        hi_s = "inf" if hi is None else number_text(hi)
        bracket = "(" if lo_open else "["
        raise ConfigError(f"{where}: key '{key}' = {quote(value)} is out of range {bracket}{lo_s}, {hi_s}]")


def _suggest(name: str, options: list[str], prefix: str = "") -> str:
    close = difflib.get_close_matches(name, options, n=1, cutoff=0.6)
    return f" (did you mean '{prefix}{close[0]}'?)" if close else ""


def apply_updates(obj: Any, updates: dict, prefix: str, where: str, origins: dict[str, str] | None = None) -> None:
    """Merge a nested dict into dataclass ``obj`` in place, validating every key.

    ``origins`` records, per key, where its value came from (so a later cross-field error
    blames the ``--set`` or flag that set it, not the YAML file)."""
    if not isinstance(updates, dict):
        raise ConfigError(f"{where}: key '{prefix.rstrip('.') or '<root>'}' expects a mapping, got {quote(updates)}")
    hints = typing.get_type_hints(type(obj))
    fields = {f.name: f for f in dataclasses.fields(obj)}
    for name, value in updates.items():
        key = f"{prefix}{name}"
        if name not in fields:
            raise ConfigError(f"{where}: unknown key {quote(key)}{_suggest(str(name)[:200], list(fields), prefix)}")
        tp = hints[name]
        if dataclasses.is_dataclass(tp):
            apply_updates(getattr(obj, name), value, key + ".", where, origins)
            continue
        value = _coerce(value, tp, key, where)
        _check_range(value, dict(fields[name].metadata), key, where)
        setattr(obj, name, value)
        if origins is not None:
            origins[key] = where


def parse_override(text: str) -> tuple[str, Any]:
    """Split ``a.b=value``; the value is parsed as YAML (``[1,2]``, ``true``, ``null``)."""
    from cbst_tf.yamlio import YamlSyntaxError, load_yaml

    if "=" not in text:
        raise ConfigError(f"--set {quote(text)}: expected KEY=VALUE, e.g. train.lr=0.01")
    key, raw = text.split("=", 1)
    key = key.strip()
    if len(key) > 200:
        raise ConfigError(f"--set {quote(key)}: not a config key (longer than any)")
    try:
        value = load_yaml(raw, f"--set {key}") if raw.strip() else ""
    except YamlSyntaxError:
        value = raw
    return key, value


def nest(key: str, value: Any) -> dict:
    out: Any = value
    for part in reversed(key.split(".")):
        out = {part: out}
    return out
