"""LRENT soft pseudo-labels rebuilt from the label step's logit cache (TensorFlow twin).

The official code stores every image's soft labels as a float32 H x W x C array (159 MB per
1024 x 2048 Cityscapes image, 19 classes). What determines them is much smaller: the
stride-8 float16 logits that the label step already caches (about 1.2 MB per image and test
pass, :mod:`~cbst_tf.selftrain.logit_cache`) plus the round's C thresholds and ``alpha``.
:func:`soft_labels_from_logits` rebuilds them from exactly that, through the label step's
own probability function (:func:`~cbst_tf.selftrain.logit_cache.probs_from_logits`, one
traced graph, so the probabilities are bit-identical to the ones the thresholds were
computed from), then applies LRENT's solver and selection test.

Contract with the numpy reference :func:`cbst_tf.algos.lrent_soft_labels` (tests/test_crst.py):
the same float16-quantised potentials, Eq. 8 ratios and first-maximum hard labels (exact:
comparisons, casts and float64 division); ``y`` and the test ``log Z > 0`` in float64, whose
``exp``/``log`` may differ from numpy's in the last float64 bit, which float32 ``y`` shows as
at most one float32 ulp.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import tensorflow as tf

from cbst_tf.algos.crst import check_alpha
from cbst_tf.algos.pseudo_labels import check_thresholds
from cbst_tf.selftrain.device_ops import (
    NEGATIVE,
    NOT_FINITE,
    OK,
    ScaledPriors,
    check_status,
    first_argmax,
    potentials_graph,
)
from cbst_tf.selftrain.logit_cache import probs_from_logits

_INF = np.inf


def _status(values: tf.Tensor) -> tf.Tensor:
    """OK, NEGATIVE or NOT_FINITE (float16 overflows at 65520, and NaN fails ``<``), as device_ops."""
    in_range = tf.reduce_all(values < 65520.0)
    return tf.where(tf.reduce_any(values < 0), NEGATIVE, tf.where(in_range, OK, NOT_FINITE))


def _lrent_solve(values: tf.Tensor, thresholds: tf.Tensor, alpha: float) -> dict[str, tf.Tensor]:
    """The float64 pieces of LRENT for (N, C) potentials: Eq. 8's class, the selection, and
    what ``y`` is made of (``e / total``, or the share of infinite ratios)."""
    v16 = tf.cast(tf.cast(values, tf.float16), tf.float64)
    zero = tf.equal(thresholds, 0.0)
    ratio = v16 / tf.where(zero, tf.ones_like(thresholds), thresholds)
    ratio = tf.where(zero[tf.newaxis], tf.constant(_INF, tf.float64), ratio)
    # Eq. 8's class: the FIRST maximum of the ratios (numpy's argmax rule).
    classes, best = first_argmax(ratio)
    s = tf.math.log(ratio) / alpha
    infinite = tf.equal(s, _INF)
    top = tf.reduce_max(s, axis=-1)
    shift = tf.where(tf.math.is_finite(top), top, tf.zeros_like(top))
    any_inf = tf.reduce_any(infinite, axis=-1)
    e = tf.where(any_inf[:, tf.newaxis], tf.zeros_like(s), tf.exp(s - shift[:, tf.newaxis]))
    total = tf.reduce_sum(e, axis=-1)
    # Z > 1, decided exactly for a largest ratio >= 1 (algos.crst.lrent_from_log_ratios).
    positive = tf.reduce_sum(tf.cast(ratio > 0, tf.int32), axis=-1)
    at_one = tf.logical_and(tf.equal(best, 1.0), positive > 1)
    selected = tf.logical_or(tf.logical_or(best > 1.0, at_one), shift + tf.math.log(total) > 0.0)
    labels = tf.where(selected, tf.cast(classes, tf.uint8), tf.constant(255, tf.uint8))
    return {"labels": labels, "e": e, "total": total, "infinite": infinite, "any_inf": any_inf,
            "selected": selected}


def lrent_labels_graph(values: tf.Tensor, thresholds: tf.Tensor, alpha: float) -> tuple[tf.Tensor, tf.Tensor]:
    """(labels (H, W) uint8, status) for float32 potentials: LRENT's selection and class without
    building ``y`` (the label step's path; ``y`` is rebuilt per training crop)."""
    shape = tf.shape(values)
    flat = tf.reshape(values, [-1, values.shape[-1]])
    return tf.reshape(_lrent_solve(flat, thresholds, alpha)["labels"], shape[:2]), _status(flat)


def lrent_graph(values: tf.Tensor, thresholds: tf.Tensor, alpha: float) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """(soft (H, W, C) float32, labels (H, W) uint8, status) for float32 potentials."""
    shape = tf.shape(values)
    flat = tf.reshape(values, [-1, values.shape[-1]])
    parts = _lrent_solve(flat, thresholds, alpha)
    total, infinite, any_inf = parts["total"], parts["infinite"], parts["any_inf"]
    y = parts["e"] / tf.where(total > 0, total, tf.ones_like(total))[:, tf.newaxis]
    inf_share = tf.cast(infinite, tf.float64)
    inf_share = inf_share / tf.maximum(tf.reduce_sum(inf_share, axis=-1, keepdims=True), 1.0)
    y = tf.where(any_inf[:, tf.newaxis], inf_share, y)
    y = tf.where(parts["selected"][:, tf.newaxis], y, tf.zeros_like(y))
    return tf.reshape(tf.cast(y, tf.float32), shape), tf.reshape(parts["labels"], shape[:2]), _status(flat)


def _traced(graph, num_classes: int, alpha: float, jit: bool):
    """``graph(potentials, thresholds, alpha)`` traced once without and once with Eq. 9 priors."""
    sig = tf.TensorSpec([None, None, num_classes], tf.float32)
    tsig = tf.TensorSpec([num_classes], tf.float64)

    @tf.function(input_signature=[sig, tsig], autograph=False, jit_compile=jit)
    def plain(probs, t):
        return graph(probs, t, alpha)

    @tf.function(input_signature=[sig, sig, tsig], autograph=False, jit_compile=jit)
    def with_priors(probs, scaled_priors, t):
        return graph(potentials_graph(probs, scaled_priors), t, alpha)

    def run(probs: tf.Tensor, thresholds: np.ndarray, priors: np.ndarray | ScaledPriors | None, name: str):
        if priors is not None and not isinstance(priors, ScaledPriors):
            priors = ScaledPriors.of(priors)
        if priors is None:
            *out, status = plain(probs, thresholds)
        else:
            *out, status = with_priors(probs, priors.values, thresholds * priors.scale)
        check_status(status, name)
        return out

    return run


class SoftLabeller:
    """LRENT's soft labels and hard labels for one round's thresholds, in one traced call.

    Equal to :func:`cbst_tf.algos.lrent_soft_labels` on the same probabilities (hard labels
    exactly, ``y`` to one float32 ulp).
    """

    def __init__(self, thresholds: np.ndarray | float, alpha: float, num_classes: int):
        self.thresholds = check_thresholds(thresholds, num_classes, "cbst")
        self.alpha = check_alpha(alpha)
        self._run = _traced(lrent_graph, num_classes, self.alpha, jit=False)

    def __call__(self, probs: tf.Tensor, priors: np.ndarray | ScaledPriors | None = None,
                 name: str = "prob_map") -> tuple[tf.Tensor, tf.Tensor]:
        """((H, W, C) float32 soft labels, (H, W) uint8 hard labels; 255 = not selected)."""
        soft, labels = self._run(probs, self.thresholds, priors, name)
        return soft, labels


class HardOfSoft:
    """LRENT's selection with :class:`~cbst_tf.selftrain.device_ops.DeviceLabeller`'s interface,
    for the label step: the hard labels of the soft labels (``argmax y`` where selected, 255
    elsewhere) and their pixel counts, equal to :class:`SoftLabeller`'s labels. ``y`` itself is
    not built here: it is rebuilt per training crop from the stored logits
    (:mod:`cbst_tf.selftrain.soft_crop`)."""

    def __init__(self, thresholds: np.ndarray, alpha: float, num_classes: int):
        self.thresholds = check_thresholds(thresholds, num_classes, "cbst")
        self._run = _traced(lrent_labels_graph, num_classes, check_alpha(alpha), jit=True)

    def __call__(self, probs: tf.Tensor, priors: np.ndarray | ScaledPriors | None = None,
                 name: str = "prob_map") -> tuple[np.ndarray, np.ndarray]:
        """((H, W) uint8 labels, (256,) int64 pixel counts of each label value)."""
        (labels,) = self._run(probs, self.thresholds, priors, name)
        labels = labels.numpy()
        return labels, np.bincount(labels.ravel(), minlength=256).astype(np.int64)


def soft_labels_from_logits(logits: Sequence[np.ndarray | tf.Tensor], size: tuple[int, int],
                            labeller: SoftLabeller, priors: np.ndarray | ScaledPriors | None = None,
                            name: str = "prob_map") -> tuple[tf.Tensor, tf.Tensor]:
    """One image's soft labels at ``size`` from its cached stride logits (every test pass)."""
    return labeller(probs_from_logits(logits, size), priors, name=name)
