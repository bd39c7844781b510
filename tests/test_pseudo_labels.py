"""Eq. 5 / Eq. 8 / Eq. 9 solvers vs per-pixel brute force, and their link to the thresholds."""

import math

import numpy as np
import pytest

from cbst_tf.algos import assign_pseudo_labels, compute_thresholds
from cbst_tf.errors import CbstError

C = 4


def distinct_maps(seed, n=3, shape=(10, 12)):
    """Maps whose float16-quantised values are all distinct (so 'top m' is well defined)."""
    rng = np.random.default_rng(seed)
    total = n * shape[0] * shape[1] * C
    pool = rng.permutation(np.arange(1, 15000))[:total]  # distinct float16 patterns < 1.0
    vals = pool.astype(np.uint16).view(np.float16).astype(np.float32)
    return list(vals.reshape(n, *shape, C))


def potential32(m, priors=None):
    v = m.astype(np.float32)
    if priors is not None:
        v = v * (priors.astype(np.float32) * np.float32(2.0 ** -math.ceil(math.log2(float(priors.max())))))
    return v


def quantised(m, priors=None):
    return potential32(m, priors).astype(np.float16).astype(np.float64)


def brute_force(m, thresholds, priors=None, mode="cbst"):
    """Pixel by pixel. Eq. 8: argmax_c v(c)/t_c (first maximum), kept when >= 1.
    Eq. 5: the float32 argmax, kept when its float16 value >= t."""
    v = quantised(m, priors)
    scale = 1.0 if priors is None else 2.0 ** -math.ceil(math.log2(float(priors.max())))
    t = np.asarray(thresholds, dtype=np.float64) * scale
    out = np.full(m.shape[:2], 255, np.uint8)
    for i in range(m.shape[0]):
        for j in range(m.shape[1]):
            if mode == "st":
                best = int(np.argmax(potential32(m, priors)[i, j]))
                if v[i, j, best] >= t[0]:
                    out[i, j] = best
                continue
            ratios = []
            for c in range(m.shape[2]):
                if t[c] == np.inf:
                    ratios.append(0.0)
                elif t[c] == 0:
                    ratios.append(np.inf)
                else:
                    ratios.append(v[i, j, c] / t[c])
            best = int(np.argmax(ratios))
            if ratios[best] >= 1.0:
                out[i, j] = best
    return out


@pytest.mark.parametrize("portion", [0.2, 0.37, 0.5])
def test_st_selects_exactly_top_fraction(portion):
    maps = distinct_maps(0)
    t = compute_thresholds(maps, portion, "st")
    labels = [assign_pseudo_labels(m, t, "st") for m in maps]
    n = sum(m.shape[0] * m.shape[1] for m in maps)
    assert sum(int((lab != 255).sum()) for lab in labels) == math.floor(n * portion)
    for m, lab in zip(maps, labels, strict=True):
        sel = lab != 255
        # Eq. 5: the label is the argmax, and every selected pixel beats every unselected one.
        np.testing.assert_array_equal(lab[sel], m.argmax(-1)[sel])
        np.testing.assert_array_equal(lab, brute_force(m, t, mode="st"))
    tops = np.concatenate([quantised(m).max(-1)[lab != 255] for m, lab in zip(maps, labels, strict=True)])
    rest = np.concatenate([quantised(m).max(-1)[lab == 255] for m, lab in zip(maps, labels, strict=True)])
    assert tops.min() > rest.max()


@pytest.mark.parametrize("portion", [0.2, 0.5])
def test_cbst_reaches_top_of_every_class_and_matches_eq8(portion):
    maps = distinct_maps(1)
    t = compute_thresholds(maps, portion, "cbst")
    for c in range(C):
        vals = np.concatenate([quantised(m).max(-1)[m.argmax(-1) == c] for m in maps])
        top = np.sort(vals)[::-1][: math.floor(len(vals) * portion)]
        # every one of the top floor(p N_c) pixels of class c has ratio >= 1 (so is selected)...
        assert (top >= t[c]).all() and (vals >= t[c]).sum() == len(top)
    for m in maps:
        lab = assign_pseudo_labels(m, t, "cbst")
        np.testing.assert_array_equal(lab, brute_force(m, t))
        v = quantised(m)
        top_of_own_class = v.max(-1) >= t[m.argmax(-1)]
        assert (lab[top_of_own_class] != 255).all()


