"""Pseudo-label quality against target labels, when the target has them (diagnostics only).

CBST never reads target labels; but on a benchmark that has them (ours, or a labelled
Cityscapes train split) the precision and recall of each round's pseudo-labels per class
say whether the method's premise holds (section 4.2: hard classes are under-confident but
mostly *right*). Selected/predicted pixels cannot tell this: for CBST that ratio is p by
construction (Algorithm 2).

Counts, not ratios, are accumulated so slices and images merge by addition:

* ``selected``: pixels given class c as pseudo-label whose true label is known;
* ``correct``: of those, the ones whose true label is c;
* ``true``: pixels whose true label is c (the recall denominator).

The label step counts in the evaluation protocol's classes (``eval.protocol``: e.g. SYNTHIA's
16 classes leave terrain, truck and train out). Pure numpy, no I/O.
"""

from __future__ import annotations

import numpy as np

IGNORE = 255


def quality_counts(pseudo: np.ndarray, truth: np.ndarray, num_classes: int) -> np.ndarray:
    """``(3, C)`` int64 counts ``[selected, correct, true]`` of one pseudo-label map.

    ``pseudo`` and ``truth`` are integer maps of the same shape; 255 (or any value >= C)
    means not selected / not labelled and is left out of every count.
    """
    if np.shape(pseudo) != np.shape(truth):
        raise ValueError(f"quality_counts: pseudo-labels {np.shape(pseudo)} and labels {np.shape(truth)} differ in shape")
    pseudo = np.asarray(pseudo).ravel().astype(np.int64)
    truth = np.asarray(truth).ravel().astype(np.int64)
    known = truth < num_classes
    chosen = known & (pseudo < num_classes)
    selected = np.bincount(pseudo[chosen], minlength=num_classes)[:num_classes]
    right = chosen & (pseudo == truth)
    correct = np.bincount(pseudo[right], minlength=num_classes)[:num_classes]
    true = np.bincount(truth[known], minlength=num_classes)[:num_classes]
    return np.stack([selected, correct, true]).astype(np.int64)


def _ratio(num: np.ndarray, den: np.ndarray) -> list[float | None]:
    return [None if d == 0 else float(n) / float(d) for n, d in zip(num, den, strict=True)]


def quality_summary(counts: np.ndarray) -> dict:
    """Per-class precision and recall (``None`` where undefined) plus pixel-weighted totals.

    ``precision[c] = correct[c] / selected[c]`` (how often a class-c pseudo-label is right);
    ``recall[c] = correct[c] / true[c]`` (the share of class c's true pixels that received a
    correct pseudo-label). ``coverage[c] = selected[c] / true[c]`` shows over-selection:
    above 1 a class is given to more pixels than it truly has.
    """
    counts = np.asarray(counts, np.int64)
    if counts.ndim != 2 or counts.shape[0] != 3:
        raise ValueError(f"quality_summary: expected (3, C) counts, got shape {counts.shape}")
    selected, correct, true = counts
    return {
        "selected": [int(v) for v in selected], "correct": [int(v) for v in correct], "true": [int(v) for v in true],
        "precision": _ratio(correct, selected), "recall": _ratio(correct, true), "coverage": _ratio(selected, true),
        "overall_precision": None if selected.sum() == 0 else float(correct.sum() / selected.sum()),
        "overall_recall": None if true.sum() == 0 else float(correct.sum() / true.sum()),
    }
