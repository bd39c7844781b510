"""CRST (issue 30, phase 1): MR losses, LRENT soft labels, the subset score, the config keys.

Every algorithm is checked against a slow reference written here: the MR regularisers and
their gradients w.r.t. the logits in float64 numpy (the analytic gradients themselves
checked by finite differences), LRENT against a per-pixel loop that runs the official
``label_selection`` formulas, the class-balanced score against a per-pixel loop.
"""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
import tensorflow as tf

from cbst_tf.algos import assign_pseudo_labels, compute_thresholds, quantise
from cbst_tf.algos.crst import (
    REGULARIZERS,
    class_balanced_score,
    image_class_confidence,
    lrent_soft_labels,
    select_by_score,
    subset_size,
)
from cbst_tf.algos.histogram import prior_scale
from cbst_tf.config import SelfTrainConfig, load_config
from cbst_tf.errors import CbstError, ConfigError
from cbst_tf.selftrain.logit_cache import probs_from_logits
from cbst_tf.selftrain.soft_labels import SoftLabeller, soft_labels_from_logits
from cbst_tf.train.crst_loss import (
    confidence_regularizer,
    regularized_loss,
    regularized_pixels,
    regularized_sums,
    soft_cross_entropy_loss,
    soft_cross_entropy_sum,
)
from cbst_tf.train.loss import masked_cross_entropy_sum, valid_pixel_count

MR = ("mrkld", "mrent", "mrl2")


# ----------------------------------------------------------------------------- numpy references


def softmax64(z: np.ndarray) -> np.ndarray:
    z = np.asarray(z, np.float64)
    e = np.exp(z - z.max())
    return e / e.sum()


def r_value(p: np.ndarray, kind: str) -> float:
    """The paper's regularisers of one pixel's probabilities."""
    k = p.size
    return {"mrkld": -np.sum(np.log(p)) / k, "mrent": np.sum(p * np.log(p)), "mrl2": np.sum(p * p)}[kind]


def r_grad(p: np.ndarray, kind: str) -> np.ndarray:
    """d r / d logits, analytic."""
    r = r_value(p, kind)
    return {"mrkld": p - 1.0 / p.size, "mrent": p * (np.log(p) - r), "mrl2": 2.0 * p * (p - r)}[kind]


def reference_loss(labels, logits, is_target, kind, weight):
    """(loss, d loss / d logits) of CE mean + weight * mean r over pseudo-labelled target pixels."""
    ce, n, reg, m = 0.0, 0, 0.0, 0
    g_ce = np.zeros(logits.shape)
    g_r = np.zeros(logits.shape)
    for idx in np.ndindex(labels.shape):
        if labels[idx] == 255:
            continue
        p = softmax64(logits[idx])
        ce -= np.log(p[labels[idx]])
        n += 1
        g_ce[idx] = p - np.eye(p.size)[labels[idx]]
        if is_target[idx[0]]:
            reg += r_value(p, kind)
            m += 1
            g_r[idx] = r_grad(p, kind)
    loss = ce / max(n, 1) + weight * reg / max(m, 1)
    return loss, g_ce / max(n, 1) + weight * g_r / max(m, 1)


def batch(seed=0, shape=(3, 4, 5), classes=6, scale=3.0):
    rng = np.random.default_rng(seed)
    logits = rng.normal(scale=scale, size=(*shape, classes)).astype(np.float32)
    labels = rng.integers(0, classes, size=shape).astype(np.int32)
    labels[rng.random(shape) < 0.3] = 255
    is_target = np.array([True, False, True][: shape[0]])
    return labels, logits, is_target


def loss_and_grad(fn, logits):
    z = tf.constant(logits)
    with tf.GradientTape() as tape:
        tape.watch(z)
        loss = fn(z)
    return loss.numpy(), tape.gradient(loss, z).numpy()


def counts(labels, is_target):
    n = float(valid_pixel_count(labels))
    m = float(np.sum((labels != 255) & is_target[:, None, None]))
    return tf.constant(n), tf.constant(m)


# ----------------------------------------------------------------------------- MR regularisers