def test_eq8_prefers_the_class_balanced_response():
    # p = (0.6, 0.4): ST labels class 0; CBST with t = (0.9, 0.3) gives ratios (0.67, 1.33) -> class 1.
    m = np.array([[[0.6, 0.4], [0.95, 0.05], [0.5, 0.5], [0.2, 0.8]]], np.float32)
    lab = assign_pseudo_labels(m, np.array([0.9, 0.3]), "cbst")
    assert lab.tolist() == [[1, 0, 1, 1]]
    # Equal ratios go to the lower class id: 0.5/0.5 == 0.25/0.25.
    tie = np.array([[[0.5, 0.25]]], np.float32)
    assert assign_pseudo_labels(tie, np.array([0.5, 0.25]), "cbst").tolist() == [[0]]
    # Eq. 5 keeps the argmax only where it reaches the single threshold.
    assert assign_pseudo_labels(m, 0.6, "st").tolist() == [[0, 0, 255, 1]]


def test_ties_at_threshold_are_all_selected():
    rng = np.random.default_rng(2)
    m = (rng.integers(1, 4, size=(20, 20, C)) / 3).astype(np.float32)  # many duplicates
    for mode in ("st", "cbst"):
        t = compute_thresholds([m], 0.3, mode)
        lab = assign_pseudo_labels(m, t, mode)
        np.testing.assert_array_equal(lab, brute_force(m, t, mode=mode))
        assert (lab != 255).sum() >= math.floor(0.3 * 400)


@pytest.mark.parametrize("chunk", [7, 1 << 16])
def test_random_maps_match_brute_force_with_priors(chunk, monkeypatch):
    monkeypatch.setattr("cbst_tf.algos.pseudo_labels._CHUNK", chunk)  # blocks straddle rows
    rng = np.random.default_rng(3)
    maps = [rng.dirichlet(np.full(C, 0.5), size=(9, 11)).astype(np.float32) for _ in range(3)]
    priors = rng.random((9, 11, C)).astype(np.float32) ** 3
    priors /= priors.sum(axis=(0, 1))
    for mode in ("st", "cbst"):
        t = compute_thresholds(maps, 0.4, mode, priors=priors)
        for m in maps:
            lab = assign_pseudo_labels(m, t, mode, priors=priors)
            np.testing.assert_array_equal(lab, brute_force(m, t, priors, mode=mode))
            # Eq. 9: selected labels follow the potential, not the raw probability
            if mode == "st":
                sel = lab != 255
                np.testing.assert_array_equal(lab[sel], (priors * m).argmax(-1)[sel])
                assert (lab[sel] != m.argmax(-1)[sel]).any()


def test_inf_selects_nothing_even_for_saturated_pixels():
    m = np.zeros((2, 3, 3), np.float32)
    m[..., 2] = 1.0  # p = 1.0 exactly: a threshold of 1.0 (official code) would select these
    t = compute_thresholds([m], 0.1, "cbst")
    assert t[0] == t[1] == np.inf
    lab = assign_pseudo_labels(m, np.array([np.inf, np.inf, np.inf]), "cbst")
    assert (lab == 255).all()
    assert (assign_pseudo_labels(m, t, "cbst") == 255).all()  # floor(0.1 * 6) = 0 for class 2


def test_bad_thresholds():
    m = distinct_maps(4, n=1)[0]
    with pytest.raises(CbstError, match="expected 4 values"):
        assign_pseudo_labels(m, np.ones(3), "cbst")
    with pytest.raises(CbstError, match="one global value"):
        assign_pseudo_labels(m, np.array([0.1, 0.2, 0.3, 0.4]), "st")
    with pytest.raises(CbstError, match="non-negative"):
        assign_pseudo_labels(m, np.array([0.1, np.nan, 0.3, 0.4]), "cbst")
    with pytest.raises(CbstError, match="mode"):
        assign_pseudo_labels(m, 0.5, "cbst_sp")
