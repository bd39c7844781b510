"""Coupled-L2 momentum SGD and the learning-rate schedules against closed forms."""

import ast
import importlib.metadata
import math
import tomllib
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf
from keras import ops
from packaging.requirements import Requirement
from packaging.version import Version

from cbst_tf.config import Config, TrainConfig
from cbst_tf.train import optimizer as optimizer_module
from cbst_tf.train.optimizer import (
    CoupledSGD,
    ScaledSchedule,
    build_optimizer,
    coupled_l2_loss,
    current_lr,
    decayed_variables,
    make_schedule,
    round_lr,
)

ROOT = Path(__file__).parents[1]


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


def _gradients_with_l2(opt, variables, grads):
    """The gradients of a loss whose own gradient is ``grads``, plus the optimiser's coupled L2."""
    with tf.GradientTape() as tape:
        loss = sum(ops.sum(ops.multiply(g, v)) for g, v in zip(grads, variables, strict=True))
        loss = loss + coupled_l2_loss(opt)
    return tape.gradient(loss, variables)


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
        opt.apply(_gradients_with_l2(opt, variables, grads), variables)
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
    zeros = [np.zeros(v.shape, "float32") for v in model.trainable_variables]
    opt.apply(_gradients_with_l2(opt, model.trainable_variables, zeros), model.trainable_variables)
    for v in model.trainable_variables:
        expected = before[v.path] * (1 - 0.5 * 0.1) if v.path.endswith("kernel") else before[v.path]
        np.testing.assert_allclose(v.numpy(), expected, rtol=1e-6, err_msg=v.path)


def test_l2_loss_is_half_wd_times_the_squared_kernels_shared_by_the_replicas():
    model = _model()
    opt = CoupledSGD(0.1, momentum=0.9, weight_decay=0.05, decay=decayed_variables(model))
    want = 0.5 * 0.05 * sum(float(np.sum(np.square(v.numpy(), dtype=np.float64))) for v in decayed_variables(model))
    assert float(coupled_l2_loss(opt)) == pytest.approx(want, rel=1e-6)
    assert float(coupled_l2_loss(keras.optimizers.LossScaleOptimizer(opt), 4)) == pytest.approx(want / 4, rel=1e-6)
    assert coupled_l2_loss(keras.optimizers.SGD(0.1)) == 0.0
    assert coupled_l2_loss(CoupledSGD(0.1, 0.9, 0.0, decay=decayed_variables(model))) == 0.0


def test_classifier_optimizer_learns_at_the_multiplied_rate_in_float32():
    sched = make_schedule(TrainConfig(lr=0.01, schedule="poly", poly_power=0.9), 10)
    scaled = ScaledSchedule(sched, 3.0)
    for step in (0, 3, 9, 12):  # float32 lr(step), then times 3 in float32
        want = np.float32(np.float32(sched(step)) * np.float32(3.0))
        assert np.float32(scaled(step)) == want
    assert np.float32(ScaledSchedule(0.01, 3.0)(5)) == np.float32(np.float32(0.01) * np.float32(3.0))
    again = ScaledSchedule.from_config(scaled.get_config())
    assert float(again(4)) == float(scaled(4)) and again.factor == 3.0


def test_keras_range_is_what_tensorflow_accepts():
    """pyproject.toml's keras range starts where TensorFlow's own requirement starts and holds the installed release."""
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    pin = next(Requirement(r) for r in pyproject["project"]["dependencies"] if Requirement(r).name == "keras")
    tf_keras = next(Requirement(r) for r in importlib.metadata.requires("tensorflow")
                    if Requirement(r).name == "keras" and not Requirement(r).marker)
    floor = lambda spec: min(Version(s.version) for s in spec if s.operator == ">=")  # noqa: E731
    assert floor(pin.specifier) == floor(tf_keras.specifier), (pin, tf_keras)
    assert Version(keras.__version__) in pin.specifier, (keras.__version__, pin)
    assert not any(s.operator in ("<", "<=", "==", "~=") and Version(s.version).major == 3 for s in pin.specifier), (
        f"{pin}: a Keras 3 release is cut off")


def test_optimizer_uses_no_private_keras_names():
    """Every private name the module touches is one it defines itself (not Keras' ``_var_key`` & co)."""
    tree = ast.parse(Path(optimizer_module.__file__).read_text())
    defined = {node.name for node in ast.walk(tree) if isinstance(node, ast.FunctionDef | ast.ClassDef)}
    defined |= {t.attr for node in ast.walk(tree) if isinstance(node, ast.Assign)
                for t in node.targets if isinstance(t, ast.Attribute)}
    private = lambda name: name.startswith("_") and not name.endswith("__")  # noqa: E731
    used = {node.attr for node in ast.walk(tree) if isinstance(node, ast.Attribute) and private(node.attr)}
    assert used <= defined, f"private names from elsewhere: {sorted(used - defined)}"
    keras_names = set(dir(keras.optimizers.SGD(0.1))) | set(dir(keras.optimizers.schedules.LearningRateSchedule))
    assert not ({n for n in defined if private(n)} & keras_names), "overrides a private Keras name"
    imports = [node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)]
    imports += [a.name for node in ast.walk(tree) if isinstance(node, ast.Import) for a in node.names]
    assert not [m for m in imports if ".src" in m or m.startswith("tensorflow.python")], imports


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
    assert opt.classifier_optimizer.momentum == pytest.approx(0.9)
    zeros = [np.zeros(v.shape, "float32") for v in model.trainable_variables]
    opt.apply(zeros, model.trainable_variables)
    assert float(opt.learning_rate) == pytest.approx(0.2 * (1 - 1 / 4) ** 0.9, rel=1e-5)
    assert float(opt.classifier_optimizer.learning_rate) == pytest.approx(10 * float(opt.learning_rate), rel=1e-6)
    assert int(opt.classifier_optimizer.iterations) == int(opt.iterations) == 1
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


def test_apply_without_variables_uses_the_built_order():
    models = [_model(), _model()]
    grads = [np.random.default_rng(3).normal(size=v.shape).astype("float32") for v in models[0].trainable_variables]
    for i, model in enumerate(models):
        cls = [v for v in model.trainable_variables if v.path.startswith("cls/")]
        opt = CoupledSGD(0.1, 0.9, 0.0, multiplied=cls, lr_mult=4.0)
        opt.build(model.trainable_variables)
        opt.apply(grads, None if i == 0 else model.trainable_variables)
    for a, b in zip(models[0].trainable_variables, models[1].trainable_variables, strict=True):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    cls_kernel = next(v for v in models[0].trainable_variables if v.path == "cls/kernel")
    np.testing.assert_allclose(cls_kernel.numpy(), _model().get_layer("cls").kernel.numpy() - 0.4 * grads[-2],
                               rtol=1e-6, atol=1e-7)
