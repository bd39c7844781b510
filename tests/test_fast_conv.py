"""cbst_tf Conv2D must be keras Conv2D with another algorithm: same outputs, gradients and weight files."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf
from conv_cases import CASES, compare, within_tolerance

from cbst_tf.faults import translate
from cbst_tf.models import layers
from cbst_tf.models.layers import Conv2D


@pytest.mark.parametrize("case", list(CASES))
def test_fast_conv_matches_conv2d_values_and_gradients(case):
    result = compare(*CASES[case])
    assert within_tolerance(result), result


@pytest.mark.parametrize("case", ["native_dilation_12", "native_dilation_8_5x5"])
def test_dilated_gradient_without_native_kernels(case, monkeypatch):
    """The gradients built from forward convolutions and matmuls (what runs where TF's CPU
    kernels lack the native dilated gradient: Eigen, float16) equal Keras' on any machine."""
    monkeypatch.setattr(layers, "native_dilated_gradient_supported", lambda dtype=None: False)
    result = compare(*CASES[case])
    assert within_tolerance(result), result


def test_native_dilated_gradient_probe_matches_the_kernels():
    """The probe's answer is what the op does: where it says no, the op raises."""
    for dtype in ("float32", "float16"):
        supported = layers.native_dilated_gradient_supported(dtype)
        run = lambda dtype=dtype: tf.raw_ops.Conv2DBackpropInput(  # noqa: E731
            input_sizes=[1, 9, 9, 2], filter=tf.ones((3, 3, 2, 2), dtype), out_backprop=tf.ones((1, 9, 9, 2), dtype),
            strides=[1, 1, 1, 1], padding="SAME", dilations=[1, 3, 3, 1])
        if supported:
            run()
        else:
            with pytest.raises(tf.errors.InvalidArgumentError, match="dilation rates larger than 1"):
                run()


def test_kernel_failure_is_one_line_naming_the_op():
    """TF 2.21 has no float16 dilated gradient on any CPU (oneDNN or not): the error a user sees."""
    fn = tf.function(lambda: tf.raw_ops.Conv2DBackpropInput(
        input_sizes=[1, 5, 5, 1], filter=tf.ones((3, 3, 1, 1), tf.float16), out_backprop=tf.ones((1, 5, 5, 1), tf.float16),
        strides=[1, 1, 1, 1], padding="SAME", dilations=[1, 2, 2, 1], name="head/score_1/Conv2DBackpropInput"))
    with pytest.raises(tf.errors.InvalidArgumentError) as info:
        fn()
    err = translate(info.value)
    text = str(err)
    assert "\n" not in text and "{{" not in text and "[Op:" not in text
    assert text.startswith("TensorFlow op Conv2DBackpropInput (node head/score_1/Conv2DBackpropInput) failed "
                           "on this machine (")
    assert "dilation rates larger than 1; try TF_ENABLE_ONEDNN_OPTS=" in text
    assert translate(ValueError("a bug of ours")) is None
    assert translate(tf.errors.InvalidArgumentError(None, None, "bad shape from Python")) is None


@pytest.mark.slow
def test_kernels_and_training_steps_with_onednn_on_and_off():
    """Each fast path and three training steps of each network, float32, mixed_bfloat16 and
    mixed_float16, in a child process per TF_ENABLE_ONEDNN_OPTS setting (TF reads it at load).

    Tolerances: the paths differ from Keras' by summation order only (tests/conv_cases.py). The
    float32 losses of the two settings agree to 1e-5 relative: the same maths in another order,
    over three steps of a 1e-2 learning rate. bfloat16 keeps 8 significant bits, so oneDNN's
    and Eigen's roundings of the activations differ by up to ~4e-3 relative per value; averaged
    over the 6,144-pixel loss they moved it by 3e-4 here, and 2e-3 leaves room for other CPUs.
    float16 (11 bits, ~1e-3 per value) moved ResNet-38's second loss by 1.1e-5 in one CI run
    and 0 in another: the same 2e-3 bound applies to both mixed policies.
    """
    script = Path(__file__).with_name("onednn_check.py")
    runs = {}
    for value in ("0", "1"):
        env = {**os.environ, "TF_ENABLE_ONEDNN_OPTS": value}
        proc = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=900)
        assert proc.returncode == 0, (value, proc.stderr[-3000:])
        runs[value] = json.loads(proc.stdout.strip().splitlines()[-1])
    assert runs["0"]["native_dilated_gradient"] is False  # Eigen has no dilated gradient on any CPU
    for value, run in runs.items():
        for case, result in run["conv"].items():
            assert within_tolerance(result), (value, case, result)
        for key, losses in run["train"].items():
            assert all(np.isfinite(losses)) and losses[-1] < losses[0], (value, key, losses)
    for key, off in runs["0"]["train"].items():
        rtol = 2e-3 if "mixed" in key else 1e-5
        np.testing.assert_allclose(runs["1"]["train"][key], off, rtol=rtol, err_msg=key)


def test_fast_conv_mixed_precision_and_unknown_sizes():
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        layer = Conv2D(4, 7, padding="same", patches=True)
        fn = tf.function(layer, input_signature=[tf.TensorSpec([None, None, None, 3], tf.float32)])
        y = fn(tf.ones((1, 5, 6, 3)))
        assert y.dtype == tf.bfloat16 and y.shape == (1, 5, 6, 4)
        y = fn(tf.ones((2, 3, 2, 3)))
        assert y.shape == (2, 3, 2, 4)
    finally:
        keras.mixed_precision.set_global_policy("float32")


def test_fast_conv_rejects_what_it_cannot_compute():
    with pytest.raises(ValueError, match="patches=True"):
        Conv2D(4, 3, padding="valid", patches=True)
    with pytest.raises(ValueError, match="supports only channels_last"):
        Conv2D(4, 3, data_format="channels_first")


def test_fast_conv_round_trips_through_keras_config():
    layer = Conv2D(4, 7, padding="same", patches=True, name="fc6")
    clone = Conv2D.from_config(layer.get_config())
    assert clone.patches and clone.kernel_size == (7, 7) and clone.name == "fc6"


@pytest.mark.parametrize("name", ["fcn8s_vgg16", "resnet38"])
def test_weight_files_of_plain_keras_conv2d_models_load(tmp_path, name, monkeypatch):
    """Keras keys .weights.h5 entries by class name and position: a model built with plain
    keras.layers.Conv2D (as before this layer existed) and ours must read each other's files."""
    import cbst_tf.models.fcn8s as fcn8s
    import cbst_tf.models.resnet38 as resnet38
    from cbst_tf.models import build_model

    x = tf.constant(np.random.default_rng(2).uniform(0, 255, (1, 40, 56, 3)).astype("float32"))
    ours = build_model(name, 19, width=0.0625, dropout=0.0)
    def plain_conv(*args, patches=False, **kwargs):
        return keras.layers.Conv2D(*args, **kwargs)

    with monkeypatch.context() as m:
        m.setattr(fcn8s, "Conv2D", plain_conv)
        m.setattr(resnet38, "Conv2D", plain_conv)
        plain = build_model(name, 19, width=0.0625, dropout=0.0)
    assert not any(isinstance(layer, Conv2D) for layer in plain.layers)
    rng = np.random.default_rng(3)
    plain.set_weights([rng.normal(0, 0.1, w.shape).astype("float32") for w in plain.get_weights()])
    path = tmp_path / "plain.weights.h5"
    plain.save_weights(str(path))
    ours.load_weights(str(path))
    np.testing.assert_allclose(ours(x).numpy(), plain(x).numpy(), rtol=1e-4, atol=1e-4)
