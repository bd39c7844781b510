"""Exact, streaming, mergeable confidence histograms for Algorithms 1 and 2 (section 4.3).

Algorithms 1/2 sort the confidences of *every* target pixel (2,975 x 1024 x 2048 pixels on
Cityscapes) to read off the value ranked at ``p * N``. Instead we count, per predicted
class, how many pixels carry each of the 65,536 float16 bit patterns. For non-negative
numbers the float16 bit pattern read as ``uint16`` is monotone in the value, so the
``m``-th largest value is found by a cumulative sum over the bins: the result equals
sorting, exactly, at float16 resolution, in ``C x 65536`` int64 counters whatever the
number of images. Histograms of disjoint shards add up to the histogram of their union.

Quantisation contract (shared with :func:`cbst_tf.algos.assign_pseudo_labels`): the
predicted class of a pixel is the argmax over classes of the float32 potential
``s * q * p`` (``q = s = 1`` without priors; ties: lowest class id, numpy's rule); every
comparison with a threshold uses ``v = float16(s * q * p)``, rounded to nearest-even.

Why the scale ``s`` (Eq. 9 potentials): priors are normalised so ``sum_n q_n(c) = 1``, so
``q ~ 1/N`` (3e-5 at 128x256, 5e-7 at 1024x2048) and ``q * p`` falls into float16's
subnormal range (< 6.1e-5), where only a few significant bits remain. We multiply by ONE
global power of two ``s = 2**-ceil(log2(max q))`` (so ``s * q <= 1``). A global constant
leaves the Eq. 9 argmax over classes unchanged (a per-class constant would not), a power
of two makes the scaling exact in binary floating point, and thresholds are reported
divided by ``s``, i.e. in the paper's units of ``q * p``.

Pure numpy: the thresholds are read off by :mod:`cbst_tf.algos.thresholds`, the ``.npz``
files of the label step are written by :mod:`cbst_tf.selftrain.histogram_file`.
"""

from __future__ import annotations

import math

import numpy as np

from cbst_tf.errors import CbstError

BINS = 65536  # every float16 bit pattern
MAX_FINITE_BITS = 0x7BFF  # largest finite float16 (65504); above: inf, NaN; >= 0x8000: negative


def prior_scale(priors: np.ndarray) -> float:
    """The power of two ``s`` with ``max(s * q)`` in (0.5, 1] (see the module docstring)."""
    top = float(np.max(priors)) if np.size(priors) else 0.0
    if not math.isfinite(top) or top <= 0.0:
        raise CbstError(f"priors: maximum value is {top!r}, expected a finite positive number")
    return 2.0 ** (-math.ceil(math.log2(top)))


def potentials(prob_map: np.ndarray, priors: np.ndarray | None = None, scale: float | None = None,
               name: str = "prob_map") -> np.ndarray:
    """The float32 (H, W, C) selection metric: ``p``, or ``s * q * p`` with priors (Eq. 9).

    ``scale`` defaults to :func:`prior_scale` of ``priors``; it is ignored without priors.
    """
    p = np.asarray(prob_map)
    if p.ndim != 3 or p.shape[-1] < 1:
        raise CbstError(f"{name}: expected an (H, W, C) probability map, got shape {p.shape}")
    if priors is None:
        values = p.astype(np.float32, copy=False)
    else:
        q = np.asarray(priors)
        if q.shape != p.shape:
            raise CbstError(f"priors: shape {q.shape} does not match {name} shape {p.shape} "
                            "(resize them with resize_priors)")
        s = prior_scale(q) if scale is None else float(scale)
        values = q.astype(np.float32) * np.float32(s)  # exact: s is a power of two
        values *= p.astype(np.float32, copy=False)
    if values.size and float(values.min()) < 0:
        raise CbstError(f"{name}: contains negative values")
    return values


def to_bits(values: np.ndarray) -> np.ndarray:
    """float16 rounding (to nearest even) of non-negative values, as monotone uint16 patterns."""
    return np.asarray(values).astype(np.float16).view(np.uint16)


def quantise(prob_map: np.ndarray, priors: np.ndarray | None = None, scale: float | None = None,
             name: str = "prob_map") -> np.ndarray:
    """``float16(s * q * p)`` of every class as uint16 bit patterns, shape (H, W, C)."""
    return to_bits(potentials(prob_map, priors, scale, name))


def predicted(values: np.ndarray, name: str = "prob_map") -> tuple[np.ndarray, np.ndarray]:
    """Per pixel of a float32 (H, W, C) potential: (argmax class, float16 bits of its value).

    The argmax is taken on float32 (ties: lowest class id); only the winning value is
    quantised, which keeps the histogram update at one float16 conversion per pixel.
    """
    flat = values.reshape(-1, values.shape[-1])
    classes = flat.argmax(axis=1)  # a NaN wins numpy's argmax, so check_bits sees it
    bits = to_bits(np.take_along_axis(flat, classes[:, None], axis=1)[:, 0])
    check_bits(bits, name)
    return classes, bits


def check_bits(bits: np.ndarray, name: str) -> None:
    """Reject quantised values that are NaN, infinite or overflow float16 (> 65504)."""
    if bits.size and int(bits.max()) > MAX_FINITE_BITS:
        raise CbstError(f"{name}: contains NaN or infinite values (or > 65504 after prior scaling)")


