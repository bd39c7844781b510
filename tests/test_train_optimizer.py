"""Coupled-L2 momentum SGD and the learning-rate schedules against closed forms."""

import math
import tomllib
from pathlib import Path

import keras
import numpy as np
import pytest
from keras import ops
from packaging.requirements import Requirement
from packaging.version import Version

from cbst_tf.config import Config, TrainConfig
from cbst_tf.train.optimizer import (
    CoupledSGD,
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


def test_keras_is_the_tested_release():
    """CoupledSGD relies on private Keras optimizer methods: outside the pinned range, stop here."""
    pyproject = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())
    pin = next(Requirement(r) for r in pyproject["project"]["dependencies"] if Requirement(r).name == "keras")
    installed = Version(keras.__version__)
    assert installed in pin.specifier, (
        f"keras {installed} is outside the tested range {pin.specifier} (pyproject.toml): CoupledSGD "
        "uses the private Optimizer._var_key/_get_variable_index; run tests/test_train_optimizer.py "
        "and tests/test_train_distributed.py on it, then widen the pin")
    for name in ("_var_key", "_get_variable_index"):
        assert callable(getattr(keras.optimizers.SGD, name, None)), f"keras {installed}: Optimizer.{name} is gone"


def test_decay_finds_normalisation_inside_nested_models():
    keras.utils.set_random_seed(1)
    inner = keras.Sequential([keras.Input((8, 8, 4)), keras.layers.Conv2D(4, 1, name="inner_conv"),
                              keras.layers.LayerNormalization(axis=[1, 2, 3], name="ln")], name="inner")
    inp = keras.Input((8, 8, 3))
    out = keras.layers.Conv2D(3, 1, name="cls")(inner(keras.layers.Conv2D(4, 3, padding="same", name="conv")(inp)))
    model = keras.Model(inp, out)
    assert [v.shape for v in model.trainable_variables if "ln/" in v.path] == [(8, 8, 4), (8, 8, 4)]
    assert sorted(v.path for v in decayed_variables(model)) == ["cls/kernel", "conv/kernel",
                                                                "inner/inner_conv/kernel"]


def _poly_reference(base_lr, total_steps, power):
    """The project's former ``PolySchedule``, op for op: lr * (1 - min(step / total, 1)) ** power."""
    def schedule(step):
        frac = ops.minimum(ops.cast(step, "float32") / float(max(total_steps, 1)), 1.0)
        return base_lr * ops.power(1.0 - frac, power)
    return schedule


@pytest.mark.parametrize(("lr", "total", "power"), [(0.01, 100, 0.9), (2.5e-4, 37, 0.9), (1e-6, 7, 2.0),
                                                    (0.1, 1, 0.9), (0.1, 0, 0.9)])
def test_poly_is_keras_polynomial_decay_bit_for_bit(lr, total, power):
    train = TrainConfig(lr=lr, schedule="poly", poly_power=power)
    sched = make_schedule(train, total)
    assert isinstance(sched, keras.optimizers.schedules.PolynomialDecay)
    ref = _poly_reference(lr, total, power)
    steps = np.arange(0, max(total, 1) + 3)
    got = np.array([float(sched(s)) for s in steps], np.float32)
    want = np.array([float(ref(s)) for s in steps], np.float32)
    np.testing.assert_array_equal(got.view(np.uint32), want.view(np.uint32))
    assert got[max(total, 1)] == 0.0 and got[-1] == 0.0 and got[0] == np.float32(lr)


def test_poly_schedule_closed_form():
    sched = make_schedule(TrainConfig(lr=0.01, schedule="poly", poly_power=0.9), 100)
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
    assert isinstance(make_schedule(cfg.train, 10), keras.optimizers.schedules.PolynomialDecay)


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
