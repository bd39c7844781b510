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
:func:`cbst_tf.algos.compute_thresholds`, exactly the top ``floor(p * N_c)`` pixels
are reached when values are distinct (ties with the threshold are all selected).
Comparisons use the same float16-quantised potentials as the threshold histograms
(:mod:`cbst_tf.algos.histogram`). Eq. 5 labels the float32 argmax (the histogram's
predicted class); Eq. 8 takes the argmax of the quantised ratios ``v(c) / t_c`` (ties: the
lowest class id), which is exact: quotients of float16 numbers keep their order in float64.
"""

from __future__ import annotations

import numpy as np

from cbst_tf.algos.histogram import check_bits, potentials, predicted, prior_scale, to_bits
from cbst_tf.algos.thresholds import check_mode
from cbst_tf.errors import CbstError
from cbst_tf.labels import IGNORE

_CHUNK = 1 << 16  # pixels per block in the Eq. 8 solver


def check_thresholds(thresholds: np.ndarray | float, num_classes: int, mode: str) -> np.ndarray:
    """The (C,) float64 thresholds for ``mode``; a scalar means one value for every class.

    One-line errors for a wrong count, NaN or negative values, and (``st``) unequal values.
    """
    check_mode(mode)
    t = np.asarray(thresholds, dtype=np.float64)
    if t.ndim == 0:
        t = np.full(num_classes, float(t))
    if t.shape != (num_classes,):
        raise CbstError(f"thresholds: expected {num_classes} values, got shape {t.shape}")
    if np.isnan(t).any() or (t < 0).any():
        raise CbstError(f"thresholds: expected non-negative values (inf = select nothing), got {t.tolist()}")
    if mode == "st" and not (t == t[0]).all():
        raise CbstError(f"thresholds: mode 'st' expects one global value, got {t.tolist()}")
    return t


def assign_pseudo_labels(prob_map: np.ndarray, thresholds: np.ndarray | float, mode: str,
                         priors: np.ndarray | None = None) -> np.ndarray:
    """(H, W) uint8 train ids of the selected pseudo-labels, 255 where none is selected.

    ``thresholds``: (C,) ``exp(-k_c)`` in the units of ``p`` (or of ``q * p`` with
    priors), as returned by :func:`cbst_tf.algos.compute_thresholds`; ``+inf`` selects
    nothing. ``mode="st"`` requires one global value (Eq. 5); ``"cbst"`` applies Eq. 8.
    """
    check_mode(mode)
    values = potentials(prob_map, priors)
    height, width, num_classes = values.shape
    if num_classes > IGNORE:
        raise CbstError(f"prob_map: {num_classes} classes do not fit uint8 train ids below {IGNORE}")
    t = check_thresholds(thresholds, num_classes, mode)
    if priors is not None:
        t = t * prior_scale(np.asarray(priors))  # into the scaled units of ``values``
    flat = values.reshape(-1, num_classes)
    labels = np.full(flat.shape[0], IGNORE, dtype=np.uint8)

    if mode == "st":
        classes, top = predicted(values)  # the histogram's predicted class and value
        keep = top.view(np.float16).astype(np.float64) >= t[0]  # Eq. 5
        labels[keep] = classes[keep]
        return labels.reshape(height, width)

    zero = t == 0  # threshold 0: every value (even 0) reaches it, ratio +inf
    safe_t = np.where(zero, 1.0, t)  # v / inf = 0: a class with t = inf is never selected
    for start in range(0, flat.shape[0], _CHUNK):  # bounded memory: O(chunk * C) float64
        bits = to_bits(flat[start:start + _CHUNK])
        check_bits(bits, "prob_map")
        ratio = bits.view(np.float16).astype(np.float64) / safe_t
        ratio[:, zero] = np.inf
        best = ratio.argmax(axis=1)  # first maximum: ties go to the lowest class id
        keep = np.take_along_axis(ratio, best[:, None], axis=1)[:, 0] >= 1.0  # Eq. 8
        labels[start:start + _CHUNK][keep] = best[keep]
    return labels.reshape(height, width)
