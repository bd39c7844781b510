"""The one typed configuration tree of an experiment.

Load order (big_vision style): dataclass defaults, then the YAML file given with
``--config`` (which may name a ``base:`` YAML that it extends, resolved relative to
itself), then repeatable ``--set a.b=value`` overrides. Every unknown key, wrong type
and out-of-range value raises :class:`~cbst_tf.errors.ConfigError` with one line that
names the key, the file and, for a typo, the closest valid key.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from cbst_tf.bounds import check_paths, quote
from cbst_tf.errors import ConfigError


def _rng(lo: float | None = None, hi: float | None = None, *, lo_open: bool = False):
    """Field metadata: the closed (or left-open) range a number must lie in."""
    return {"range": (lo, hi, lo_open)}


def _items(hi: float, length: int = 2):
    """Field metadata of a list: at most ``length`` items, each at most ``hi`` (sizes and scales
    are bounded so that no setting can allocate without limit; lower bounds are checked by
    :func:`validate`)."""
    return {"items": (hi, length)}


#: Seeds reach numpy and Keras, which take 32-bit unsigned integers.
MAX_SEED = 2**32 - 1
#: Upper bound of counts that only cost time (steps, images), not memory at once.
MAX_COUNT = 10**9


@dataclass
class DataConfig:
    """Where the converted TFRecord datasets live and how they are read."""

    source: str = ""  # labelled source-domain TFRecord directory (has manifest.json)
    target: str = ""  # unlabelled target-domain TFRecord directory (pseudo-labelled)
    target_eval: str = ""  # labelled target-domain TFRecord directory for evaluation
    num_classes: int = field(default=19, metadata=_rng(2, 254))
    crop_size: list[int] = field(default_factory=lambda: [500, 500], metadata=_items(4096))
    scale_range: list[float] = field(default_factory=lambda: [0.7, 1.3], metadata=_items(8.0))
    flip: bool = True
    # RGB means: padding value of random crops (the network subtracts them, so padding is 0).
    image_mean: list[float] = field(default_factory=lambda: [123.68, 116.78, 103.94], metadata=_items(255.0, 3))
    # Resize factor applied to every image before the network in label/evaluate; labels
    # stay at full resolution and logits are resized back to them.
    input_scale: float = field(default=1.0, metadata=_rng(0.05, 4.0))
    shuffle_buffer: int = field(default=256, metadata=_rng(1, 100_000))
    parallel_calls: int = field(default=4, metadata=_rng(1, 256))
    cycle_length: int = field(default=4, metadata=_rng(1, 256))
    prefetch: int = field(default=2, metadata=_rng(0, 64))
    # Leave out (and count, in one warning) records whose image or label cannot be decoded,
    # instead of stopping with an error that names the first one. Finding them decodes every
    # image of each dataset once per process.
    skip_bad: bool = False


@dataclass
class ModelConfig:
    """Which network, how wide, and how it is initialised."""

    name: Literal["fcn8s_vgg16", "resnet38"] = "fcn8s_vgg16"
    width: float = field(default=1.0, metadata=_rng(0.01, 4.0))
    # None | "imagenet" (Keras cache) | path to a local Keras weights .h5 file.
    weights: str | None = None
    dropout: float = field(default=0.5, metadata=_rng(0.0, 0.99))
    freeze_bn: bool = False  # ResNet-38: keep BatchNorm statistics fixed (official code)
    # ResNet-38 BatchNorm epsilon (official CBST symbols: 1.001e-5).
    bn_epsilon: float = field(default=1e-5, metadata=_rng(0.0, 1.0, lo_open=True))


@dataclass
class TrainConfig:
    """Optimisation of ``pretrain`` and ``finetune`` (paper appendix A, official code)."""

    global_batch_size: int = field(default=2, metadata=_rng(1, 1024))
    steps: int = field(default=1000, metadata=_rng(1, MAX_COUNT))  # pretrain steps
    lr: float = field(default=1e-4, metadata=_rng(0.0, 10.0, lo_open=True))
    momentum: float = field(default=0.9, metadata=_rng(0.0, 0.999))
    weight_decay: float = field(default=5e-4, metadata=_rng(0.0, 1.0))
    schedule: Literal["fixed", "poly", "round_decay"] = "poly"
    poly_power: float = field(default=0.9, metadata=_rng(0.0, 10.0))
    classifier_lr_mult: float = field(default=1.0, metadata=_rng(0.0, 100.0))
    checkpoint_every: int = field(default=500, metadata=_rng(1, MAX_COUNT))
    keep_checkpoints: int = field(default=3, metadata=_rng(1, 1000))
    log_every: int = field(default=20, metadata=_rng(1, MAX_COUNT))


@dataclass
class SelfTrainConfig:
    """Pseudo-label rounds: Algorithms 1/2, Eqs. 5/8/9 and the self-paced policy."""

    method: Literal["source_only", "st", "st_sp", "cbst", "cbst_sp"] = "cbst_sp"
    # CRST (Zou et al., ICCV 2019; docs/CRST.md) on top of cbst / cbst_sp; none = CBST as is.
    # mrkld | mrent | mrl2: finetuning adds mr_weight * r(p) on pseudo-labelled target pixels;
    # lrent: soft pseudo-labels y ~ (p / exp(-k_c))^(1 / lr_weight), kept where Z > 1.
    regularizer: Literal["none", "mrkld", "mrent", "mrl2", "lrent"] = "none"
    # alpha of the MR loss, applied once (official --mr-weight-kld 0.1; the official code applies
    # it twice, an effective 0.01: docs/CRST.md).
    mr_weight: float = field(default=0.1, metadata=_rng(0.0, 100.0))
    lr_weight: float = field(default=0.25, metadata=_rng(0.001, 100.0))  # official --lr-weight-ent
    # Opt-in: self-train on this share of the target images, those with the highest class-balanced
    # confidence score of the source model (official CRST/CBST target: 505 of Cityscapes' 2,975
    # train images, 0.16975); null = every target image.
    target_subset: float | None = field(default=None, metadata=_rng(0.0, 1.0, lo_open=True))
    # Source model that round 1 starts from; default <workdir>/pretrain/final.weights.h5.
    source_weights: str | None = None
    # Spatial priors (.npy from `cbst-tf priors`); default <workdir>/priors/priors.npy.
    priors: str | None = None
    rounds: int = field(default=3, metadata=_rng(0, 100))
    # Self-paced portion p_R = min(p0 + (R-1) * dp, p_max) (section 4.3, appendix A).
    portion_start: float = field(default=0.2, metadata=_rng(0.0, 1.0, lo_open=True))
    portion_step: float = field(default=0.05, metadata=_rng(0.0, 1.0))
    portion_max: float = field(default=0.5, metadata=_rng(0.0, 1.0, lo_open=True))
    epochs_per_round: float = field(default=2.0, metadata=_rng(0.0, 1000.0, lo_open=True))
    # "official": exp(-k_c) is the value at 0-based index floor(p*N_c)-1 of the descending
    # confidences; "paper": at 1-based rank round(p*N_c) as written in section 4.3.
    rank: Literal["official", "paper"] = "official"
    subsample: int = field(default=1, metadata=_rng(1, 64))  # official code: every 4th pixel
    # Spatial priors (section 4.4): frequency maps at this resolution, smoothed with a
    # Gaussian whose 70x70 support is given in source-image pixels.
    prior_size: list[int] = field(default_factory=lambda: [128, 256], metadata=_items(2048))
    prior_kernel: int = field(default=70, metadata=_rng(1, 4096))
    # "pixels": each class map sums to 1 over pixels, as section 4.4 says (q_n(c) ~ p(n|c));
    # "classes" (not in the paper): each pixel's maps sum to 1 over classes, p(c|n), which
    # does not multiply a class's potential by 1 / its source frequency (README, "What we found").
    prior_norm: Literal["pixels", "classes"] = "pixels"
    # Source samples mixed into finetuning (official code: 3%, +0.25%/round, max 6%).
    source_portion_start: float = field(default=0.03, metadata=_rng(0.0, 1.0))
    source_portion_step: float = field(default=0.0025, metadata=_rng(0.0, 1.0))
    source_portion_max: float = field(default=0.06, metadata=_rng(0.0, 1.0))
    # What the source portion is a fraction of: the source images (official code) or the
    # target images, i.e. a source:target ratio that holds whatever the dataset sizes
    # (GTA5 -> Cityscapes officially mixes 3% of 24,966 = 749 source with 2,975 target: 0.25);
    # the [0, 1] range then caps the mix at one source image per target image.
    source_portion_of: Literal["source", "target"] = "source"
    # Hard-sample mining (section 5): probability of centring a target crop on a rare class.
    mine_port: float = field(default=0.5, metadata=_rng(0.0, 1.0))
    rare_threshold: float = field(default=0.001, metadata=_rng(0.0, 1.0))
    rare_min_classes: int = field(default=3, metadata=_rng(0, 254))
    # Finetuning rounds' optimisation; null = train.lr / train.schedule. A model at the end of a
    # poly schedule is destroyed by a restart at the pretraining lr, so rounds usually want less.
    lr: float | None = field(default=None, metadata=_rng(0.0, 10.0, lo_open=True))
    schedule: Literal["fixed", "poly", "round_decay"] | None = None
    lr_round_decay: float = field(default=1.4142135623730951, metadata=_rng(1.0, 100.0))
    test_scales: list[float] = field(default_factory=lambda: [1.0], metadata=_items(8.0, 16))
    test_flip: bool = False


@dataclass
class EvalConfig:
    """mIoU protocol and test-time options."""

    protocol: Literal["cityscapes19", "synthia16", "synthia13", "nthu13"] = "cityscapes19"
    scales: list[float] = field(default_factory=lambda: [1.0], metadata=_items(8.0, 16))
    flip: bool = False
    min_miou: float | None = field(default=None, metadata=_rng(0.0, 100.0))
    save_predictions: int = field(default=0, metadata=_rng(-1, MAX_COUNT))  # -1 = all
    # bilinear_logits: ours; bicubic_probs: the official code's (cbst_tf/official_eval.py).
    upsample: Literal["bilinear_logits", "bicubic_probs"] = "bilinear_logits"
    # Test scale as the longer image side in pixels (official --test-scales); null = data.input_scale.
    long_side: int | None = field(default=None, metadata=_rng(8, 16384))


@dataclass
class RuntimeConfig:
    """Where runs go and how they execute."""

    workdir: str = "runs/default"
    strategy: Literal["auto", "default", "mirrored", "multi_worker"] = "auto"
    precision: Literal["float32", "mixed_float16", "mixed_bfloat16"] = "float32"
    xla: bool = False
    seed: int = field(default=0, metadata=_rng(0, MAX_SEED))
    deterministic: bool = False
    log_every_items: int = field(default=50, metadata=_rng(1, MAX_COUNT))


@dataclass
class SynthConfig:
    """The embedded benchmark that ``cbst-tf demo`` renders (``cbst-tf data synth`` flags)."""

    size: list[int] = field(default_factory=lambda: [128, 256], metadata=_items(2048))
    n_source: int = field(default=400, metadata=_rng(1, 1_000_000))
    n_target: int = field(default=200, metadata=_rng(1, 1_000_000))
    n_val: int = field(default=100, metadata=_rng(1, 1_000_000))
    oracle: bool = True  # also train a target-supervised reference model
    # The demo's stand-in for ImageNet initialisation (cbst_tf/synth/stylized.py): pretrain the
    # network on this many style-randomised source scenes (0: start from model.weights or from
    # scratch). Its seed is fixed across demo seeds, as one set of ImageNet weights would be.
    init_images: int = field(default=0, metadata=_rng(0, 1_000_000))
    init_seed: int = field(default=100, metadata=_rng(0, MAX_SEED))
    # Optimiser steps of the init's pretraining; 0 = the demo's budget (train.steps). ImageNet
    # training is far longer than ours, so a longer init is the stand-in's other axis.
    init_steps: int = field(default=0, metadata=_rng(0, MAX_COUNT))


@dataclass
class Config:
    """The whole experiment."""

    name: str = "experiment"
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    selftrain: SelfTrainConfig = field(default_factory=SelfTrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)
    synth: SynthConfig = field(default_factory=SynthConfig)


# ----------------------------------------------------------------------------- typing


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if origin is list:
        return f"list of {_type_name(typing.get_args(tp)[0])}"
    if tp is type(None):
        return "null"
    return getattr(tp, "__name__", str(tp))


def _coerce(value: Any, tp: Any, key: str, where: str) -> Any:
    """Check ``value`` against annotation ``tp``; return it in canonical form."""
    origin = typing.get_origin(tp)
    bad = ConfigError(f"{where}: key '{key}' expects {_type_name(tp)}, got {quote(value)} ({type(value).__name__})")
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


def _num(value: float) -> str:
    return str(value) if isinstance(value, int) else f"{value:g}"


def _check_range(value: Any, meta: dict, key: str, where: str) -> None:
    if "items" in meta and value is not None:
        hi, length = meta["items"]
        if len(value) > length or any(v > hi for v in value):
            raise ConfigError(f"{where}: key '{key}' expects at most {length} values of at most {_num(hi)} each, "
                              f"got {quote(value)}")
    if "range" not in meta or value is None:
        return
    lo, hi, lo_open = meta["range"]
    if (lo is not None and (value <= lo if lo_open else value < lo)) or (
        hi is not None and value > hi
    ):
        lo_s = "-inf" if lo is None else _num(lo)
        hi_s = "inf" if hi is None else _num(hi)
        bracket = "(" if lo_open else "["
        raise ConfigError(f"{where}: key '{key}' = {quote(value)} is out of range {bracket}{lo_s}, {hi_s}]")


def _suggest(name: str, options: list[str], prefix: str = "") -> str:
    close = difflib.get_close_matches(name, options, n=1, cutoff=0.6)
    return f" (did you mean '{prefix}{close[0]}'?)" if close else ""


def _apply(obj: Any, updates: dict, prefix: str, where: str, origins: dict[str, str] | None = None) -> None:
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
            _apply(getattr(obj, name), value, key + ".", where, origins)
            continue
        value = _coerce(value, tp, key, where)
        _check_range(value, dict(fields[name].metadata), key, where)
        setattr(obj, name, value)
        if origins is not None:
            origins[key] = where


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


def _nest(key: str, value: Any) -> dict:
    out: Any = value
    for part in reversed(key.split(".")):
        out = {part: out}
    return out


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
            _apply(cfg, data, "", where, origins)
    for item in overrides:
        if isinstance(item, tuple) and len(item) == 3:
            flag, key, value = item
        else:
            flag, text = item if isinstance(item, tuple) else (None, item)
            key, value = parse_override(text)
        _apply(cfg, _nest(key, value), "", flag or f"--set {key}", origins)
    validate(cfg, str(path) if path else "<defaults>", origins)
    return cfg


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


def require_runnable(cfg: Config) -> None:
    """One-line error for settings that load but that ``selftrain``/``finetune`` do not run yet.

    CRST's algorithms and losses exist (cbst_tf/algos/crst.py, cbst_tf/train/crst_loss.py) but
    the label step, pseudo dataset and finetuning step do not use them yet (docs/CRST.md,
    "Integration"): refuse rather than train plain CBST under a CRST name.
    """
    st = cfg.selftrain
    for key, value, default in (("regularizer", st.regularizer, "none"), ("target_subset", st.target_subset, None)):
        if value != default:
            raise ConfigError(f"key 'selftrain.{key}' = {value!r}: CRST is not wired into selftrain/finetune yet "
                              f"(issue 30; see docs/CRST.md); use {default!r} for now")


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


def reference_markdown() -> str:
    """The config reference (every key, type, default) generated from the dataclasses."""
    lines = ["| key | type | default |", "| --- | --- | --- |"]

    def walk(obj: Any, prefix: str) -> None:
        hints = typing.get_type_hints(type(obj))
        for f in dataclasses.fields(obj):
            value = getattr(obj, f.name)
            if dataclasses.is_dataclass(value):
                walk(value, f"{prefix}{f.name}.")
                continue
            meta = dict(f.metadata).get("range")
            items = dict(f.metadata).get("items")
            tp = _type_name(hints[f.name])
            if meta:
                lo, hi, lo_open = meta
                tp += f", {'(' if lo_open else '['}{'-inf' if lo is None else _num(lo)}, {'inf' if hi is None else _num(hi)}]"
            if items:
                tp += f", at most {items[1]} values <= {_num(items[0])}"
            lines.append(f"| `{prefix}{f.name}` | {tp} | `{value!r}` |")

    walk(Config(), "")
    return "\n".join(lines) + "\n"


REFERENCE_START = "<!-- config-reference:start (generated by `cbst-tf config reference --update docs/CONFIGURATION.md`) -->"
REFERENCE_END = "<!-- config-reference:end -->"


def update_reference_block(path: str | Path) -> bool:
    """Rewrite the generated config reference between the markers in ``path``; True if changed."""
    from cbst_tf.io import atomic_write_text

    path = Path(path)
    text = path.read_text()
    if REFERENCE_START not in text or REFERENCE_END not in text:
        raise ConfigError(f"{path}: no config-reference markers found")
    head, rest = text.split(REFERENCE_START, 1)
    _, tail = rest.split(REFERENCE_END, 1)
    new = f"{head}{REFERENCE_START}\n{reference_markdown()}{REFERENCE_END}{tail}"
    if new != text:
        atomic_write_text(path, new)
    return new != text
