"""Pseudo-label solvers: Eq. 5 (ST), Eq. 8 (CBST) and Eq. 9 (with spatial priors).

Given fixed network weights, step a) of the block coordinate descent (section 4.1) has a
closed-form per-pixel solution:

* Eq. 5 (``st``): the argmax class, kept where its value ``>= exp(-k)``.
* Eq. 8 (``cbst``): the class maximising the class-normalised response
  ``p_n(c) / exp(-k_c)``, kept where that response reaches 1; it may differ from the
  argmax of ``p`` ("balancing towards the class with relatively low score but having high
  within-class confidence").
* Eq. 9 (``priors`` given): the potential ``q_n(c) p_n(c)`` replaces ``p_n(c)`` in both.

The paper writes ``> exp(-k)``/``> 1``; we select ``>=`` so that, with thresholds from
:func:`cbst_tf.selftrain.compute_thresholds`, exactly the top ``floor(p * N_c)`` pixels
are reached when values are distinct (ties with the threshold are all selected).
Comparisons use the same float16-quantised potentials as the threshold histograms
(:mod:`cbst_tf.selftrain.histogram`); ties in the Eq. 8 argmax go to the lowest class id.
The Eq. 8 ratios are exact: quotients of float16 numbers keep their order in float64.
"""

from __future__ import annotations

import numpy as np

from cbst_tf.errors import CbstError
from cbst_tf.labels import IGNORE
from cbst_tf.selftrain.histogram import check_bits, prior_scale, quantise
from cbst_tf.selftrain.thresholds import check_mode


def _check_thresholds(thresholds: np.ndarray | float, num_classes: int) -> np.ndarray:
    t = np.asarray(thresholds, dtype=np.float64)
    if t.ndim == 0:
        t = np.full(num_classes, float(t))
    if t.shape != (num_classes,):
        raise CbstError(f"thresholds: expected {num_classes} values, got shape {t.shape}")
    if np.isnan(t).any() or (t < 0).any():
        raise CbstError(f"thresholds: expected non-negative values (inf = select nothing), got {t.tolist()}")
    return t


def assign_pseudo_labels(prob_map: np.ndarray, thresholds: np.ndarray | float, mode: str,
                         priors: np.ndarray | None = None) -> np.ndarray:
    """(H, W) uint8 train ids of the selected pseudo-labels, 255 where none is selected.

    ``thresholds``: (C,) ``exp(-k_c)`` in the units of ``p`` (or of ``q * p`` with
    priors), as returned by :func:`cbst_tf.selftrain.compute_thresholds`; ``+inf`` selects
    nothing. ``mode="st"`` requires one global value (Eq. 5); ``"cbst"`` applies Eq. 8.
    """
    check_mode(mode)
    bits = quantise(prob_map, priors)
    height, width, num_classes = bits.shape
    if num_classes > IGNORE:
        raise CbstError(f"prob_map: {num_classes} classes do not fit uint8 train ids below {IGNORE}")
    t = _check_thresholds(thresholds, num_classes)
    if priors is not None:
        t = t * prior_scale(np.asarray(priors))  # back to the scaled units of ``bits``
    flat = bits.reshape(-1, num_classes)
    labels = np.full(flat.shape[0], IGNORE, dtype=np.uint8)

    if mode == "st":
        if not (t == t[0]).all():
            raise CbstError(f"thresholds: mode 'st' expects one global value, got {t.tolist()}")
        classes = flat.argmax(axis=1)
        top = np.take_along_axis(flat, classes[:, None], axis=1)[:, 0]
        check_bits(top, "prob_map")
        keep = top.view(np.float16).astype(np.float64) >= t[0]  # Eq. 5
        labels[keep] = classes[keep]
        return labels.reshape(height, width)

    check_bits(flat.max(axis=1), "prob_map")
    best_ratio = np.full(flat.shape[0], -1.0)
    best_class = np.zeros(flat.shape[0], dtype=np.uint8)
    for c in range(num_classes):  # one class at a time: memory O(H*W), not O(H*W*C)
        if np.isinf(t[c]):
            continue  # ratio 0: never selected, never above a selectable class
        values = flat[:, c].view(np.float16).astype(np.float64)
        ratio = np.full_like(values, np.inf) if t[c] == 0 else values / t[c]
        better = ratio > best_ratio  # strict: ties keep the lower class id
        best_ratio[better] = ratio[better]
        best_class[better] = c
    keep = best_ratio >= 1.0  # Eq. 8
    labels[keep] = best_class[keep]
    return labels.reshape(height, width)