@pytest.mark.parametrize("kind", MR)
def test_reference_gradients_are_the_finite_differences_of_the_reference(kind):
    """The analytic gradients used as reference agree with central differences (float64)."""
    z = np.random.default_rng(1).normal(scale=2.0, size=7)
    h = 1e-6
    numeric = np.array([(r_value(softmax64(z + h * e), kind) - r_value(softmax64(z - h * e), kind)) / (2 * h)
                        for e in np.eye(z.size)])
    np.testing.assert_allclose(r_grad(softmax64(z), kind), numeric, atol=1e-8)


@pytest.mark.parametrize("kind", MR)
def test_regulariser_value_and_gradient_match_numpy(kind):
    labels, logits, is_target = batch()
    n, m = counts(labels, is_target)
    weight = 0.1
    fn = lambda z: regularized_loss(labels, z, is_target, regularizer=kind, weight=weight,  # noqa: E731
                                    global_count=n, global_reg_count=m)
    loss, grad = loss_and_grad(fn, logits)
    want, want_grad = reference_loss(labels, logits, is_target, kind, weight)
    np.testing.assert_allclose(loss, want, rtol=1e-5)
    np.testing.assert_allclose(grad, want_grad, rtol=1e-4, atol=1e-7)
    # The regulariser really contributes (the test would not notice a missing term otherwise).
    assert abs(want - reference_loss(labels, logits, is_target, kind, 0.0)[0]) > 1e-3


def test_mrkld_gradient_is_p_minus_one_over_k():
    _, logits, _ = batch(seed=2)
    z = tf.constant(logits)
    with tf.GradientTape() as tape:
        tape.watch(z)
        total = tf.reduce_sum(confidence_regularizer(z, "mrkld"))
    p = tf.nn.softmax(z).numpy()
    np.testing.assert_allclose(tape.gradient(total, z).numpy(), p - 1.0 / logits.shape[-1], atol=1e-6)


@pytest.mark.parametrize("kind", MR)
def test_regulariser_is_applied_only_to_pseudo_labelled_target_pixels(kind):
    labels, logits, is_target = batch(seed=3)
    _, s = regularized_sums(labels, logits, is_target, kind)
    m = tf.reduce_sum(regularized_pixels(labels, is_target))
    want = sum(r_value(softmax64(logits[idx]), kind) for idx in np.ndindex(labels.shape)
               if labels[idx] != 255 and is_target[idx[0]])
    np.testing.assert_allclose(float(s), want, rtol=1e-5)
    assert float(m) == np.sum((labels != 255) & is_target[:, None, None]) > 0
    # Changing source pixels or unlabelled target pixels changes nothing.
    other = logits.copy()
    other[~is_target] = 50.0
    other[labels == 255] = -50.0
    np.testing.assert_allclose(float(regularized_sums(labels, other, is_target, kind)[1]), want, rtol=1e-5)


@pytest.mark.parametrize("kind", MR)
def test_weight_zero_is_the_plain_cross_entropy_bit_for_bit(kind):
    """Value and gradient equal train/loop.py's loss exactly (+0 and -0 compare equal)."""
    labels, logits, is_target = batch(seed=4)
    n, m = counts(labels, is_target)
    plain = lambda z: masked_cross_entropy_sum(labels, z)[0] / tf.maximum(n, 1.0)  # noqa: E731 (the loop's)
    zero = lambda z: regularized_loss(labels, z, is_target, regularizer=kind, weight=0.0,  # noqa: E731
                                      global_count=n, global_reg_count=m)
    (a, ga), (b, gb) = loss_and_grad(plain, logits), loss_and_grad(zero, logits)
    assert a.tobytes() == b.tobytes()
    np.testing.assert_array_equal(ga, gb)
    none = lambda z: regularized_loss(labels, z, is_target, regularizer="none", weight=0.1,  # noqa: E731
                                      global_count=n, global_reg_count=m)
    c, gc = loss_and_grad(none, logits)
    assert c.tobytes() == a.tobytes() and gc.tobytes() == ga.tobytes()


@pytest.mark.parametrize("kind", MR)
def test_replica_shares_add_up_to_the_global_batch_loss(kind):
    """Split the batch as two replicas would: with all-reduced counts the shares sum to the whole."""
    labels, logits, is_target = batch(seed=5, shape=(4, 3, 3))
    is_target = np.array([True, False, False, True])
    n, m = counts(labels, is_target)
    whole = regularized_loss(labels, logits, is_target, regularizer=kind, weight=0.3, global_count=n,
                             global_reg_count=m)
    parts = [regularized_loss(labels[s], logits[s], is_target[s], regularizer=kind, weight=0.3, global_count=n,
                              global_reg_count=m) for s in (slice(0, 2), slice(2, 4))]
    np.testing.assert_allclose(float(parts[0] + parts[1]), float(whole), rtol=1e-6)


