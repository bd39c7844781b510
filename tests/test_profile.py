"""ClassProfile against per-pixel loops on random probability maps."""

from __future__ import annotations

import numpy as np
import pytest

from cbst_tf.evaluate.profile import ClassProfile


def test_profile_matches_loops():
    rng = np.random.default_rng(0)
    c = 5
    probs = rng.dirichlet(np.full(c, 0.5), size=(17, 13))
    labels = rng.integers(0, c, (17, 13))
    labels[rng.random(labels.shape) < 0.1] = 255
    half = ClassProfile(c)
    half.update(probs[:8], labels[:8])
    rest = ClassProfile(c)
    rest.update(probs[8:], labels[8:])
    r = half.merge(rest).result()
    flat_p, flat_l = probs.reshape(-1, c), labels.ravel()
    keep = flat_l < c
    flat_p, flat_l = flat_p[keep], flat_l[keep]
    pred = flat_p.argmax(1)
    for k in range(c):
        is_pred, is_true = pred == k, flat_l == k
        assert r["predicted_share"][k] == pytest.approx(100 * is_pred.mean())
        assert r["true_share"][k] == pytest.approx(100 * is_true.mean())
        assert r["precision"][k] == pytest.approx(100 * (is_pred & is_true).sum() / is_pred.sum())
        assert r["recall"][k] == pytest.approx(100 * (is_pred & is_true).sum() / is_true.sum())
        assert r["confidence"][k] == pytest.approx(flat_p[is_pred, k].mean())
        assert r["p_true"][k] == pytest.approx(flat_p[is_true, k].mean())


def test_precision_top_ranks_by_confidence():
    # Class 0: the most confident half is always right, the rest always wrong.
    c = 2
    conf = np.linspace(0.505, 0.995, 100)
    probs = np.stack([conf, 1 - conf], -1)[None]
    labels = np.where(conf > 0.75, 0, 1)[None]
    prof = ClassProfile(c)
    prof.update(probs, labels)
    r = prof.result(top=0.2)
    assert r["precision_top20"][0] == pytest.approx(100.0)
    assert r["precision"][0] == pytest.approx(100 * (labels == 0).sum() / 100)
    assert r["precision_top20"][1] is None  # class 1 is never predicted
    assert prof.result(top=1.0)["precision_top100"][0] == pytest.approx(r["precision"][0])
