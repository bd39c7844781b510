"""CRST's label regularisation and target-subset score, pure numpy (Zou et al., ICCV 2019).

CRST ("Confidence Regularized Self-Training", arXiv 1908.09822) keeps CBST's label step
(class thresholds ``lambda_k = exp(-k_k)``, Algorithm 2) and relaxes the pseudo-label of a
target pixel to ``y in Delta^{K-1} U {0}``. A pixel with label ``y`` costs

    ``f(y) = -sum_k y_k log(v_k / lambda_k) + alpha * r(y)``,   ``f(0) = 0``,

where ``v_k = p_k`` (CBST) or the Eq. 9 potential ``q_k p_k`` (CBST-SP). Label
regularisation with the negative entropy (LRENT, ``r(y) = sum_k y_k log y_k``) has the
closed-form minimiser on the simplex

    ``y_k = (v_k / lambda_k)^(1/alpha) / sum_j (v_j / lambda_j)^(1/alpha)``

(the official ``label_selection``: ``np.power(pred_prob / cls_thresh, 1.0 / lr_weight_ent)``,
normalised over classes; yzou2/CRST ``crst_seg.py`` lines 679-682), and ``f(y*) =
-alpha * log Z`` with ``Z = sum_k (v_k / lambda_k)^(1/alpha)``. The pixel keeps ``y*`` only
when that cost is negative, i.e. ``Z > 1``; otherwise ``y = 0`` (unlabelled). The official
test is the same inequality written out: a pixel is unlabelled where ``reg_score >=
sel_score`` with ``reg_score = sum_k -y_k log p_k + alpha y_k log y_k`` and ``sel_score =
sum_k -y_k log lambda_k`` (lines 686-687, 694-695), in float32; at a pixel whose largest
ratio is exactly 1 (every class has one: the pixel AT its threshold) the true margin
``-alpha log Z`` is far below the rounding error of those sums, so the code decides it by
rounding noise. We decide ``Z > 1`` exactly there (:func:`lrent_from_log_ratios`). Its hard label is the argmax of ``y``,
i.e. Eq. 8's class ``argmax_k v_k / lambda_k`` (line 685). As ``alpha -> 0`` this tends to
CBST's Eq. 8; for ``alpha > 0`` every pixel CBST selects (max ratio > 1) is selected too.

Quantisation contract (the label step's, :mod:`cbst_tf.algos.histogram`): every ratio uses
the float16-rounded potential ``float64(float16(v)) / lambda_k`` exactly as Eq. 8 does
(:func:`cbst_tf.algos.assign_pseudo_labels`), so the hard labels and ties (lowest class id)
are Eq. 8's and the thresholds, which are float16 values, are met with equality where CBST
meets them. A zero threshold makes its ratio ``+inf`` (as in Eq. 8): such classes share
``y`` equally (the limit of equal ratios) and the pixel is selected; a class with threshold
``+inf`` gets ``y_k = 0``.

The model regularisers (MRKLD, MRENT, MRL2) only change finetuning: see
:mod:`cbst_tf.train.crst_loss`.

Target subset (the official ``train_ClsConfSet.lst``, 505 of Cityscapes' 2,975 train
images): the authors describe its "class-balanced score" (yzou2/CRST issues #11, #16) as, per
image, the mean over classes of the average confidence of the pixels predicted as that class;
images above an unpublished threshold were kept. We keep the top ``portion`` of the images by
that score (:func:`select_by_score`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from cbst_tf.algos.histogram import check_bits, potentials, predicted, prior_scale, to_bits
from cbst_tf.algos.pseudo_labels import check_thresholds
from cbst_tf.errors import CbstError
from cbst_tf.labels import IGNORE

REGULARIZERS = ("none", "mrkld", "mrent", "mrl2", "lrent")
MODEL_REGULARIZERS = ("mrkld", "mrent", "mrl2")
_CHUNK = 1 << 16  # pixels per block: bounded memory, O(chunk * C) float64


def check_alpha(alpha: float) -> float:
    """LRENT's weight ``alpha`` as a float; one-line error unless it is finite and positive."""
    a = float(alpha)
    if not np.isfinite(a) or a <= 0.0:
        raise CbstError(f"lr_weight: expected a finite positive number, got {alpha!r}")
    return a


