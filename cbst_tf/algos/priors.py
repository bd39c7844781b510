"""Class-wise spatial priors ``q_n(c)`` (section 4.4, Fig. 2, Eq. 9).

"Counting the class frequencies in the source domain, followed by smoothing with a 70x70
Gaussian kernel ... we also normalize them by requiring sum_n q_n(c) = 1."

* Counting happens at a small prior resolution (``selftrain.prior_size``, default
  128x256): each source label map is resized there with exact nearest-neighbour sampling
  (pixel centres, ``cv2.INTER_NEAREST_EXACT``; 255 = ignore is not counted).
* The 70x70 kernel is specified in source-image pixels, so at the prior resolution it is
  ``70 * prior / image`` pixels per axis. We take the kernel to span +-3 sigma, i.e.
  ``sigma = kernel / 6`` (11.7 px at source resolution, 1.46 px at 1/8 scale), truncated at
  ``2 * ceil(3 sigma) + 1`` taps; borders are mirrored (``BORDER_REFLECT``) so no mass leaks
  out of the image. The official priors were precomputed (a MATLAB .mat) with an
  unpublished sigma.
* Normalisation: every class map sums to 1 over pixels. A class never seen in the source
  labels gets the uniform prior ``1/N`` (it neither favours nor forbids any position).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import cv2
import numpy as np

from cbst_tf.errors import CbstError
from cbst_tf.labels import IGNORE


def _hw(size: Sequence[int], name: str) -> tuple[int, int]:
    if len(size) != 2 or int(size[0]) < 1 or int(size[1]) < 1:
        raise CbstError(f"{name}: expected (height, width) with positive integers, got {list(size)}")
    return int(size[0]), int(size[1])


def resize_labels_nearest(label: np.ndarray, size: Sequence[int]) -> np.ndarray:
    """A (H, W) uint8 label map resized to ``size`` = (h, w), nearest pixel centre."""
    h, w = _hw(size, "prior_size")
    label = np.asarray(label, dtype=np.uint8)
    if label.ndim != 2:
        raise CbstError(f"label: expected an (H, W) train-id map, got shape {label.shape}")
    if label.shape == (h, w):
        return label
    return cv2.resize(label, (w, h), interpolation=cv2.INTER_NEAREST_EXACT)


def class_frequency_accumulate(counts: np.ndarray, label_map_resized: np.ndarray) -> np.ndarray:
    """Add one label map (already at the prior resolution) into ``counts`` (H, W, C) int64, in place."""
    h, w, num_classes = counts.shape
    label = np.asarray(label_map_resized)
    if label.shape != (h, w):
        raise CbstError(f"label: shape {label.shape} does not match the prior resolution {(h, w)}")
    flat = label.reshape(-1).astype(np.int64)
    valid = flat != IGNORE
    if (flat[valid] >= num_classes).any():
        bad = int(flat[valid][flat[valid] >= num_classes][0])
        raise CbstError(f"label: value {bad} is not a train id below {num_classes} (255 = ignore)")
    index = np.flatnonzero(valid) * num_classes + flat[valid]
    counts += np.bincount(index, minlength=h * w * num_classes).reshape(h, w, num_classes)
    return counts


class PriorAccumulator:
    """Running per-pixel class counts over source label maps of any size."""

    def __init__(self, num_classes: int, prior_size: Sequence[int]):
        self.prior_size = _hw(prior_size, "prior_size")
        self.num_classes = int(num_classes)
        self.counts = np.zeros((*self.prior_size, self.num_classes), dtype=np.int64)
        self.num_images = 0

    def update(self, label: np.ndarray) -> None:
        class_frequency_accumulate(self.counts, resize_labels_nearest(label, self.prior_size))
        self.num_images += 1


def kernel_at_prior(kernel_px: float, image_size: Sequence[int], prior_size: Sequence[int]) -> tuple[float, float]:
    """The source-resolution kernel width expressed in prior pixels, per axis (y, x)."""
    ih, iw = _hw(image_size, "image_size")
    ph, pw = _hw(prior_size, "prior_size")
    if kernel_px <= 0:
        raise CbstError(f"selftrain.prior_kernel: expected a positive size, got {kernel_px!r}")
    return kernel_px * ph / ih, kernel_px * pw / iw


def gaussian_sigma(kernel_px: float) -> float:
    """Our sigma convention: the kernel spans +-3 sigma."""
    return kernel_px / 6.0


def _taps(sigma: float) -> int:
    return 2 * math.ceil(3.0 * sigma) + 1


def smooth_and_normalise(counts: np.ndarray, kernel_px: float, image_size: Sequence[int],
                         prior_size: Sequence[int] | None = None) -> np.ndarray:
    """(H, W, C) float32 priors: counts blurred with the scaled Gaussian, each class summing to 1."""
    counts = np.asarray(counts)
    if counts.ndim != 3:
        raise CbstError(f"counts: expected an (H, W, C) array, got shape {counts.shape}")
    prior_size = counts.shape[:2] if prior_size is None else _hw(prior_size, "prior_size")
    if tuple(prior_size) != counts.shape[:2]:
        raise CbstError(f"counts: shape {counts.shape[:2]} does not match prior_size {tuple(prior_size)}")
    ky, kx = kernel_at_prior(kernel_px, image_size, prior_size)
    sy, sx = gaussian_sigma(ky), gaussian_sigma(kx)
    # cv2 filters at most 512 channels at once; loop over blocks for larger C.
    blurred = np.empty(counts.shape, dtype=np.float64)
    for start in range(0, counts.shape[2], 512):
        block = np.ascontiguousarray(counts[:, :, start:start + 512], dtype=np.float64)
        out = cv2.GaussianBlur(block, (_taps(sx), _taps(sy)), sigmaX=sx, sigmaY=sy,
                               borderType=cv2.BORDER_REFLECT)
        blurred[:, :, start:start + 512] = out.reshape(block.shape)
    return normalise(blurred)


def normalise(maps: np.ndarray) -> np.ndarray:
    """Each class map scaled to sum 1 over pixels; an all-zero class becomes uniform (float32)."""
    maps = np.clip(np.asarray(maps, dtype=np.float32), 0.0, None)
    sums = maps.sum(axis=(0, 1), dtype=np.float64)
    pixels = maps.shape[0] * maps.shape[1]
    maps /= np.where(sums > 0, sums, 1.0).astype(np.float32)
    maps[:, :, sums <= 0] = np.float32(1.0 / pixels)
    return maps


def class_posterior(priors: np.ndarray, class_counts: Sequence[float]) -> np.ndarray:
    """The opt-in ``selftrain.prior_norm: classes``: (H, W, C) float32 maps summing to 1 over classes.

    Eq. 9's ``q_n(c)`` sums to 1 over pixels, i.e. it is ``p(n | c)``; by Bayes
    ``p(c | n) = p(n | c) p(c) / p(n)``, so ``q_n(c) * N_c`` (``N_c``: the class's source pixel
    count), renormalised at every pixel, is the smoothed source class frequency at that pixel.
    ``p(n | c)`` multiplies a class's potential by about ``1 / p(c)`` against ``p(c | n)``,
    favouring rare classes in the Eq. 8/9 arg-max. A pixel where no class was seen gets ``1/C``.
    """
    q = np.asarray(priors, dtype=np.float64)
    counts = np.asarray(class_counts, dtype=np.float64)
    if q.ndim != 3 or counts.shape != (q.shape[2],):
        raise CbstError(f"class_counts: expected {q.shape[-1] if q.ndim == 3 else '?'} values for priors "
                        f"of shape {q.shape}, got shape {counts.shape}")
    if not np.isfinite(counts).all() or (counts < 0).any():
        raise CbstError(f"class_counts: expected finite non-negative counts, got {counts.tolist()}")
    joint = np.clip(q, 0.0, None) * counts
    total = joint.sum(axis=2, keepdims=True)
    out = np.where(total > 0, joint / np.where(total > 0, total, 1.0), 1.0 / q.shape[2])
    return out.astype(np.float32)


def resize_priors(priors: np.ndarray, size: Sequence[int]) -> np.ndarray:
    """Priors at another resolution ``size`` = (H, W): bilinear, then renormalised to sum 1."""
    h, w = _hw(size, "size")
    priors = np.asarray(priors, dtype=np.float32)
    if priors.ndim != 3:
        raise CbstError(f"priors: expected an (H, W, C) array, got shape {priors.shape}")
    if priors.shape[:2] == (h, w):
        return normalise(priors)
    out = np.empty((h, w, priors.shape[2]), dtype=np.float32)
    for start in range(0, priors.shape[2], 512):
        block = np.ascontiguousarray(priors[:, :, start:start + 512])
        out[:, :, start:start + 512] = cv2.resize(block, (w, h), interpolation=cv2.INTER_LINEAR).reshape(
            h, w, block.shape[2])
    return normalise(out)
