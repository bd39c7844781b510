"""Colour-alone probes of the benchmark (numpy only).

The benchmark must not be solvable per pixel from colour: a nearest-class-mean RGB
classifier fitted on source pixels should score poorly on the target, and the per-class
colour statistics should shift between domains more for the hard-to-transfer classes
than for the easy ones. ``tests/test_synth.py`` and ``bench/synth.py`` report these.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

NUM_CLASSES = 19


def class_colour_means(pairs: Iterable[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    """Mean RGB per train id over (rgb (H, W, 3), train ids (H, W)) pairs, and the pixel
    counts; ignored pixels (>= 19) are skipped. Classes never seen get NaN means."""
    sums = np.zeros((NUM_CLASSES, 3))
    counts = np.zeros(NUM_CLASSES, np.int64)
    for rgb, ids in pairs:
        ids = ids.ravel().astype(np.int64)
        keep = ids < NUM_CLASSES
        px = rgb.reshape(-1, 3)[keep].astype(np.float64)
        for ch in range(3):
            sums[:, ch] += np.bincount(ids[keep], weights=px[:, ch], minlength=NUM_CLASSES)
        counts += np.bincount(ids[keep], minlength=NUM_CLASSES)
    with np.errstate(invalid="ignore", divide="ignore"):
        return sums / counts[:, None], counts


def nearest_mean_predict(means: np.ndarray, rgb: np.ndarray) -> np.ndarray:
    """Per-pixel class of the nearest (Euclidean RGB) class mean; NaN means never win."""
    px = rgb.reshape(-1, 3).astype(np.float32)
    m = np.where(np.isnan(means), 1e4, means).astype(np.float32)  # far outside the RGB cube
    d = (px * px).sum(1, keepdims=True) - 2.0 * px @ m.T + (m * m).sum(1)[None]
    return d.argmin(1).reshape(rgb.shape[:2])


def iou_per_class(pred: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """IoU (%) per class from flattened predictions/labels (labels >= 19 ignored); NaN for
    classes absent from both."""
    ids = ids.ravel().astype(np.int64)
    keep = ids < NUM_CLASSES
    cm = np.bincount(ids[keep] * NUM_CLASSES + pred.ravel()[keep].astype(np.int64),
                     minlength=NUM_CLASSES ** 2).reshape(NUM_CLASSES, NUM_CLASSES)
    inter = np.diag(cm).astype(np.float64)
    union = cm.sum(0) + cm.sum(1) - inter
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, 100.0 * inter / union, np.nan)


def colour_probe_miou(train: list[tuple[np.ndarray, np.ndarray]],
                      test: list[tuple[np.ndarray, np.ndarray]]) -> tuple[float, np.ndarray]:
    """mIoU (%) of a nearest-class-mean RGB classifier fitted on ``train``, on ``test``
    (mean over classes present in the test labels); also the per-class IoU."""
    means, _ = class_colour_means(train)
    pred = np.concatenate([nearest_mean_predict(means, rgb).ravel() for rgb, _ in test])
    ids = np.concatenate([t.ravel() for _, t in test])
    iou = iou_per_class(pred, ids)
    present = np.bincount(ids[ids < NUM_CLASSES].astype(np.int64), minlength=NUM_CLASSES) > 0
    return float(np.nanmean(np.where(present, np.nan_to_num(iou), np.nan))), iou
