"""cbst_tf Conv2D must be keras Conv2D with another algorithm: same outputs, gradients and weight files."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from cbst_tf.models.layers import Conv2D


def _pair(x_shape, filters, kernel, **kwargs):
    ref = keras.layers.Conv2D(filters, kernel, **{k: v for k, v in kwargs.items() if k != "patches"})
    fast = Conv2D(filters, kernel, **kwargs)
    ref.build(x_shape)
    fast.build(x_shape)
    rng = np.random.default_rng(0)
    fast.set_weights([rng.normal(size=w.shape).astype("float32") for w in ref.get_weights()])
    ref.set_weights(fast.get_weights())
    return ref, fast


@pytest.mark.parametrize("kernel, kwargs", [
    (1, {}),  # matmul path
    (1, {"padding": "valid", "use_bias": False}),
    (3, {"padding": "same", "dilation_rate": 4}),  # native dilated conv
    (3, {"padding": "same", "dilation_rate": 12}),  # dilation beyond the map: ResNet-38 head at tiny sizes
    (3, {"padding": "same"}),
    (7, {"padding": "same", "patches": True}),  # FCN fc6
    (3, {"padding": "valid", "strides": 2}),  # strided: Keras path
    (1, {"padding": "valid", "strides": 2}),
])
def test_fast_conv_matches_conv2d_values_and_gradients(kernel, kwargs):
    x = tf.constant(np.random.default_rng(1).normal(size=(2, 9, 11, 5)).astype("float32"))
    ref, fast = _pair(x.shape, 6, kernel, **kwargs)
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(x)
        y_ref, y_fast = ref(x), fast(x)
        loss_ref = tf.reduce_sum(y_ref * tf.cos(y_ref))
        loss_fast = tf.reduce_sum(y_fast * tf.cos(y_fast))
    assert y_fast.shape == y_ref.shape
    np.testing.assert_allclose(y_fast.numpy(), y_ref.numpy(), rtol=1e-5, atol=1e-4)
    g_ref = tape.gradient(loss_ref, [x, *ref.trainable_variables])
    g_fast = tape.gradient(loss_fast, [x, *fast.trainable_variables])
    for a, b in zip(g_fast, g_ref, strict=True):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-4, atol=1e-3)


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
