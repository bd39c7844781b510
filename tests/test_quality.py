"""Pseudo-label precision/recall counts against a per-pixel loop."""

from __future__ import annotations

import numpy as np
import pytest

from cbst_tf.algos.quality import quality_counts, quality_summary


def loop_counts(pseudo, truth, c):
    selected, correct, true = np.zeros(c, int), np.zeros(c, int), np.zeros(c, int)
    for p, t in zip(pseudo.ravel().tolist(), truth.ravel().tolist(), strict=True):
        if t >= c:
            continue
        true[t] += 1
        if p < c:
            selected[p] += 1
            correct[p] += p == t
    return np.stack([selected, correct, true])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_counts_match_loop(seed):
    rng = np.random.default_rng(seed)
    c = 7
    truth = rng.integers(0, c, (23, 31)).astype(np.uint8)
    truth[rng.random(truth.shape) < 0.2] = 255
    pseudo = np.where(rng.random(truth.shape) < 0.6, truth, rng.integers(0, c, truth.shape)).astype(np.uint8)
    pseudo[rng.random(truth.shape) < 0.3] = 255
    pseudo[0, 0], truth[0, 0] = 9, 9  # ids >= C count nowhere
    np.testing.assert_array_equal(quality_counts(pseudo, truth, c), loop_counts(pseudo, truth, c))


def test_summary_numbers():
    # class 0: 4 selected, 3 right, 6 true; class 1: none selected, 2 true; class 2: 2 selected, 0 right, 0 true
    counts = np.array([[4, 0, 2], [3, 0, 0], [6, 2, 0]])
    s = quality_summary(counts)
    assert s["precision"] == [0.75, None, 0.0]
    assert s["recall"] == [0.5, 0.0, None]
    assert s["coverage"] == [4 / 6, 0.0, None]
    assert s["overall_precision"] == pytest.approx(3 / 6) and s["overall_recall"] == pytest.approx(3 / 8)


def test_shape_errors():
    with pytest.raises(ValueError, match="differ in shape"):
        quality_counts(np.zeros((2, 2)), np.zeros((2, 3)), 3)
    with pytest.raises(ValueError, match="differ in shape"):  # same size, other shape
        quality_counts(np.zeros((3, 2)), np.zeros((2, 3)), 3)
    with pytest.raises(ValueError, match=r"\(3, C\)"):
        quality_summary(np.zeros((2, 5)))
