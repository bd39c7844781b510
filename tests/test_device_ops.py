"""The TensorFlow label-step kernels equal the numpy reference bit for bit."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from cbst_tf.algos import (
    ConfidenceHistogram,
    assign_pseudo_labels,
    compute_thresholds,
    thresholds_from_histogram,
)
from cbst_tf.errors import CbstError
from cbst_tf.selftrain.device_ops import DeviceHistogram, DeviceLabeller, keep_every_kth
from cbst_tf.selftrain.logit_cache import probs_from_logits

C = 5


def maps(seed, n=4, shape=(7, 9), levels=None):
    """Softmax-like maps; ``levels`` draws values from a few levels (many exact ties),
    small values reach float16's subnormal range, one class is never the maximum."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        if levels is None:
            m = rng.dirichlet(np.full(C, 0.3), size=shape).astype(np.float32)
            m[rng.random(shape) < 0.1] *= np.float32(1e-6)  # subnormal after float16 rounding
        else:
            m = rng.choice(np.asarray(levels, np.float32), size=(*shape, C))
        m[..., C - 1] = 0.0  # an empty class
        out.append(m)
    return out


def priors_for(shape, seed):
    q = np.random.default_rng(seed).uniform(0.05, 1.0, (*shape, C)).astype(np.float32)
    return q / q.sum(axis=(0, 1))  # sum_n q_n(c) = 1: values far below float16's normal range


@pytest.mark.parametrize("levels", [None, (0.0, 0.25, 0.5, 1.0)])
@pytest.mark.parametrize("with_priors", [False, True])
@pytest.mark.parametrize("subsample", [1, 3])
def test_device_histogram_equals_numpy(levels, with_priors, subsample):
    data = maps(0, levels=levels)
    priors = priors_for(data[0].shape[:2], 1) if with_priors else None
    ref = ConfidenceHistogram(C)
    dev = DeviceHistogram(C, subsample=subsample)
    for m in data:
        ref.update(m, priors=priors, subsample=subsample)
        dev.update(tf.constant(m), priors=priors)
    got = dev.result()
    assert got.counts.sum() > 0
    np.testing.assert_array_equal(got.counts, ref.counts)
    np.testing.assert_array_equal(got.predicted_pixels, ref.predicted_pixels)
    assert got.num_images == ref.num_images == len(data) and got.scale == ref.scale
    for mode in ("st", "cbst"):
        np.testing.assert_array_equal(thresholds_from_histogram(got, 0.3, mode),
                                      thresholds_from_histogram(ref, 0.3, mode))


def test_device_histogram_folds_int32_counters_before_overflow(monkeypatch):
    import cbst_tf.selftrain.device_ops as ops

    monkeypatch.setattr(ops, "_INT32_MAX", 100)  # fold after every image of 63 pixels
    data = maps(2, n=5)
    dev = DeviceHistogram(C)
    ref = ConfidenceHistogram(C)
    for m in data:
        dev.update(tf.constant(m))
        ref.update(m)
        assert dev._pending <= 100
    np.testing.assert_array_equal(dev.result().counts, ref.counts)


@pytest.mark.parametrize("mode", ["st", "cbst"])
@pytest.mark.parametrize("levels", [None, (0.0, 0.25, 0.5, 1.0)])
@pytest.mark.parametrize("with_priors", [False, True])
def test_device_labeller_equals_numpy(mode, levels, with_priors):
    data = maps(3, levels=levels)
    priors = priors_for(data[0].shape[:2], 4) if with_priors else None
    t = compute_thresholds(data, 0.4, mode, priors=priors)
    assert np.isinf(t[C - 1]) or mode == "st"  # the empty class selects nothing
    labeller = DeviceLabeller(t, mode, C)
    selected = 0
    for m in data:
        want = assign_pseudo_labels(m, t, mode, priors=priors)
        labels, counts = labeller(tf.constant(m), priors)
        np.testing.assert_array_equal(labels, want)
        np.testing.assert_array_equal(counts, np.bincount(want.ravel(), minlength=256))
        selected += int((want != 255).sum())
    assert 0 < selected < sum(m.shape[0] * m.shape[1] for m in data)


def test_zero_threshold_takes_every_pixel_in_both():
    m = maps(8, n=1)[0]
    t = np.array([0.3, 0.0, 0.3, 0.3, np.inf])
    labels, _ = DeviceLabeller(t, "cbst", C)(tf.constant(m))
    np.testing.assert_array_equal(labels, assign_pseudo_labels(m, t, "cbst"))
    assert (labels == 1).all()


def test_keep_every_kth_matches_numpy_rule():
    from cbst_tf.algos.histogram import every_kth_per_class

    classes = np.random.default_rng(5).integers(0, 4, 1000).astype(np.int32)
    for k in (1, 2, 4, 7):
        got = keep_every_kth(tf.constant(classes), k, 4).numpy()
        np.testing.assert_array_equal(got, every_kth_per_class(classes, k, 4))


def test_probs_from_logits_is_one_graph_for_every_caller():
    """Phase 1 and phase 2 get bit-identical probabilities from numpy or tensor logits."""
    rng = np.random.default_rng(6)
    logits = [rng.normal(0, 3, (4, 6, C)).astype(np.float16) for _ in range(3)]
    a = probs_from_logits(logits, (13, 21)).numpy()
    b = probs_from_logits([tf.constant(x) for x in logits], (13, 21)).numpy()
    np.testing.assert_array_equal(a, b)
    assert a.shape == (13, 21, C)
    np.testing.assert_allclose(a.sum(-1), 1.0, rtol=1e-6)
    one = probs_from_logits(logits[:1], (13, 21)).numpy()
    up = tf.image.resize(logits[0].astype(np.float32)[None], (13, 21))[0]
    np.testing.assert_allclose(one, tf.nn.softmax(up).numpy(), rtol=1e-6)


@pytest.mark.parametrize("bad, message", [(np.nan, "NaN or infinite"), (-0.5, "negative"),
                                          (np.inf, "NaN or infinite"), (7e4, "NaN or infinite")])
def test_bad_maps_raise_the_reference_errors(bad, message):
    m = maps(7, n=1)[0]
    m[2, 3, 1] = bad
    with pytest.raises(CbstError, match=message):
        ConfidenceHistogram(C).update(m)
    with pytest.raises(CbstError, match=f"img7: .*{message}"):
        DeviceHistogram(C).update(tf.constant(m), name="img7")
    with pytest.raises(CbstError, match=message):
        assign_pseudo_labels(m, np.full(C, 0.5), "cbst")
    with pytest.raises(CbstError, match=f"img7: .*{message}"):
        DeviceLabeller(np.full(C, 0.5), "cbst", C)(tf.constant(m), name="img7")


def test_labeller_rejects_bad_thresholds():
    with pytest.raises(CbstError, match="one global value"):
        DeviceLabeller(np.arange(C, dtype=float), "st", C)
    with pytest.raises(CbstError, match="non-negative"):
        DeviceLabeller(np.full(C, -1.0), "cbst", C)


def test_device_histogram_refuses_mixed_priors_like_the_reference():
    m = maps(9, n=1)[0]
    priors = priors_for(m.shape[:2], 10)
    for first, second in ((None, priors), (priors, None)):
        ref, dev = ConfidenceHistogram(C), DeviceHistogram(C)
        ref.update(m, priors=first)
        dev.update(tf.constant(m), priors=first)
        with pytest.raises(CbstError, match="priors or none"):
            ref.update(m, priors=second)
        with pytest.raises(CbstError, match="priors or none"):
            dev.update(tf.constant(m), priors=second)