def test_no_pseudo_labelled_target_pixel_leaves_the_cross_entropy():
    labels, logits, _ = batch(seed=6)
    is_target = np.zeros(labels.shape[0], bool)  # a batch of source images only (official: term dropped)
    n, m = counts(labels, is_target)
    assert float(m) == 0.0
    got = regularized_loss(labels, logits, is_target, regularizer="mrkld", weight=1.0, global_count=n,
                           global_reg_count=m)
    np.testing.assert_allclose(float(got), reference_loss(labels, logits, is_target, "mrkld", 0.0)[0], rtol=1e-6)


def test_mrent_is_finite_where_probabilities_underflow():
    logits = np.array([[[[0.0, -200.0, -300.0]]]], np.float32)  # p underflows to 0 in float32
    loss, grad = loss_and_grad(lambda z: tf.reduce_sum(confidence_regularizer(z, "mrent")), logits)
    assert np.isfinite(loss) and np.isfinite(grad).all()


def test_soft_cross_entropy_matches_numpy_and_one_hot_is_the_hard_loss():
    labels, logits, _ = batch(seed=7)
    rng = np.random.default_rng(7)
    soft = rng.random(logits.shape).astype(np.float32)
    soft /= soft.sum(-1, keepdims=True)
    soft[labels == 255] = 0.0
    s, c = soft_cross_entropy_sum(soft, logits)
    want = sum(-np.sum(soft[i] * np.log(softmax64(logits[i]))) for i in np.ndindex(labels.shape))
    np.testing.assert_allclose(float(s), want, rtol=1e-5)
    assert float(c) == np.sum(labels != 255)
    one_hot = np.eye(logits.shape[-1], dtype=np.float32)[np.where(labels == 255, 0, labels)]
    one_hot[labels == 255] = 0.0
    hard, count = masked_cross_entropy_sum(labels, logits)
    np.testing.assert_allclose(float(soft_cross_entropy_sum(one_hot, logits)[0]), float(hard), rtol=1e-6)
    np.testing.assert_allclose(float(soft_cross_entropy_loss(soft, logits, c)), want / float(c), rtol=1e-5)
    assert float(count) == float(soft_cross_entropy_sum(one_hot, logits)[1])


# ----------------------------------------------------------------------------- LRENT solver and selection


def official_pixel(v, lam, alpha):
    """yzou2/CRST crst_seg.py label_selection, lines 679-695, for one pixel (float64):
    (y, hard label, the margin reg_score - sel_score; unlabelled where it is >= 0)."""
    y = np.power(v / lam, 1.0 / alpha)
    y = y / y.sum()
    reg_score = np.sum(-y * np.log(v + 1e-32) + alpha * y * np.log(y + 1e-32))
    sel_score = np.sum(-y * np.log(lam + 1e-32))
    return y, int(np.argmax(y)), reg_score - sel_score


def exactly_selected(v, lam, alpha) -> bool:
    """The paper's rule, cost -alpha log Z < 0, i.e. Z = sum_k (v_k / lambda_k)^(1/alpha) > 1, in
    exact rational arithmetic (1/alpha an integer; v and lambda are float16 values)."""
    n = round(1.0 / alpha)
    assert abs(n - 1.0 / alpha) < 1e-9
    return sum((Fraction(float(a)) / Fraction(float(b))) ** n for a, b in zip(v, lam, strict=True)) > 1


def random_probs(seed, shape=(9, 11), classes=5, scale=2.5):
    z = np.random.default_rng(seed).normal(scale=scale, size=(*shape, classes))
    e = np.exp(z - z.max(-1, keepdims=True))
    return (e / e.sum(-1, keepdims=True)).astype(np.float32)


def random_priors(seed, shape, classes):
    q = np.random.default_rng(seed).random((*shape, classes)).astype(np.float32) + 0.05
    return q / q.sum(axis=(0, 1))


