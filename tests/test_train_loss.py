"""Masked cross-entropy against a numpy reference; label 255 contributes nothing."""

import numpy as np

from cbst_tf.train.loss import masked_cross_entropy_sum, valid_pixel_count


def _reference(labels, logits):
    total, count = 0.0, 0
    for idx in np.ndindex(labels.shape):
        if labels[idx] == 255:
            continue
        z = logits[idx].astype(np.float64)
        log_p = z - (np.log(np.sum(np.exp(z - z.max()))) + z.max())
        total -= log_p[labels[idx]]
        count += 1
    return total, count


def test_masked_cross_entropy_matches_numpy():
    rng = np.random.default_rng(3)
    logits = rng.normal(scale=3.0, size=(2, 5, 4, 6)).astype("float32")
    labels = rng.integers(0, 6, size=(2, 5, 4)).astype("int32")
    labels[rng.random(labels.shape) < 0.4] = 255
    s, c = masked_cross_entropy_sum(labels, logits)
    want_s, want_c = _reference(labels, logits)
    assert float(c) == want_c == float(valid_pixel_count(labels))
    np.testing.assert_allclose(float(s), want_s, rtol=1e-5)
    # Changing the logits of ignored pixels changes nothing.
    logits2 = logits.copy()
    logits2[labels == 255] = 1e3
    np.testing.assert_allclose(float(masked_cross_entropy_sum(labels, logits2)[0]), want_s, rtol=1e-5)


def test_all_ignored_is_zero_sum_and_count():
    labels = np.full((1, 3, 3), 255, np.uint8)
    s, c = masked_cross_entropy_sum(labels, np.zeros((1, 3, 3, 4), np.float32))
    assert float(s) == 0.0 and float(c) == 0.0
