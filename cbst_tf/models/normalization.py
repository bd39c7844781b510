"""The input normalisation (and BatchNorm epsilon) a weights file was trained with.

Weights are only correct under the normalisation they were trained with: the official
ResNet-38 models expect the ImageNet mean (123.675, 116.28, 103.53) where our configs used
to have the VGG mean (123.68, 116.78, 103.94); that small shift alone changes the logits by
0.7% and the arg-max of 1% of the pixels. Keras ``.weights.h5`` files do not store it (the
mean is a constant of the :class:`~cbst_tf.models.layers.Normalize` layer, not a weight),
so :func:`save_weights_with_normalization` records it as a JSON root attribute
(``cbst_tf_normalization``: ``mean``, ``std``, ``bn_epsilon``, ``source``) that Keras
ignores when loading, and :func:`check_normalization` compares it with the model that loads
the file, warning (:class:`NormalizationWarning`) on a mismatch. Files without the
attribute (everything our training writes) are not checked.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import keras

ATTRIBUTE = "cbst_tf_normalization"
_MEAN_TOL = 1e-3  # in 0..255 pixel units
_REL_TOL = 1e-6


class NormalizationWarning(UserWarning):
    """Weights loaded under a normalisation (or BN epsilon) other than the recorded one."""


@dataclass(frozen=True)
class Normalization:
    """``(x - mean) / std`` on RGB 0..255 input, plus the BatchNorm epsilon (None: no BN)."""

    mean: Sequence[float]
    std: Sequence[float]
    bn_epsilon: float | None = None
    source: str = ""

    def to_json(self) -> str:
        d = asdict(self)
        d["mean"], d["std"] = [float(v) for v in self.mean], [float(v) for v in self.std]
        return json.dumps(d)

    @classmethod
    def from_json(cls, text: str) -> Normalization:
        d = json.loads(text)
        return cls(mean=tuple(d["mean"]), std=tuple(d["std"]), bn_epsilon=d.get("bn_epsilon"),
                   source=d.get("source", ""))


def model_normalization(model: keras.Model) -> Normalization | None:
    """The normalisation ``model`` applies (its ``normalize`` layer, first BN's epsilon)."""
    try:
        layer = model.get_layer("normalize")
    except ValueError:
        return None
    eps = next((lyr.epsilon for lyr in model.layers if isinstance(lyr, keras.layers.BatchNormalization)), None)
    return Normalization(mean=tuple(layer.mean), std=tuple(layer.std), bn_epsilon=eps)


def save_weights_with_normalization(model: keras.Model, path: str | Path, norm: Normalization) -> Path:
    """``model.save_weights(path)`` plus the :data:`ATTRIBUTE` record, written atomically."""
    import h5py

    from cbst_tf.io import atomic_path

    path = Path(path)
    with atomic_path(path, keep_suffix=True) as tmp:  # Keras needs the .weights.h5 suffix
        model.save_weights(str(tmp))
        with h5py.File(tmp, "a") as f:
            f.attrs[ATTRIBUTE] = norm.to_json()
    return path


def read_normalization(path: str | Path) -> Normalization | None:
    """The normalisation recorded in a ``.weights.h5`` file, None when it has none."""
    import h5py

    try:
        with h5py.File(path, "r") as f:
            raw = f.attrs.get(ATTRIBUTE)
    except OSError:
        return None
    if raw is None:
        return None
    return Normalization.from_json(raw.decode() if isinstance(raw, bytes) else str(raw))


def _differs(a: Sequence[float], b: Sequence[float], tol: float, relative: bool) -> bool:
    if len(a) != len(b):
        return True
    return any(abs(x - y) > (tol * max(abs(x), abs(y)) if relative else tol) for x, y in zip(a, b, strict=True))


def mismatches(recorded: Normalization, used: Normalization) -> list[str]:
    """Human-readable differences between the recorded and the model's normalisation."""
    out = []
    if _differs(recorded.mean, used.mean, _MEAN_TOL, relative=False):
        out.append(f"mean {[round(v, 3) for v in used.mean]} (weights: {[round(v, 3) for v in recorded.mean]}; "
                   "set data.image_mean)")
    if _differs(recorded.std, used.std, _REL_TOL, relative=True):
        out.append(f"std {[round(v, 4) for v in used.std]} (weights: {[round(v, 4) for v in recorded.std]})")
    if (recorded.bn_epsilon is not None and used.bn_epsilon is not None
            and _differs([recorded.bn_epsilon], [used.bn_epsilon], _REL_TOL, relative=True)):
        out.append(f"BatchNorm epsilon {used.bn_epsilon:g} (weights: {recorded.bn_epsilon:g}; "
                   "set model.bn_epsilon)")
    return out


def check_normalization(model: keras.Model, path: str | Path) -> list[str]:
    """Warn (:class:`NormalizationWarning`) when ``model`` normalises its input differently from
    what the weights file ``path`` records; return the differences (empty: fine or unknown)."""
    recorded = read_normalization(path)
    used = model_normalization(model)
    if recorded is None or used is None:
        return []
    diffs = mismatches(recorded, used)
    if diffs:
        origin = f" ({recorded.source})" if recorded.source else ""
        warnings.warn(f"{path}: weights{origin} were made for another input normalisation; the model uses "
                      + "; ".join(diffs), NormalizationWarning, stacklevel=2)
    return diffs
