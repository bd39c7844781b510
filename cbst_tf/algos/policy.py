"""The self-paced policy: how many pseudo-labels each round, which classes to mine.

* Target portion (section 4.3, appendix A): ``p_R = min(p0 + (R - 1) * dp, p_max)``, rounds
  counted from 1; the paper uses p0 = 20%, dp = 5%, p_max = 50%.
* Source images (official code ``solve_AO.py``): how many labelled source images are mixed
  into each round's finetuning, ``floor(N * min(start + (R - 1) * step, max))`` (official:
  3% + 0.25% per round up to 6% of the source; ``N`` may also be the target's size).
* Hard-sample mining ids (official code ``mine_id_priority`` / ``mine_id``): the classes
  whose share of the target predictions is below ``mine_thresh`` = 0.1%, else the
  ``mine_id_number`` = 3 rarest classes.
"""

from __future__ import annotations

import math

import numpy as np

from cbst_tf.errors import CbstError


def _check_schedule(name: str, round_: int, start: float, step: float, maximum: float) -> None:
    if int(round_) != round_ or round_ < 1:
        raise CbstError(f"round: expected an integer >= 1 (rounds start at 1), got {round_!r}")
    if start < 0 or step < 0 or maximum < 0:
        raise CbstError(f"{name}: start, step and maximum must be non-negative, got {start}, {step}, {maximum}")


def portion_for_round(round_: int, start: float = 0.2, step: float = 0.05, maximum: float = 0.5) -> float:
    """Target pseudo-label portion ``p`` of round ``round_`` (1-based)."""
    _check_schedule("portion", round_, start, step, maximum)
    # Rounded to 12 decimals so that 0.2 + 2 * 0.05 is the intended 0.3, not 0.30000000000000004.
    return round(min(start + (int(round_) - 1) * step, maximum), 12)


def source_count(round_: int, base: int, available: int, start: float = 0.03, step: float = 0.0025,
                 maximum: float = 0.06) -> int:
    """How many source images round ``round_`` (1-based) mixes into its finetuning.

    ``min(available, floor(base * min(start + (R - 1) * step, maximum)))``: ``base`` is the
    number of source images (official) or of target images (the portion is then a
    source:target ratio), ``available`` the number of source images. The portion is not
    rounded; ``1e-9`` absorbs its binary error, so 10 x (0.7 + 0.1) gives 8 images, not 7.
    """
    _check_schedule("source_portion", round_, start, step, maximum)
    portion = min(start + (int(round_) - 1) * step, maximum)
    return min(int(available), int(math.floor(base * portion + 1e-9)))


def rare_classes(predicted_pixels: np.ndarray, threshold: float = 0.001, min_classes: int = 3) -> list[int]:
    """Classes to centre hard-sample-mining crops on, rarest first.

    ``predicted_pixels``: (C,) pixels predicted as each class in the target set (e.g.
    :attr:`ConfidenceHistogram.predicted_pixels`). Returns the classes whose share is below
    ``threshold`` (as the official code, this includes never-predicted classes, which can
    still be mined in source crops); if there is none, the ``min_classes`` rarest classes.
    Ties are broken by class id. The official loader uses the second list as a per-crop
    fallback when none of the first list's classes is in the crop; we return one list.
    """
    counts = np.asarray(predicted_pixels, dtype=np.float64)
    if counts.ndim != 1 or counts.size == 0 or (counts < 0).any() or not np.isfinite(counts).all():
        raise CbstError(f"predicted_pixels: expected a 1-D array of non-negative counts, got {counts!r}")
    total = counts.sum()
    if total <= 0:
        raise CbstError("predicted_pixels: no pixel was predicted, cannot rank classes by rarity")
    share = counts / total
    order = np.argsort(share, kind="stable")
    rare = [int(c) for c in order if share[c] < threshold]
    if rare:
        return rare
    return [int(c) for c in order[: max(0, int(min_classes))]]