def every_kth_per_class(classes: np.ndarray, k: int, num_classes: int) -> np.ndarray:
    """Mask keeping pixels 0, k, 2k, ... of each class in flattened (row-major) order.

    This is the official code's subsampling: per image and per predicted class,
    ``probmap_max[pred == c][0::4]``.
    """
    order = np.argsort(classes, kind="stable")
    per_class = np.bincount(classes, minlength=num_classes)
    starts = np.cumsum(per_class) - per_class
    rank = np.arange(classes.size) - np.repeat(starts, per_class)
    keep = np.zeros(classes.size, dtype=bool)
    keep[order[rank % k == 0]] = True
    return keep


class ConfidenceHistogram:
    """Per-class counts of quantised maximum potentials: everything Algorithms 1/2 need.

    ``counts[c, b]`` = number of (kept) pixels predicted as class ``c`` whose maximum
    potential has float16 bit pattern ``b``. The ST histogram of Algorithm 1 is
    ``counts.sum(0)``.
    """

    def __init__(self, num_classes: int):
        if int(num_classes) < 1:
            raise CbstError(f"num_classes: expected a positive integer, got {num_classes!r}")
        self.num_classes = int(num_classes)
        self.counts = np.zeros((self.num_classes, BINS), dtype=np.int64)
        self._predicted = np.zeros(self.num_classes, dtype=np.int64)
        self.num_images = 0
        self.scale: float | None = None  # prior scale s; None = built without priors

    # ------------------------------------------------------------------ building
    def update(self, prob_map: np.ndarray, priors: np.ndarray | None = None, subsample: int = 1) -> None:
        """Add one (H, W, C) softmax map (and its Eq. 9 priors) to the histogram."""
        if int(subsample) != subsample or subsample < 1:
            raise CbstError(f"subsample: expected a positive integer, got {subsample!r}")
        if self.num_images and (priors is None) != (self.scale is None):
            raise CbstError("priors: every map of one histogram must be given with priors or none")
        if priors is not None and self.scale is None:
            self.scale = prior_scale(np.asarray(priors))
        values = potentials(prob_map, priors, self.scale)
        if values.shape[-1] != self.num_classes:
            raise CbstError(f"prob_map: has {values.shape[-1]} classes, the histogram {self.num_classes}")
        classes, top = predicted(values)
        self._predicted += np.bincount(classes, minlength=self.num_classes)
        if subsample > 1:
            keep = every_kth_per_class(classes, int(subsample), self.num_classes)
            classes, top = classes[keep], top[keep]
        index = classes.astype(np.int64) * BINS + top
        self.counts += np.bincount(index, minlength=self.num_classes * BINS).reshape(self.num_classes, BINS)
        self.num_images += 1

    def add_counts(self, counts: np.ndarray | None = None, predicted: np.ndarray | None = None,
                   images: int = 0) -> None:
        """Add counts made elsewhere (the label step's device kernels), in place.

        ``counts``: (C, 65536) kept pixels per class and float16 bit pattern, as
        :meth:`update` counts them; ``predicted``: (C,) pixels predicted as each class
        before subsampling; ``images``: how many maps they came from. The caller keeps
        :attr:`scale` consistent.
        """
        if counts is not None:
            counts = np.asarray(counts)
            if counts.shape != self.counts.shape or not np.issubdtype(counts.dtype, np.integer):
                raise CbstError(f"histogram: expected integer counts of shape {self.counts.shape}, "
                                f"got {counts.dtype} {counts.shape}")
            self.counts += counts.astype(np.int64)
        if predicted is not None:
            predicted = np.asarray(predicted)
            if predicted.shape != (self.num_classes,) or not np.issubdtype(predicted.dtype, np.integer):
                raise CbstError(f"histogram: expected {self.num_classes} integer predicted-pixel counts, "
                                f"got {predicted.dtype} {predicted.shape}")
            self._predicted += predicted.astype(np.int64)
        self.num_images += int(images)

    def merge(self, other: ConfidenceHistogram) -> ConfidenceHistogram:
        """Add another shard's histogram into this one (in place); returns self."""
        if not isinstance(other, ConfidenceHistogram) or other.num_classes != self.num_classes:
            raise CbstError("histogram: can only merge histograms with the same number of classes")
        if self.num_images and other.num_images and self.scale != other.scale:
            raise CbstError(f"histogram: prior scales differ ({self.scale} vs {other.scale}); "
                            "build every shard with the same priors")
        if not self.num_images:
            self.scale = other.scale
        self.counts += other.counts
        self._predicted += other._predicted
        self.num_images += other.num_images
        return self

    def copy(self) -> ConfidenceHistogram:
        out = ConfidenceHistogram(self.num_classes)
        return out.merge(self)

    def __add__(self, other: ConfidenceHistogram) -> ConfidenceHistogram:
        return self.copy().merge(other)

    def __radd__(self, other: object) -> ConfidenceHistogram:
        if other == 0:  # so that sum(histograms) works
            return self.copy()
        return NotImplemented

    # ------------------------------------------------------------------ reading
    @property
    def predicted_pixels(self) -> np.ndarray:
        """(C,) int64: pixels predicted as each class (all pixels, before subsampling)."""
        return self._predicted.copy()

    @property
    def counted_pixels(self) -> np.ndarray:
        """(C,) int64: pixels in the histogram per class (``N_c`` of Algorithm 2, after subsampling)."""
        return self.counts.sum(axis=1)
