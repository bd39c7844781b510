"""Coupled-L2 momentum SGD and the learning-rate schedules against closed forms."""

import math

import keras
import numpy as np
import pytest

from cbst_tf.config import Config
from cbst_tf.train.optimizer import (
    CoupledSGD,
    PolySchedule,
    build_optimizer,
    current_lr,
    decayed_variables,
    make_schedule,
    round_lr,
)


def _model():
    keras.utils.set_random_seed(1)
    inp = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(4, 3, padding="same", name="conv")(inp)
    x = keras.layers.BatchNormalization(name="bn")(x)
    out = keras.layers.Conv2D(3, 1, name="cls")(x)
    return keras.Model(inp, out)


def test_decay_skips_biases_and_batchnorm():
    model = _model()
    assert sorted(v.path for v in decayed_variables(model)) == ["cls/kernel", "conv/kernel"]


def test_coupled_momentum_sgd_matches_mxnet_rule():
    model = _model()
    cls = [v for v in model.trainable_variables if v.path.startswith("cls/")]
    lr, mom, wd, mult = 0.1, 0.9, 0.05, 3.0
    opt = CoupledSGD(lr, momentum=mom, weight_decay=wd, decay=decayed_variables(model),
                     multiplied=cls, lr_mult=mult)
    variables = model.trainable_variables
    w = {v.path: np.array(v.numpy(), dtype=np.float64) for v in variables}
    m = {k: np.zeros_like(a) for k, a in w.items()}
    rng = np.random.default_rng(0)
    for _ in range(3):
        grads = [rng.normal(size=v.shape).astype("float32") for v in variables]
        opt.apply(grads, variables)
        for v, g in zip(variables, grads, strict=True):
            k = v.path
            g = g + (wd * w[k] if k.endswith("kernel") else 0.0)  # MXNet: L2 before momentum
            step_lr = lr * (mult if k.startswith("cls/") else 1.0)
            m[k] = mom * m[k] - step_lr * g
            w[k] = w[k] + m[k]
    for v in variables:
        np.testing.assert_allclose(v.numpy(), w[v.path], rtol=1e-5, atol=1e-6, err_msg=v.path)
    # BN gamma with zero gradient would stay put; with decay it would have shrunk.
    assert not np.allclose(w["bn/gamma"], 1.0)


def test_zero_gradient_decays_only_kernels():
    model = _model()
    before = {v.path: v.numpy().copy() for v in model.trainable_variables}
    opt = CoupledSGD(0.5, momentum=0.9, weight_decay=0.1, decay=decayed_variables(model))
    opt.apply([np.zeros(v.shape, "float32") for v in model.trainable_variables], model.trainable_variables)
    for v in model.trainable_variables:
        expected = before[v.path] * (1 - 0.5 * 0.1) if v.path.endswith("kernel") else before[v.path]
        np.testing.assert_allclose(v.numpy(), expected, rtol=1e-6, err_msg=v.path)


def test_poly_schedule_closed_form():
    sched = PolySchedule(0.01, 100, 0.9)
    for step in (0, 1, 37, 99, 100, 150):
        want = 0.01 * (1 - min(step, 100) / 100) ** 0.9
        assert float(sched(step)) == pytest.approx(want, rel=1e-5, abs=1e-12)


def test_round_decay_and_fixed():
    cfg = Config()
    cfg.train.lr = 1e-4
    cfg.train.schedule = "round_decay"
    for r in (1, 2, 3, 5):
        want = 1e-4 / math.sqrt(2) ** (r - 1)
        assert round_lr(1e-4, math.sqrt(2), r) == pytest.approx(want)
        assert make_schedule(cfg.train, 10, r, math.sqrt(2)) == pytest.approx(want)
    cfg.train.schedule = "fixed"
    assert make_schedule(cfg.train, 10, 4) == pytest.approx(1e-4)
    cfg.train.schedule = "poly"
    assert isinstance(make_schedule(cfg.train, 10), PolySchedule)


def test_build_optimizer_poly_follows_iterations_and_mixed_float16_scales_loss():
    cfg = Config()
    cfg.train.lr, cfg.train.schedule, cfg.train.classifier_lr_mult = 0.2, "poly", 10.0
    model = _model()
    cls = [v for v in model.trainable_variables if v.path.startswith("cls/")]
    opt = build_optimizer(cfg, model, total_steps=4, classifier_vars=cls)
    assert isinstance(opt, CoupledSGD) and opt.momentum == pytest.approx(0.9)
    assert opt._lr_mults.count(10.0) == 2
    zeros = [np.zeros(v.shape, "float32") for v in model.trainable_variables]
    opt.apply(zeros, model.trainable_variables)
    assert float(opt.learning_rate) == pytest.approx(0.2 * (1 - 1 / 4) ** 0.9, rel=1e-5)
    cfg.runtime.precision = "mixed_float16"
    wrapped = build_optimizer(cfg, model, total_steps=4, classifier_vars=cls)
    assert isinstance(wrapped, keras.optimizers.LossScaleOptimizer)
    assert isinstance(wrapped.inner_optimizer, CoupledSGD)
    assert float(wrapped.scale_loss(1.0)) == pytest.approx(2.0 ** 15)


def test_rounds_use_the_selftrain_learning_rate_and_schedule():
    from cbst_tf.config import load_config

    cfg = load_config(None, ["train.lr=0.01", "train.schedule=fixed", "selftrain.lr=0.002",
                             "selftrain.schedule=round_decay"])
    assert current_lr(build_optimizer(cfg, _model(), total_steps=10)) == pytest.approx(0.01)
    assert current_lr(build_optimizer(cfg, _model(), total_steps=10, round_=1)) == pytest.approx(0.002)
    assert current_lr(build_optimizer(cfg, _model(), total_steps=10, round_=3)) == pytest.approx(0.001)
    plain = load_config(None, ["train.lr=0.01", "train.schedule=fixed"])
    assert current_lr(build_optimizer(plain, _model(), total_steps=10, round_=2)) == pytest.approx(0.01)
