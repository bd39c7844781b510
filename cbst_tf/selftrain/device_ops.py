"""TensorFlow twins of the label step's per-pixel work, so it runs where the network runs.

The numpy reference (:mod:`~cbst_tf.algos.histogram`,
:mod:`~cbst_tf.algos.pseudo_labels`) defines the results; this module computes the
SAME results with TensorFlow ops inside traced functions, on the accelerator, next to
the forward pass: no full-resolution probability map ever crosses to the host, and the
host's share of the label step shrinks to file I/O. Contract (tests compare both
implementations bit for bit on random maps with ties, subnormals, empty classes and
priors):

* potentials ``v = (s * q) * p`` in float32 (``s * q`` computed exactly on the host);
* predicted class = the FIRST maximum over classes (numpy's argmax rule; ``tf.argmax``
  leaves ties unspecified, so the first maximum is found explicitly);
* float32 -> float16 casts round to nearest even in TF (Eigen) as in numpy;
* Eq. 8 ratios ``float64(float16(v)) / t_c`` in float64, first maximum, kept at ``>= 1``.

Histogram counters live in an int32 device variable updated by scatter-add (one update
per pixel instead of a dense C x 65,536 array per image); the host folds it into the
int64 :class:`~cbst_tf.algos.ConfidenceHistogram` before 2**31 pixels could have been
added, so memory stays bounded and counts exact at any dataset size.

Both kernels are XLA-compiled (``jit_compile=True``; one compilation per image size):
XLA fuses their dozen elementwise passes over the (pixels x classes) map into a few loops,
which is faster (README, "Performance"). Every op involved (comparisons, max/min, casts,
float64 division) is exact, so compilation does not change results. The probabilities
themselves are NOT computed here under XLA: its softmax rounds differently, and both
phases must share one graph for them
(:func:`~cbst_tf.selftrain.logit_cache.probs_from_logits`).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import tensorflow as tf

from cbst_tf.algos.histogram import BINS, ConfidenceHistogram, prior_scale
from cbst_tf.algos.pseudo_labels import check_thresholds
from cbst_tf.errors import CbstError

# Error codes returned by the traced functions (raising inside a graph would lose the file name).
OK, NEGATIVE, NOT_FINITE = 0, 1, 2
_MESSAGES = {NEGATIVE: "contains negative values",
             NOT_FINITE: "contains NaN or infinite values (or > 65504 after prior scaling)"}
_INT32_MAX = 2**31 - 1


def check_status(code: int | tf.Tensor, name: str) -> None:
    """Raise the numpy reference's one-line error for a non-zero status code."""
    code = int(code)
    if code != OK:
        raise CbstError(f"{name}: {_MESSAGES[code]}")


class ScaledPriors(NamedTuple):
    """Eq. 9 priors at one image size, ready for the device: ``s * q`` and the scale ``s``."""

    values: tf.Tensor  # (H, W, C) float32
    scale: float

    @classmethod
    def of(cls, priors: np.ndarray) -> ScaledPriors:
        s = prior_scale(np.asarray(priors))
        return cls(tf.constant(np.asarray(priors, np.float32) * np.float32(s)), s)  # exact: power of two


def _scaled(priors: np.ndarray | ScaledPriors | None) -> ScaledPriors | None:
    if priors is None or isinstance(priors, ScaledPriors):
        return priors
    return ScaledPriors.of(priors)


