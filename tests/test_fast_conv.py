"""FastConv2D must be Conv2D with another algorithm: same outputs, same gradients."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from cbst_tf.models.layers import FastConv2D


def _pair(x_shape, filters, kernel, **kwargs):
    ref = keras.layers.Conv2D(filters, kernel, **{k: v for k, v in kwargs.items() if k != "patches"})
    fast = FastConv2D(filters, kernel, **kwargs)
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
        layer = FastConv2D(4, 7, padding="same", patches=True)
        fn = tf.function(layer, input_signature=[tf.TensorSpec([None, None, None, 3], tf.float32)])
        y = fn(tf.ones((1, 5, 6, 3)))
        assert y.dtype == tf.bfloat16 and y.shape == (1, 5, 6, 4)
        y = fn(tf.ones((2, 3, 2, 3)))
        assert y.shape == (2, 3, 2, 4)
    finally:
        keras.mixed_precision.set_global_policy("float32")


def test_fast_conv_rejects_what_it_cannot_compute():
    with pytest.raises(ValueError, match="patches=True"):
        FastConv2D(4, 3, padding="valid", patches=True)
    with pytest.raises(ValueError, match="channels_last"):
        FastConv2D(4, 3, data_format="channels_first")


def test_fast_conv_round_trips_through_keras_config():
    layer = FastConv2D(4, 7, padding="same", patches=True, name="fc6")
    clone = FastConv2D.from_config(layer.get_config())
    assert clone.patches and clone.kernel_size == (7, 7) and clone.name == "fc6"
