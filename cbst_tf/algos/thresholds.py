"""Self-paced thresholds ``exp(-k)`` (Algorithm 1, ST) and ``exp(-k_c)`` (Algorithm 2, CBST).

Both algorithms sort confidences in descending order and read off the value at rank
``p * N`` (``N`` = all pixels for ST; ``N_c`` = pixels predicted as class ``c`` for CBST).
The paper leaves the exact rank ambiguous, so two conventions are offered:

``rank="official"`` (default; yzou2/CBST ``self-paced-self-trained-segresnet.py``):
    ``m = floor(p * N)``; the threshold is the value at 0-based index ``m - 1`` of the
    descending list, i.e. the ``m``-th largest value. Pseudo-labels are kept where
    ``value >= threshold`` (ratio ``>= 1`` in Eq. 8), so with distinct values exactly the
    top ``m`` pixels are selected; values tied with the threshold are all selected.
``rank="paper"`` (section 4.3 text, "the probability ranked at round(p * N_c)"):
    ``m = round(p * N)`` as a 1-based rank, with Python's ``round`` (half to even); we read
    the text rather than Algorithm 1/2's ``M[len_th]``, whose 0/1-based indexing is not
    stated. Selection is the same ``>=`` rule.

``m`` is computed as ``N * p`` in float64, exactly like the official code's
``int(math.floor(len_cls * init_tgt_port))``. When ``m = 0`` (no pixel predicted as the
class, or ``p * N_c < 1``) the threshold is ``+inf``: ``p / inf = 0 < 1``, so the class
selects nothing, exactly, even for potentials scaled above 1. (The official code writes
1.0, which still selects saturated ``p = 1.0`` pixels.)

All values are float16-quantised potentials (see :mod:`cbst_tf.algos.histogram`),
so thresholds are float16 numbers (divided by the prior scale when priors are used).
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np

from cbst_tf.algos.histogram import ConfidenceHistogram
from cbst_tf.errors import CbstError

MODES = ("st", "cbst")
RANKS = ("official", "paper")


def check_mode(mode: str) -> None:
    """One-line error unless ``mode`` is ``st`` (Algorithm 1) or ``cbst`` (Algorithm 2)."""
    if mode not in MODES:
        raise CbstError(f"mode: expected one of {', '.join(MODES)}, got {mode!r}")


def selected_count(num_pixels: int, portion: float, rank: str = "official") -> int:
    """``m``: how many of ``num_pixels`` descending values lie at or above the threshold rank."""
    if rank not in RANKS:
        raise CbstError(f"rank: expected one of {', '.join(RANKS)}, got {rank!r}")
    if not 0.0 < portion <= 1.0:
        raise CbstError(f"portion: expected a value in (0, 1], got {portion!r}")
    product = float(num_pixels) * float(portion)
    return int(math.floor(product)) if rank == "official" else int(round(product))


def _values_at_rank(counts: np.ndarray, portion: float, rank: str) -> np.ndarray:
    """Per row of a (K, 65536) bit-pattern histogram: the m-th largest float16 value (or inf)."""
    totals = counts.sum(axis=1)
    m = np.array([selected_count(int(n), portion, rank) for n in totals], dtype=np.int64)
    # tail[k, b] = number of values with bit pattern >= b: non-increasing in b, so the
    # m-th largest value has the last bit pattern b with tail >= m.
    tail = np.cumsum(counts[:, ::-1], axis=1)[:, ::-1]
    bits = (tail >= m[:, None]).sum(axis=1) - 1
    values = np.clip(bits, 0, None).astype(np.uint16).view(np.float16).astype(np.float64)
    values[m == 0] = np.inf
    return values


def thresholds_from_histogram(hist: ConfidenceHistogram, portion: float, mode: str,
                              rank: str = "official") -> np.ndarray:
    """(C,) float64 thresholds from a :class:`ConfidenceHistogram` (see module docstring)."""
    check_mode(mode)
    if mode == "st":
        # Algorithm 1: one k over the maxima of all pixels, whatever their class.
        value = _values_at_rank(hist.counts.sum(axis=0, keepdims=True), portion, rank)[0]
        out = np.full(hist.num_classes, value, dtype=np.float64)
    else:
        out = _values_at_rank(hist.counts, portion, rank)
    if hist.scale is not None:
        out = out / hist.scale  # exact: the scale is a power of two
    return out


def compute_thresholds(prob_maps: Iterable[np.ndarray], portion: float, mode: str,
                       priors: np.ndarray | None = None, rank: str = "official",
                       subsample: int = 1) -> np.ndarray:
    """Per-class thresholds ``exp(-k_c)``, shape (C,), streaming over ``prob_maps``.

    ``mode="st"``: Algorithm 1 (with ``priors``: the appendix's ST-SP), one global value
    returned as C copies. ``mode="cbst"``: Algorithm 2 (with ``priors``: CBST-SP, Eq. 9),
    ranking, per class c, the maximum potential of the pixels whose argmax is c.
    ``subsample=k`` keeps every k-th pixel of each class in each image (official ``[::4]``)
    for the thresholds only. Memory is bounded by one map plus ``C x 65536`` counters.
    """
    check_mode(mode)
    selected_count(0, portion, rank)  # validate before reading any map
    hist: ConfidenceHistogram | None = None
    for prob_map in prob_maps:
        if hist is None:
            if np.ndim(prob_map) != 3:
                raise CbstError(f"prob_map: expected an (H, W, C) probability map, got shape {np.shape(prob_map)}")
            hist = ConfidenceHistogram(np.shape(prob_map)[-1])
        hist.update(prob_map, priors, subsample)
    if hist is None:
        raise CbstError("prob_maps: no probability maps given")
    return thresholds_from_histogram(hist, portion, mode, rank)