def log_ratios(v16: np.ndarray, thresholds: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(ratios, log ratios)`` of float16-valued potentials ``v16`` (N, C) to ``thresholds`` (C,).

    Eq. 8's ratio ``v / t`` in float64 (``+inf`` where ``t = 0``, ``0`` where ``t = +inf``);
    its log is ``-inf`` for a zero ratio.
    """
    zero = thresholds == 0
    ratio = v16 / np.where(zero, 1.0, thresholds)
    ratio[:, zero] = np.inf
    with np.errstate(divide="ignore"):
        return ratio, np.log(ratio)


def lrent_from_log_ratios(ratio: np.ndarray, log_ratio: np.ndarray, alpha: float) -> tuple[np.ndarray, np.ndarray]:
    """``(y (N, C) float64, selected (N,) bool)``: LRENT's solver and selection test.

    ``y = softmax(log_ratio / alpha)`` on selected pixels, ``0`` elsewhere. Selected means
    ``Z = sum_k ratio_k^(1/alpha) > 1``, decided exactly where it is structural: a largest
    ratio above 1 always, a largest ratio of exactly 1 (the pixel AT a threshold) when any
    other ratio is positive (``Z`` then exceeds 1 by ``r^(1/alpha)``, which can be below
    float64's resolution of 1), and ``log Z > 0`` in float64 when every ratio is below 1.
    """
    s = log_ratio / alpha
    infinite = np.isposinf(s)
    any_inf = infinite.any(axis=1)
    top = s.max(axis=1)
    shift = np.where(np.isfinite(top), top, 0.0)
    r_max = ratio.max(axis=1)
    at_one = (r_max == 1.0) & ((ratio > 0).sum(axis=1) > 1)
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        e = np.exp(s - shift[:, None])  # +inf rows are replaced below
        e[any_inf] = 0.0
        total = e.sum(axis=1)
        log_z = shift + np.log(total)  # -inf when every ratio is 0
        selected = (r_max > 1.0) | at_one | (log_z > 0.0)
        y = e / np.where(total > 0, total, 1.0)[:, None]
    y[any_inf] = infinite[any_inf] / infinite[any_inf].sum(axis=1, keepdims=True)
    y[~selected] = 0.0
    return y, selected


def lrent_soft_labels(prob_map: np.ndarray, thresholds: np.ndarray | float, alpha: float,
                      priors: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """LRENT's soft pseudo-labels: ``((H, W, C) float32 y, (H, W) uint8 hard labels)``.

    ``y`` is 0 and the hard label 255 where the pixel is not selected (``Z <= 1``).
    ``thresholds`` are CBST's ``exp(-k_c)`` (in the units of ``p``, or of ``q * p`` with
    ``priors``: :func:`cbst_tf.algos.compute_thresholds`); ``alpha`` is ``selftrain.lr_weight``.
    """
    a = check_alpha(alpha)
    values = potentials(prob_map, priors)
    height, width, num_classes = values.shape
    if num_classes > IGNORE:
        raise CbstError(f"prob_map: {num_classes} classes do not fit uint8 train ids below {IGNORE}")
    t = check_thresholds(thresholds, num_classes, "cbst")
    if priors is not None:
        t = t * prior_scale(np.asarray(priors))  # into the scaled units of ``values``
    flat = values.reshape(-1, num_classes)
    soft = np.zeros(flat.shape, dtype=np.float32)
    labels = np.full(flat.shape[0], IGNORE, dtype=np.uint8)
    for start in range(0, flat.shape[0], _CHUNK):
        bits = to_bits(flat[start:start + _CHUNK])
        check_bits(bits, "prob_map")
        ratio, log_ratio = log_ratios(bits.view(np.float16).astype(np.float64), t)
        y, selected = lrent_from_log_ratios(ratio, log_ratio, a)
        best = ratio.argmax(axis=1)  # Eq. 8's class = argmax y (ties: the lowest class id)
        soft[start:start + _CHUNK] = y
        labels[start:start + _CHUNK][selected] = best[selected]
    return soft.reshape(height, width, num_classes), labels.reshape(height, width)


# ----------------------------------------------------------------------------- target subset


def image_class_confidence(prob_map: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per class c: (sum of the confidences ``max_k p_k`` of the pixels predicted as c, their count).

    Predicted class and confidence as in the label step's histograms (float32 argmax, ties:
    the lowest class id; no priors: the authors' score is on the network's confidence).
    """
    values = potentials(prob_map)
    num_classes = values.shape[-1]
    classes, bits = predicted(values)
    conf = bits.view(np.float16).astype(np.float64)
    sums = np.bincount(classes, weights=conf, minlength=num_classes)
    counts = np.bincount(classes, minlength=num_classes).astype(np.int64)
    return sums, counts


def class_balanced_score(sums: Sequence[float], counts: Sequence[int]) -> float:
    """The authors' per-image score: mean over the predicted classes of their mean confidence."""
    s = np.asarray(sums, dtype=np.float64)
    n = np.asarray(counts, dtype=np.int64)
    if s.shape != n.shape or s.ndim != 1:
        raise CbstError(f"class_balanced_score: sums {s.shape} and counts {n.shape} must be two (C,) arrays")
    present = n > 0
    if not present.any():
        raise CbstError("class_balanced_score: the image has no pixels")
    return float(np.mean(s[present] / n[present]))


def subset_size(num_images: int, portion: float) -> int:
    """``max(1, round(portion * N))`` images (505 of 2,975 for ``portion = 0.16975``)."""
    if not 0.0 < portion <= 1.0:
        raise CbstError(f"selftrain.target_subset: expected a value in (0, 1], got {portion!r}")
    if num_images < 1:
        raise CbstError("selftrain.target_subset: no target images to select from")
    return max(1, int(round(float(num_images) * float(portion))))


def select_by_score(scores: Sequence[float], portion: float) -> np.ndarray:
    """Indices (ascending) of the ``subset_size`` images with the highest scores.

    Ties are broken by position (the earlier image wins), so the choice is deterministic.
    """
    s = np.asarray(scores, dtype=np.float64)
    if s.ndim != 1 or not np.isfinite(s).all():
        raise CbstError("class-balanced scores: expected one finite score per image")
    keep = subset_size(s.size, portion)
    order = np.lexsort((np.arange(s.size), -s))  # by score descending, then by index
    return np.sort(order[:keep])