@pytest.mark.parametrize("alpha", [0.25, 0.5, 0.05])
@pytest.mark.parametrize("with_priors", [False, True])
def test_lrent_matches_the_official_formulas_pixel_by_pixel(alpha, with_priors):
    """y is the official formula's; the selection is the paper's Z > 1 decided exactly, which is the
    official float test wherever that test's margin exceeds its rounding error. Thresholds from the
    same map: each class's threshold pixel has a ratio of exactly 1 (the official test's noise)."""
    probs = random_probs(10)
    priors = random_priors(11, probs.shape[:2], probs.shape[-1]) if with_priors else None
    t = compute_thresholds([probs], 0.3, "cbst", priors=priors)
    soft, labels = lrent_soft_labels(probs, t, alpha, priors)
    v = quantise(probs, priors).view(np.float16).astype(np.float64)  # the label step's potentials
    lam = t * (prior_scale(priors) if with_priors else 1.0)
    selected = clear = 0
    for idx in np.ndindex(labels.shape):
        y, label, margin = official_pixel(v[idx], lam, alpha)
        keep = exactly_selected(v[idx], lam, alpha)
        assert labels[idx] == (label if keep else 255), (idx, v[idx], lam)
        if abs(margin) > 1e-9:
            clear += 1
            assert keep == (margin < 0)
        if keep:
            selected += 1
            np.testing.assert_allclose(soft[idx], y, rtol=2.0**-23, atol=1e-30)
        else:
            assert not soft[idx].any()
    assert 0 < selected < labels.size and clear > 0.9 * labels.size  # both outcomes are exercised


@pytest.mark.parametrize("alpha", [0.25, 1.0])
def test_lrent_selects_every_cbst_pixel_with_the_same_class(alpha):
    probs = random_probs(12, shape=(20, 20))
    t = compute_thresholds([probs], 0.2, "cbst")
    cbst = assign_pseudo_labels(probs, t, "cbst")
    _, lrent = lrent_soft_labels(probs, t, alpha)
    chosen = cbst != 255
    np.testing.assert_array_equal(lrent[chosen], cbst[chosen])
    assert ((lrent != 255).sum() > chosen.sum()) == (alpha == 1.0)  # Z = sum of ratios: many more
    # As alpha -> 0, Z -> 0 below the thresholds: CBST's Eq. 8 (no class has p = 0 here).
    np.testing.assert_array_equal(lrent_soft_labels(probs, t, 0.001)[1], cbst)


def test_lrent_ties_and_special_thresholds():
    p = np.array([[[0.5, 0.5, 0.0, 0.0],       # ratios (1, 0, 0, 0): Z = 1, cost 0: unlabelled
                   [0.5, 0.0, 0.25, 0.25],     # more positive ratios: Z = 1 + 2**-8 + 2**-4, selected
                   [0.0, 1.0, 0.0, 0.0],       # its class has threshold +inf: y = 0 there, Z = 0
                   [0.0, 0.0, 0.0, 1.0]]],     # ratio 2 on class 3
                 np.float32)
    t = np.array([0.5, np.inf, 1.0, 0.5])
    soft, labels = lrent_soft_labels(p, t, 0.25)
    assert labels.tolist() == [[255, 0, 255, 3]]
    assert not soft[0, 0].any() and not soft[0, 2].any()
    np.testing.assert_allclose(soft[0, 1], np.array([1.0, 0.0, 2.0**-8, 2.0**-4]) / (1 + 2.0**-8 + 2.0**-4))
    np.testing.assert_array_equal(soft[0, 3], [0.0, 0.0, 0.0, 1.0])
    # A zero threshold reaches every value (Eq. 8's convention): its classes share y equally.
    soft, labels = lrent_soft_labels(np.full((1, 2, 4), 0.25, np.float32), [0.5, 0.0, 0.0, 0.5], 0.25)
    np.testing.assert_array_equal(soft[0], [[0.0, 0.5, 0.5, 0.0]] * 2)
    assert labels.tolist() == [[1, 1]]


