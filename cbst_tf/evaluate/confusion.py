"""Streaming confusion matrix and intersection-over-union (pure numpy, no TensorFlow).

The paper reports per-class IoU = TP / (TP + FP + FN) and their mean (mIoU), accumulated
over all pixels of the evaluation set (Tables 1-4), exactly as the official Cityscapes
evaluation does: pixels whose ground truth is ``255`` (ignore) are left out, so a
prediction on an ignored pixel is neither a false positive nor a false negative.

NaN rule: a class with TP + FP + FN == 0 (absent from the ground truth AND never predicted
on a valid pixel) has an undefined IoU. It is reported as NaN and left out of the mean,
which is what ``cityscapesscripts`` does too (``getIouScoreForLabel`` returns NaN for a
zero denominator and ``getScoreAverage`` averages only the non-NaN scores). A class
absent from the ground truth but predicted somewhere scores 0, not NaN.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from cbst_tf.labels import IGNORE


class ConfusionMatrix:
    """``matrix[g, p]`` = number of valid pixels with ground truth ``g`` predicted as ``p``.

    Rows are ground truth, columns predictions, int64 so that a whole dataset at full
    resolution cannot overflow. Mergeable, so shards can be evaluated apart and summed.
    """

    def __init__(self, num_classes: int):
        if num_classes < 1 or num_classes >= IGNORE:
            raise ValueError(f"num_classes must be in [1, {IGNORE - 1}], got {num_classes}")
        self.num_classes = int(num_classes)
        self.matrix = np.zeros((num_classes, num_classes), dtype=np.int64)

    def update(self, label: np.ndarray, pred: np.ndarray) -> ConfusionMatrix:
        """Add one image (or batch): ``label`` with 255 = ignore, ``pred`` in [0, C)."""
        label = np.asarray(label)
        pred = np.asarray(pred)
        if label.shape != pred.shape:
            raise ValueError(f"label shape {label.shape} != prediction shape {pred.shape}")
        gt = label.reshape(-1).astype(np.int64)
        pr = pred.reshape(-1).astype(np.int64)
        valid = gt != IGNORE
        gt, pr = gt[valid], pr[valid]
        c = self.num_classes
        if gt.size and (gt.min() < 0 or gt.max() >= c):
            raise ValueError(f"ground-truth ids outside [0, {c}) and not {IGNORE}: {np.unique(gt[(gt < 0) | (gt >= c)])[:5]}")
        if pr.size and (pr.min() < 0 or pr.max() >= c):
            raise ValueError(f"predicted ids outside [0, {c}): {np.unique(pr[(pr < 0) | (pr >= c)])[:5]}")
        self.matrix += np.bincount(gt * c + pr, minlength=c * c).reshape(c, c)
        return self

    def merge(self, other: ConfusionMatrix) -> ConfusionMatrix:
        """Add another matrix of the same size (e.g. from another shard) into this one."""
        if other.num_classes != self.num_classes:
            raise ValueError(f"cannot merge {other.num_classes}-class into {self.num_classes}-class matrix")
        self.matrix += other.matrix
        return self

    @classmethod
    def from_matrix(cls, matrix: np.ndarray) -> ConfusionMatrix:
        matrix = np.asarray(matrix)
        if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1]:
            raise ValueError(f"confusion matrix must be square, got shape {matrix.shape}")
        out = cls(matrix.shape[0])
        out.matrix[...] = matrix.astype(np.int64)
        return out

    def iou(self) -> np.ndarray:
        """Per-class IoU in [0, 1]; NaN where TP + FP + FN == 0."""
        return iou_from_confusion(self.matrix)


def iou_from_confusion(matrix: np.ndarray) -> np.ndarray:
    """IoU_c = TP_c / (TP_c + FP_c + FN_c) from a (C, C) ground-truth x prediction matrix."""
    m = np.asarray(matrix, dtype=np.float64)
    tp = np.diag(m)
    fp = m.sum(axis=0) - tp
    fn = m.sum(axis=1) - tp
    denom = tp + fp + fn
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denom > 0, tp / np.where(denom > 0, denom, 1.0), np.nan)


def mean_iou(iou: np.ndarray, classes: Sequence[int] | None = None) -> float:
    """Mean of ``iou`` over ``classes`` (all when None), skipping NaN; NaN when all are NaN."""
    values = np.asarray(iou, dtype=np.float64)
    if classes is not None:
        values = values[list(classes)]
    values = values[~np.isnan(values)]
    return float(values.mean()) if values.size else float("nan")
