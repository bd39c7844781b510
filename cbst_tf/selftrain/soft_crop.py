"""LRENT soft labels of one augmented training crop, rebuilt from the stored stride logits.

The official code stores each target image's soft labels as a float32 H x W x C array (159 MB
per Cityscapes image) and resizes that map with the image. Here the LRENT pseudo-label
records carry the label step's float16 stride logits instead (1.2 MB per image and test pass,
:data:`cbst_tf.data.tfrecord.KEY_LOGITS`), and the input pipeline rebuilds ``y`` for the
crop it trains on, never for the whole image:

1. each pass's stride logits are resampled (bilinear, half-pixel centres) straight to the
   crop of the RESCALED image: output pixel ``(oy + i, ox + j)`` of a resize to the augmented
   size ``(Sh, Sw)``. :func:`resized_crop` computes exactly the pixels of
   ``tf.image.resize(logits, (Sh, Sw))[oy:oy + ch, ox:ox + cw]`` with the same interpolation
   formula as TF's kernel, touching only ``ch`` rows and ``cw`` columns;
2. softmax per pass, mean over passes (:func:`cbst_tf.selftrain.logit_cache.probs_from_logits`);
3. with spatial priors, ``s * q`` sampled the same way from the prior grid (Eq. 9 potentials);
4. LRENT's solver ``y_k ∝ (p_k / lambda_k)^(1/alpha)`` (:func:`lrent_soft`) with the round's
   thresholds and ``alpha`` (both stored in the pseudo dataset's manifest).

The selection is not recomputed: the hard label of the record (LRENT's selection, made by the
label step and nearest-neighbour resized as for CBST) decides which pixels are labelled, and
``y`` is zeroed where it is 255, as the official dataset does (``deeplab/datasets.py``). At
augmentation scale 1 this is the label step's own computation restricted to the crop (the label
step resizes the same logits to the image size), so ``y`` equals the label step's soft labels
there, to float32 rounding (tests/test_lrent_pipeline.py; the label step solves in float64, the
crop in float32: the float64 solver and re-selection were half of the pipeline's time per
batch of the demo; ``bench/lrent_pipeline.py``). At other scales the logits are resized once to the augmented size,
where the official code resizes the full-resolution ``y`` (bilinear, renormalised); both are
interpolations of the same map.

Memory per element is O(crop x C) (plus ``ch`` stride rows), flat in the number of images
and independent of the image size.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tensorflow as tf

from cbst_tf.algos.crst import check_alpha
from cbst_tf.algos.histogram import prior_scale
from cbst_tf.algos.pseudo_labels import check_thresholds
from cbst_tf.config import Config
from cbst_tf.errors import CbstError


def lrent_soft(values: tf.Tensor, thresholds: np.ndarray, alpha: float) -> tf.Tensor:
    """LRENT's soft labels ``y_k = (v_k / lambda_k)^(1/alpha) / sum_j (v_j / lambda_j)^(1/alpha)`` of
    every pixel of (h, w, C) potentials, in float32 (no selection: the record's label has it).

    As :func:`cbst_tf.selftrain.soft_labels.lrent_graph`: the potentials are float16-quantised
    first (as the label step's), a threshold 0 makes its class's ratio infinite (the pixel's ``y``
    is then shared by its infinite classes), a threshold ``inf`` makes it 0; a pixel whose ratios
    are all 0 gets ``y = 0`` (no label). ``thresholds``: host (C,) float64 values, so the special
    cases cost nothing when absent.
    """
    t = np.asarray(thresholds, np.float64)
    with np.errstate(divide="ignore"):
        log_t = np.log(t).astype(np.float32)  # 0 -> -inf, inf -> inf
    v = tf.cast(tf.cast(values, tf.float16), tf.float32)
    s = (tf.math.log(v) - tf.constant(log_t)) * np.float32(1.0 / alpha)
    zero = t == 0.0
    if zero.any():  # log(0) - log(0) is NaN: the ratio is infinite whatever v
        s = tf.where(tf.constant(zero), tf.constant(np.inf, tf.float32), s)
    top = tf.reduce_max(s, axis=-1, keepdims=True)
    e = tf.exp(s - tf.where(tf.math.is_finite(top), top, tf.zeros_like(top)))
    total = tf.reduce_sum(e, axis=-1, keepdims=True)
    y = e / tf.where(total > 0, total, tf.ones_like(total))
    if not zero.any():
        return y
    infinite = tf.equal(s, np.inf)
    inf_share = tf.cast(infinite, tf.float32)
    return tf.where(tf.reduce_any(infinite, axis=-1, keepdims=True),
                    inf_share / tf.reduce_sum(inf_share, axis=-1, keepdims=True), y)


def _weights(out_start: tf.Tensor, count: int, in_size: tf.Tensor, out_size: tf.Tensor):
    """TF's half-pixel bilinear weights for outputs ``out_start .. out_start + count - 1``:
    ``(lower index, upper index, lerp)``, indices clamped to the input as in its kernel."""
    scale = tf.cast(in_size, tf.float32) / tf.cast(out_size, tf.float32)
    x = (tf.cast(out_start + tf.range(count), tf.float32) + 0.5) * scale - 0.5
    floor = tf.floor(x)
    lower = tf.maximum(tf.cast(floor, tf.int32), 0)
    upper = tf.minimum(tf.cast(tf.math.ceil(x), tf.int32), in_size - 1)
    return tf.clip_by_value(lower, 0, in_size - 1), tf.maximum(upper, 0), x - floor


def resized_crop(grid: tf.Tensor, size: tf.Tensor, offset: tf.Tensor, crop_hw: Sequence[int]) -> tf.Tensor:
    """``tf.image.resize(grid, size, "bilinear")[oy:oy + ch, ox:ox + cw]`` without the full map.

    ``grid`` (h, w, C) float32, ``size`` int32 (2,) the resized height and width, ``offset``
    int32 (2,) the crop's top-left corner in the resized map. Rows and columns past the
    resized map (the augmentation's padding, labelled 255) take the grid's last row/column.
    """
    ch, cw = int(crop_hw[0]), int(crop_hw[1])
    h, w = tf.shape(grid)[0], tf.shape(grid)[1]
    r0, r1, ry = _weights(offset[0], ch, h, size[0])
    c0, c1, cx = _weights(offset[1], cw, w, size[1])
    cx = cx[tf.newaxis, :, tf.newaxis]

    def along_width(rows: tf.Tensor) -> tf.Tensor:
        left, right = tf.gather(rows, c0, axis=1), tf.gather(rows, c1, axis=1)
        return left + (right - left) * cx

    top = along_width(tf.gather(grid, r0, axis=0))
    bottom = along_width(tf.gather(grid, r1, axis=0))
    return top + (bottom - top) * ry[:, tf.newaxis, tf.newaxis]


@dataclass(frozen=True, eq=False)
class CropSoftLabels:
    """What an LRENT round's soft labels are rebuilt from (besides each record's logits).

    ``thresholds``: the round's CBST thresholds ``exp(-k_c)`` (``inf`` = the class selects
    nothing); ``alpha``: ``selftrain.lr_weight``; ``priors``: the Eq. 9 prior grid (h, w, C)
    divided by its maximum, as the label step uses it, or None.
    """

    thresholds: tuple[float, ...]
    alpha: float
    num_passes: int
    priors: np.ndarray | None = None

    def __post_init__(self):
        check_alpha(self.alpha)
        check_thresholds(np.asarray(self.thresholds, np.float64), len(self.thresholds), "cbst")
        if self.num_passes < 1:
            raise CbstError(f"soft labels: expected at least one test pass, got {self.num_passes}")
        if self.priors is not None and self.priors.shape[-1] != len(self.thresholds):
            raise CbstError(f"soft labels: priors {self.priors.shape} do not match {len(self.thresholds)} classes")

    @property
    def num_classes(self) -> int:
        return len(self.thresholds)

    def parse(self, serialized: tf.Tensor) -> list[tf.Tensor]:
        """The record's stride logits (one float16 tensor per test pass)."""
        from cbst_tf.data.tfrecord import parse_logits

        return parse_logits(serialized, self.num_passes)

    def crop(self, logits: Sequence[tf.Tensor], size: tf.Tensor, offset: tf.Tensor,
             crop_hw: Sequence[int]) -> tf.Tensor:
        """(ch, cw, C) float32 soft labels of the crop at ``offset`` of the image resized to ``size``
        (before flipping and before zeroing the unlabelled pixels: :func:`cbst_tf.data.augment.augment`)."""
        c = self.num_classes
        # Every pass in ONE resample: the same per-channel arithmetic, fewer ops.
        grids = [tf.ensure_shape(tf.cast(item, tf.float32), [None, None, c]) for item in logits]
        up = resized_crop(tf.concat(grids, axis=-1) if len(grids) > 1 else grids[0], size, offset, crop_hw)
        probs = None
        for i in range(len(grids)):
            p = tf.nn.softmax(up[..., i * c:(i + 1) * c], axis=-1)
            probs = p if probs is None else probs + p
        if len(grids) > 1:
            probs = probs / float(len(grids))
        thresholds = np.asarray(self.thresholds, np.float64)
        if self.priors is not None:
            s = prior_scale(self.priors)
            scaled = tf.constant(np.asarray(self.priors, np.float32) * np.float32(s))
            probs = resized_crop(scaled, size, offset, crop_hw) * probs
            thresholds = thresholds * s  # in float64, as the label step scales them
        return lrent_soft(probs, thresholds, self.alpha)


def soft_labels_of(cfg: Config, manifest_path: Path, manifest: dict) -> CropSoftLabels | None:
    """The pseudo dataset's LRENT spec as :class:`~cbst_tf.selftrain.soft_crop.CropSoftLabels`
    (None for hard labels); one-line errors when the labels and ``selftrain.regularizer`` disagree
    or the spatial priors changed since the label step."""
    from cbst_tf.io import file_digest
    from cbst_tf.layout import priors_file
    from cbst_tf.selftrain.label_keys import lrent_weight

    spec, alpha = manifest.get("soft_labels"), lrent_weight(cfg)
    if (spec is None) != (alpha is None):
        made = "LRENT (soft)" if spec is not None else "hard"
        raise CbstError(f"{manifest_path}: the pseudo-labels are {made} labels but selftrain.regularizer="
                        f"{cfg.selftrain.regularizer!r}, lr_weight={cfg.selftrain.lr_weight}; finetune with the "
                        "label step's settings, or label with these (in another runtime.workdir)")
    if spec is None:
        return None
    try:
        thresholds = tuple(float("inf") if t is None else float(t) for t in spec["thresholds"])
        passes, priors_digest = int(spec["passes"]), spec["priors"]
        stored_alpha = float(spec["lr_weight"])
    except (KeyError, TypeError, ValueError):
        raise CbstError(f"{manifest_path}: key 'soft_labels' is malformed; rerun `cbst-tf label`") from None
    from cbst_tf.inference import inference_passes

    expected = len(inference_passes(cfg.selftrain.test_scales, cfg.selftrain.test_flip))
    if passes != expected:
        raise CbstError(f"{manifest_path}: soft labels of {passes} test passes, selftrain.test_scales/test_flip "
                        f"make {expected}; rerun `cbst-tf label`")
    if stored_alpha != alpha or len(thresholds) != cfg.data.num_classes:
        raise CbstError(f"{manifest_path}: soft labels made with lr_weight {stored_alpha} for {len(thresholds)} "
                        f"classes, the config has {alpha} and {cfg.data.num_classes}; rerun `cbst-tf label`")
    priors = None
    if priors_digest is not None:
        path = priors_file(cfg)
        if file_digest(path) != priors_digest:
            raise CbstError(f"{path}: not the spatial priors the LRENT labels of {manifest_path.parent} were made "
                            "with; rerun `cbst-tf label`")
        from cbst_tf.selftrain.priors_step import load_priors

        q = load_priors(path, cfg.data.num_classes, cfg.selftrain.prior_norm)
        priors = (q / float(q.max())).astype(np.float32)  # the label step's normalisation
    return CropSoftLabels(thresholds, alpha, passes, priors)