def test_lrent_bad_inputs():
    probs = random_probs(13, shape=(2, 2), classes=3)
    with pytest.raises(CbstError, match="lr_weight: expected a finite positive number"):
        lrent_soft_labels(probs, [0.5, 0.5, 0.5], 0.0)
    with pytest.raises(CbstError, match="thresholds: expected 3 values"):
        lrent_soft_labels(probs, [0.5, 0.5], 0.25)
    bad = probs.copy()
    bad[0, 0, 0] = np.nan
    with pytest.raises(CbstError, match="NaN"):
        lrent_soft_labels(bad, [0.5, 0.5, 0.5], 0.25)


# ----------------------------------------------------------------------------- soft labels from the cache


def ulps(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.abs(a.astype(np.float64) - b) / np.spacing(np.maximum(np.abs(a), np.abs(b)).astype(np.float32))


@pytest.mark.parametrize("with_priors", [False, True])
def test_soft_labels_rebuilt_from_the_float16_stride_cache_equal_the_direct_computation(with_priors):
    """The input pipeline's rebuild (TF, from the cached float16 stride-8 logits) equals the numpy
    solver on the label step's probabilities: hard labels exactly, y to one float32 ulp (both
    compute y in float64; TF's and numpy's exp/log may differ in the last float64 bit)."""
    rng = np.random.default_rng(20)
    c, size = 6, (37, 53)
    logits = [rng.normal(scale=3.0, size=(5, 7, c)).astype(np.float16) for _ in range(2)]  # two test passes
    probs = probs_from_logits(logits, size).numpy()  # what the label step's thresholds saw
    priors = random_priors(21, size, c) if with_priors else None
    t = compute_thresholds([probs], 0.25, "cbst", priors=priors)
    labeller = SoftLabeller(t, 0.25, c)
    soft, labels = soft_labels_from_logits(logits, size, labeller, priors)
    want_soft, want_labels = lrent_soft_labels(probs, t, 0.25, priors)
    np.testing.assert_array_equal(labels.numpy(), want_labels)
    assert 0 < (want_labels != 255).sum() < want_labels.size
    got = soft.numpy()
    assert got.dtype == np.float32 and ulps(got, want_soft).max() <= 1.0


@pytest.mark.parametrize("with_priors", [False, True])
def test_label_step_labeller_is_the_soft_labellers_selection(with_priors):
    """HardOfSoft (the label step's XLA-compiled labels-only path) gives exactly the numpy
    solver's hard labels and their counts, and SoftLabeller's."""
    from cbst_tf.selftrain.soft_labels import HardOfSoft

    rng = np.random.default_rng(23)
    c, size = 6, (41, 59)
    probs = probs_from_logits([rng.normal(scale=3.0, size=(6, 8, c)).astype(np.float16)], size).numpy()
    priors = random_priors(24, size, c) if with_priors else None
    t = compute_thresholds([probs], 0.3, "cbst", priors=priors)
    labels, counts = HardOfSoft(t, 0.25, c)(tf.constant(probs), priors)
    _, want = lrent_soft_labels(probs, t, 0.25, priors)
    assert 0 < (want != 255).sum() < want.size
    np.testing.assert_array_equal(labels, want)
    np.testing.assert_array_equal(counts, np.bincount(want.ravel(), minlength=256))
    np.testing.assert_array_equal(SoftLabeller(t, 0.25, c)(probs, priors)[1].numpy(), want)


def test_soft_labels_from_float16_logits_stay_within_the_rounding_bound():
    """Against float32 logits (the official precision): y = softmax(log(v / lambda) / alpha), so a
    logit error d moves log p by <= 2d, the float16 potential by <= 2 * 2**-11 more in log, and log y
    by twice that over alpha. Logits in [-3, 3] keep every potential a normal float16."""
    rng = np.random.default_rng(22)
    c, size, alpha = 6, (29, 41), 0.25
    z32 = np.clip(rng.normal(scale=1.5, size=(4, 6, c)), -3, 3).astype(np.float32)
    z16 = z32.astype(np.float16)
    p16 = probs_from_logits([z16], size)
    p32 = tf.nn.softmax(tf.image.resize(z32[np.newaxis], size, method="bilinear")[0], axis=-1)
    t = compute_thresholds([p16.numpy()], 0.3, "cbst")
    labeller = SoftLabeller(t, alpha, c)
    (y16, l16), (y32, l32) = labeller(p16), labeller(p32)
    y16, y32, l16, l32 = y16.numpy(), y32.numpy(), l16.numpy(), l32.numpy()
    d = float(np.abs(z16.astype(np.float32) - z32).max()) + 1e-6  # + float32 resize/softmax rounding
    step = (2 * d + 2 * 2.0**-11) / alpha  # bound on |delta log(v / lambda)| / alpha
    both = (l16 != 255) & (l32 != 255)
    assert both.sum() > 0.3 * both.size
    err = np.abs(np.log(y16[both]) - np.log(y32[both]))
    assert err.max() <= 2 * step, (err.max(), 2 * step)
    # Selection and class flip only where the float32 decision is within one step of its boundary.
    v = quantise(p32.numpy()).view(np.float16).astype(np.float64)
    s = np.log(v / t) / alpha
    log_z = np.log(np.exp(s).sum(-1))
    assert (np.abs(log_z[(l16 != 255) != (l32 != 255)]) <= step).all()
    top2 = np.sort(s, axis=-1)[..., -2:]
    assert ((top2[..., 1] - top2[..., 0])[both & (l16 != l32)] <= 2 * step).all()


# ----------------------------------------------------------------------------- target subset score


def test_class_balanced_score_matches_a_pixel_loop():
    probs = random_probs(30, shape=(6, 7), classes=4)
    sums, n = image_class_confidence(probs)
    per_class: dict[int, list[float]] = {}
    for idx in np.ndindex(probs.shape[:2]):
        k = int(np.argmax(probs[idx]))
        per_class.setdefault(k, []).append(float(np.float16(probs[idx][k])))
    want = np.mean([np.mean(v) for v in per_class.values()])
    assert n.sum() == 42 and set(np.flatnonzero(n)) == set(per_class)
    np.testing.assert_allclose(class_balanced_score(sums, n), want, rtol=1e-12)
    # Class-balanced: a large confident class does not drown a small unsure one.
    assert class_balanced_score([90.0, 0.5], [100, 1]) == pytest.approx((0.9 + 0.5) / 2)


def test_subset_keeps_the_top_scores_with_ties_by_position():
    assert subset_size(2975, 0.16975) == 505
    assert subset_size(3, 0.01) == 1
    assert select_by_score([0.2, 0.9, 0.5, 0.9, 0.1], 0.4).tolist() == [1, 3]
    assert select_by_score([0.5, 0.5, 0.5], 0.6).tolist() == [0, 1]
    with pytest.raises(CbstError, match="target_subset"):
        subset_size(10, 0.0)
    with pytest.raises(CbstError, match="no pixels"):
        class_balanced_score([0.0, 0.0], [0, 0])


# ----------------------------------------------------------------------------- config keys


def test_config_defaults_are_cbst_and_the_official_weights():
    cfg = load_config()
    assert (cfg.selftrain.regularizer, cfg.selftrain.target_subset) == ("none", None)
    assert (cfg.selftrain.mr_weight, cfg.selftrain.lr_weight) == (0.1, 0.25)
    import typing

    assert typing.get_args(typing.get_type_hints(SelfTrainConfig)["regularizer"]) == REGULARIZERS


@pytest.mark.parametrize("override, needle", [
    ("selftrain.regularizer=mrkl", "expects one of 'none', 'mrkld', 'mrent', 'mrl2', 'lrent'"),
    ("selftrain.mr_weight=-0.1", "key 'selftrain.mr_weight' = -0.1 is out of range [0, 100]"),
    ("selftrain.lr_weight=-0.25", "key 'selftrain.lr_weight' = -0.25 is out of range [0, 100]"),
    ("selftrain.target_subset=0", "key 'selftrain.target_subset' = 0.0 is out of range (0, 1]"),
    ("selftrain.target_subset=1.5", "is out of range (0, 1]"),
])
def test_config_ranges(override, needle):
    with pytest.raises(ConfigError, match=None) as err:
        load_config(None, [override])
    assert needle in str(err.value)


def test_a_regulariser_needs_cbst_labels():
    with pytest.raises(ConfigError, match="needs selftrain.method cbst or cbst_sp, got 'st'"):
        load_config(None, ["selftrain.method=st", "selftrain.regularizer=lrent"])
    assert load_config(None, ["selftrain.method=cbst", "selftrain.regularizer=mrl2"]).selftrain.regularizer == "mrl2"

