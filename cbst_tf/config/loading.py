"""Loading a configuration: defaults, then presets and the YAML file (with ``base:``), then
``--set a.b=value`` overrides (big_vision style), the cross-field checks, and :func:`derive` for
configs built in code, which pass the same checks as a file would.
"""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path
from typing import Any

import yaml

from cbst_tf.bounds import check_paths, quote
from cbst_tf.config.parsing import apply_updates, nest, parse_override
from cbst_tf.config.schema import Config
from cbst_tf.errors import ConfigError


def _read_yaml(path: Path, seen: tuple[Path, ...] = ()) -> dict:
    """Read a YAML experiment, following ``base:`` links (relative to the file), strictly and
    within bounds (:mod:`cbst_tf.yamlio`: duplicate keys, alias bombs, nesting, encoding)."""
    from cbst_tf.yamlio import load_yaml, read_text_file

    check_paths([("--config" if not seen else f"'base:' in {seen[-1]}", path)])
    path = path.resolve()
    if path in seen:
        raise ConfigError(f"{path}: circular 'base:' chain")
    if len(seen) >= 16:
        raise ConfigError(f"{path}: 'base:' chain longer than 16 files")
    referrer = f" (named by 'base:' in {seen[-1]})" if seen else ""
    data = load_yaml(read_text_file(path, missing=referrer), str(path)) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping")
    base = data.pop("base", None)
    if base is None:
        return {str(path): data}
    if not isinstance(base, str):
        raise ConfigError(f"{path}: key 'base' expects a path string, got {quote(base)}")
    chain = _read_yaml(path.parent / base, seen + (path,))
    chain[str(path)] = data
    return chain


def load_config(path: str | Path | None = None,
                overrides: list[str | tuple[str, str] | tuple[str, str, Any]] | tuple = (),
                presets: tuple[str | Path, ...] = ()) -> Config:
    """Build the resolved :class:`Config`: defaults, presets, YAML (with ``base:``), overrides.

    ``presets`` are YAML files applied before ``path`` (the demo's built-in settings). An
    override is ``"a.b=value"`` (text of ``--set``, parsed as YAML, blamed as ``--set a.b``),
    ``(flag, "a.b=value")`` (the same, blamed as ``flag``), or ``(flag, "a.b", value)``: a
    value the CLI already typed (``--workdir 2024`` is the path "2024", not the number),
    assigned as it is, validated like any other and blamed as ``flag``.
    """
    cfg = Config()
    origins: dict[str, str] = {}
    for yaml_file in (*presets, *([path] if path is not None else [])):
        for where, data in _read_yaml(Path(yaml_file)).items():
            apply_updates(cfg, data, "", where, origins)
    for item in overrides:
        if isinstance(item, tuple) and len(item) == 3:
            flag, key, value = item
        else:
            flag, text = item if isinstance(item, tuple) else (None, item)
            key, value = parse_override(text)
        apply_updates(cfg, nest(key, value), "", flag or f"--set {key}", origins)
    validate(cfg, str(path) if path else "<defaults>", origins)
    return cfg


def derive(cfg: Config, changes: dict[str, Any], where: str = "derived config") -> Config:
    """A copy of ``cfg`` with ``changes`` (``{"a.b": value}``, values already typed), checked like
    a file: every key must exist, every value has its key's type and range, and the result passes
    :func:`validate`. Orchestration (the demo's rows, crossval's folds) builds its per-run configs
    with it, so code cannot make a config that ``--config`` would refuse. ``where`` names the
    caller in errors."""
    out = copy.deepcopy(cfg)
    origins: dict[str, str] = {}
    for key, value in changes.items():
        apply_updates(out, nest(key, value), "", f"{where} ({key})", origins)
    validate(out, where, origins)
    return out


def validate(cfg: Config, where: str, origins: dict[str, str] | None = None) -> None:
    """Cross-field checks that a single field's type and range cannot express.

    An error names the source of the offending key (``origins``), else ``where``."""
    default_where = where

    def src(key: str) -> str:
        return (origins or {}).get(key, default_where)

    if not cfg.runtime.workdir.strip():
        raise ConfigError(f"{src('runtime.workdir')}: key 'runtime.workdir' is empty (the run directory; "
                          "use '.' for the current directory)")
    paths = {"data.source": cfg.data.source, "data.target": cfg.data.target, "data.target_eval": cfg.data.target_eval,
             "model.weights": None if cfg.model.weights == "imagenet" else cfg.model.weights,
             "selftrain.source_weights": cfg.selftrain.source_weights, "selftrain.priors": cfg.selftrain.priors,
             "runtime.workdir": cfg.runtime.workdir}
    check_paths((f"{src(key)}: key '{key}' =", value) for key, value in paths.items())

    def pair(key: str, value: list, positive: bool = True) -> None:
        where = src(key)
        if len(value) != 2 or (positive and min(value) <= 0):
            raise ConfigError(f"{where}: key '{key}' expects two positive numbers, got {value!r}")

    pair("data.crop_size", cfg.data.crop_size)
    pair("data.scale_range", cfg.data.scale_range)
    if cfg.data.scale_range[0] > cfg.data.scale_range[1]:
        raise ConfigError(f"{src('data.scale_range')}: key 'data.scale_range' must be [low, high], "
                          f"got {cfg.data.scale_range}")
    if len(cfg.data.image_mean) != 3:
        raise ConfigError(f"{src('data.image_mean')}: key 'data.image_mean' expects 3 numbers, got {cfg.data.image_mean}")
    pair("selftrain.prior_size", cfg.selftrain.prior_size)
    pair("synth.size", cfg.synth.size)
    for key, scales in (("eval.scales", cfg.eval.scales), ("selftrain.test_scales", cfg.selftrain.test_scales)):
        if not scales or min(scales) <= 0:
            raise ConfigError(f"{src(key)}: key '{key}' expects a non-empty list of positive scales, got {scales}")
    if cfg.selftrain.regularizer != "none" and cfg.selftrain.method not in ("cbst", "cbst_sp"):
        raise ConfigError(
            f"{src('selftrain.regularizer')}: key 'selftrain.regularizer' = {cfg.selftrain.regularizer!r} "
            f"regularises CBST's pseudo-labels: it needs selftrain.method cbst or cbst_sp, "
            f"got {cfg.selftrain.method!r}"
        )
    if cfg.selftrain.portion_start > cfg.selftrain.portion_max:
        raise ConfigError(
            f"{src('selftrain.portion_start')}: key 'selftrain.portion_start' = {cfg.selftrain.portion_start} exceeds "
            f"selftrain.portion_max = {cfg.selftrain.portion_max}"
        )


def to_dict(cfg: Config) -> dict:
    """The config as plain nested dicts (for YAML/JSON)."""
    return dataclasses.asdict(cfg)


def dump_yaml(cfg: Config) -> str:
    return yaml.safe_dump(to_dict(cfg), sort_keys=False)


def save_resolved(cfg: Config, run_dir: str | Path, name: str = "config.yaml") -> Path:
    """Write the fully resolved config into the run directory (atomically)."""
    from cbst_tf.io import atomic_write_text

    out = Path(run_dir) / name
    atomic_write_text(out, dump_yaml(cfg))
    return out