def first_argmax(values: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """(first index of the maximum over the last axis, the maximum)."""
    top = tf.reduce_max(values, axis=-1)
    num = tf.shape(values)[-1]
    iota = tf.range(num, dtype=tf.int32)
    first = tf.reduce_min(tf.where(tf.equal(values, top[..., tf.newaxis]), iota, num), axis=-1)
    return first, top


def _class_counts(classes: tf.Tensor, num_classes: int) -> tf.Tensor:
    """(C,) int32 pixels per class id in ``classes`` (ids outside 0..C-1 are not counted).

    Compare-and-sum rather than ``tf.math.bincount``, which is slow under XLA on CPU:
    this fuses into one loop.
    """
    iota = tf.range(num_classes, dtype=tf.int32)
    return tf.reduce_sum(tf.cast(tf.equal(tf.cast(classes, tf.int32)[:, tf.newaxis], iota), tf.int32), axis=0)


def _status(values: tf.Tensor) -> tf.Tensor:
    """OK, NEGATIVE or NOT_FINITE for float32 potentials, in two reductions.

    ``float16(v)`` is finite exactly when ``v < 65520`` (65520 is the tie between 65504
    and 65536, and rounds to even: infinity); the comparison is also False for NaN.
    """
    in_range = tf.reduce_all(values < 65520.0)
    return tf.where(tf.reduce_any(values < 0), NEGATIVE, tf.where(in_range, OK, NOT_FINITE))


def _bits(values: tf.Tensor) -> tf.Tensor:
    """float16 bit patterns of non-negative float32 values, as int32 (monotone)."""
    return tf.cast(tf.bitcast(tf.cast(values, tf.float16), tf.uint16), tf.int32)


def potentials_graph(probs: tf.Tensor, scaled_priors: tf.Tensor | None) -> tf.Tensor:
    """``p``, or ``(s * q) * p`` (Eq. 9) with the host-scaled priors ``s * q``."""
    return probs if scaled_priors is None else scaled_priors * probs


def keep_every_kth(classes: tf.Tensor, k: int, num_classes: int) -> tf.Tensor:
    """Mask of pixels 0, k, 2k, ... of each class in flattened order (the official subsampling)."""
    order = tf.argsort(classes, stable=True)
    sorted_classes = tf.gather(classes, order)
    per_class = _class_counts(classes, num_classes)
    starts = tf.cumsum(per_class, exclusive=True)
    rank = tf.range(tf.size(classes)) - tf.gather(starts, sorted_classes)
    keep_sorted = tf.equal(rank % k, 0)
    return tf.scatter_nd(order[:, tf.newaxis], keep_sorted, tf.shape(classes))


class DeviceHistogram:
    """Accumulates :class:`ConfidenceHistogram` counts from float32 potentials on the device.

    ``update`` takes one image's (H, W, C) probabilities (a tensor, e.g. straight from
    :func:`~cbst_tf.selftrain.logit_cache.probs_from_logits`) and optional priors;
    ``result()`` returns the exact int64 histogram, identical to feeding the same maps to
    ``ConfidenceHistogram.update``.
    """

    def __init__(self, num_classes: int, subsample: int = 1):
        if int(subsample) != subsample or subsample < 1:
            raise CbstError(f"subsample: expected a positive integer, got {subsample!r}")
        self.host = ConfidenceHistogram(num_classes)
        self.num_classes = int(num_classes)
        self.subsample = int(subsample)
        self._counts = tf.Variable(tf.zeros([self.num_classes * BINS], tf.int32), trainable=False)
        self._pending = 0  # pixels added to the device counters since the last fold
        c, k = self.num_classes, self.subsample

        def add(values):
            flat = tf.reshape(values, [-1, c])
            classes, top = first_argmax(flat)
            bits = _bits(top)
            status = _status(flat)
            predicted = _class_counts(classes, c)
            index = classes * BINS + bits
            # Subsampled-away pixels add 0: static shapes, as XLA requires.
            ones = tf.cast(keep_every_kth(classes, k, c), tf.int32) if k > 1 else tf.ones_like(index)

            def scatter():
                self._counts.scatter_add(tf.IndexedSlices(ones, index))
                return tf.constant(True)

            # A bad map (status != OK) raises on the host; it must not touch the counters.
            tf.cond(tf.equal(status, OK), scatter, lambda: tf.constant(False))
            return status, predicted

        sig = tf.TensorSpec([None, None, c], tf.float32)

        @tf.function(input_signature=[sig], autograph=False, jit_compile=True)
        def update_plain(probs):
            return add(probs)

        @tf.function(input_signature=[sig, sig], autograph=False, jit_compile=True)
        def update_priors(probs, scaled_priors):
            return add(potentials_graph(probs, scaled_priors))

        self._update_plain, self._update_priors = update_plain, update_priors

    def update(self, probs: tf.Tensor, priors: np.ndarray | ScaledPriors | None = None,
               name: str = "prob_map") -> None:
        """Add one map; ``priors`` are the (H, W, C) q_n(c) of Eq. 9 at the map's size."""
        priors = _scaled(priors)
        if self.host.num_images and (priors is None) != (self.host.scale is None):
            raise CbstError("priors: every map of one histogram must be given with priors or none")
        pixels = int(np.prod(probs.shape[:2]))
        if self._pending + pixels > _INT32_MAX:
            self._fold()
        if priors is not None:
            if self.host.scale is None:
                self.host.scale = priors.scale
            scaled = priors.values
            if priors.scale != self.host.scale:  # the first map's scale holds for all (exact: powers of two)
                scaled = scaled * np.float32(self.host.scale / priors.scale)
            status, predicted = self._update_priors(probs, scaled)
        else:
            status, predicted = self._update_plain(probs)
        check_status(status, name)
        self.host.add_counts(predicted=predicted.numpy().astype(np.int64), images=1)
        self._pending += pixels

    def _fold(self) -> None:
        if self._pending:
            self.host.add_counts(counts=self._counts.numpy().astype(np.int64).reshape(self.num_classes, BINS))
            self._counts.assign(tf.zeros_like(self._counts))
            self._pending = 0

    def result(self) -> ConfidenceHistogram:
        """The exact int64 histogram of every map added so far."""
        self._fold()
        return self.host


def _labels(values: tf.Tensor, thresholds: tf.Tensor, st: bool) -> tuple[tf.Tensor, tf.Tensor]:
    """(H, W) uint8 labels (255 = not selected) and status for float32 potentials (Eqs. 5, 8)."""
    shape = tf.shape(values)
    c = values.shape[-1]
    flat = tf.reshape(values, [-1, c])
    status = _status(flat)
    if st:  # Eq. 5 on the float32 argmax, compared at float16 resolution
        classes, top = first_argmax(flat)
        keep = tf.cast(tf.cast(top, tf.float16), tf.float64) >= thresholds[0]
    else:  # Eq. 8: the class with the largest v / t_c, kept where that ratio reaches 1
        v16 = tf.cast(tf.cast(flat, tf.float16), tf.float64)
        zero = tf.equal(thresholds, 0.0)
        ratio = v16 / tf.where(zero, tf.ones_like(thresholds), thresholds)
        ratio = tf.where(zero[tf.newaxis], tf.constant(np.inf, tf.float64), ratio)
        classes, best = first_argmax(ratio)
        keep = best >= 1.0
    labels = tf.where(keep, tf.cast(classes, tf.uint8), tf.constant(255, tf.uint8))
    return tf.reshape(labels, shape[:2]), status


class DeviceLabeller:
    """Eq. 5 / Eq. 8 / Eq. 9 pseudo-labels and their pixel counts, in one traced call.

    Equal to :func:`cbst_tf.algos.assign_pseudo_labels` on the same probabilities.
    (The PNG is encoded on the host with OpenCV, which is faster than ``tf.io.encode_png``.)
    """

    def __init__(self, thresholds: np.ndarray | float, mode: str, num_classes: int):
        self.thresholds = check_thresholds(thresholds, num_classes, mode)
        st = mode == "st"
        sig = tf.TensorSpec([None, None, num_classes], tf.float32)
        tsig = tf.TensorSpec([num_classes], tf.float64)

        def finish(values, t_scaled):
            labels, status = _labels(values, t_scaled, st)
            per_class = _class_counts(tf.reshape(labels, [-1]), num_classes)
            unselected = tf.size(labels) - tf.reduce_sum(per_class)
            counts = tf.concat([per_class, tf.zeros([255 - num_classes], tf.int32), [unselected]], 0)
            return labels, counts, status

        @tf.function(input_signature=[sig, tsig], autograph=False, jit_compile=True)
        def plain(probs, t_scaled):
            return finish(probs, t_scaled)

        @tf.function(input_signature=[sig, sig, tsig], autograph=False, jit_compile=True)
        def with_priors(probs, scaled_priors, t_scaled):
            return finish(potentials_graph(probs, scaled_priors), t_scaled)

        self._plain, self._with_priors = plain, with_priors

    def __call__(self, probs: tf.Tensor, priors: np.ndarray | ScaledPriors | None = None,
                 name: str = "prob_map") -> tuple[np.ndarray, np.ndarray]:
        """((H, W) uint8 labels, (256,) int64 pixel counts of each label value)."""
        priors = _scaled(priors)
        if priors is None:
            out = self._plain(probs, self.thresholds)
        else:
            out = self._with_priors(probs, priors.values, self.thresholds * priors.scale)
        labels, counts, status = out
        check_status(status, name)
        return labels.numpy(), counts.numpy().astype(np.int64)
