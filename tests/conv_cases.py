"""The fast paths of ``cbst_tf.models.layers.Conv2D`` and how far they are from Keras' ``Conv2D``.

Shared by tests/test_fast_conv.py (in process) and tests/onednn_check.py (a child process per
``TF_ENABLE_ONEDNN_OPTS`` setting), so both settings check the same cases the same way.

The comparison is well conditioned on purpose: inputs are N(0, 1) and the kernel is
N(0, 1 / fan_in), so outputs are O(1), and the loss ``sum(y cos y)`` has an O(1) second
derivative. Two float32 summation orders of the <= 245-term dot products then differ by about
1e-6 in the outputs and, after the <= 198-pixel sums of the weight gradients, about 1e-5 in the
gradients, whichever kernels (oneDNN or Eigen) compute them. (An earlier version used N(0, 1)
kernels: outputs of size ~15 turned a 1e-5 relative difference into 2e-3 in ``cos``-weighted
gradients and failed on oneDNN's AVX2 kernels with a 1e-3 tolerance.)
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

# id -> (kernel size, layer kwargs); the id names the path the layer takes.
CASES = {
    "matmul_1x1": (1, {}),
    "matmul_1x1_valid_nobias": (1, {"padding": "valid", "use_bias": False}),
    "keras_dilation_4": (3, {"padding": "same", "dilation_rate": 4}),
    "native_dilation_12": (3, {"padding": "same", "dilation_rate": 12}),  # beyond the map: ResNet-38 head
    "native_dilation_8_5x5": (5, {"padding": "same", "dilation_rate": 8}),
    "keras_3x3": (3, {"padding": "same"}),
    "patches_7x7": (7, {"padding": "same", "patches": True}),  # FCN fc6
    "keras_strided": (3, {"padding": "valid", "strides": 2}),
    "keras_strided_1x1": (1, {"padding": "valid", "strides": 2}),
}
RTOL = ATOL = 1e-4


def pair(x_shape, filters: int, kernel: int, **kwargs):
    """Keras' Conv2D and ours, built for ``x_shape`` with the same well-scaled random weights."""
    from cbst_tf.models.layers import Conv2D

    ref = keras.layers.Conv2D(filters, kernel, **{k: v for k, v in kwargs.items() if k != "patches"})
    fast = Conv2D(filters, kernel, **kwargs)
    ref.build(x_shape)
    fast.build(x_shape)
    rng = np.random.default_rng(0)
    fan_in = kernel * kernel * x_shape[-1]
    fast.set_weights([rng.normal(0, fan_in ** -0.5, w.shape).astype("float32") for w in ref.get_weights()])
    ref.set_weights(fast.get_weights())
    return ref, fast


def compare(kernel: int, kwargs: dict) -> dict:
    """Largest |ours - Keras| of the outputs and of each gradient (input, kernel[, bias]),
    and the largest |Keras| of each, for one case on a 2x9x11x5 input."""
    x = tf.constant(np.random.default_rng(1).normal(size=(2, 9, 11, 5)).astype("float32"))
    ref, fast = pair(x.shape, 6, kernel, **kwargs)
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(x)
        y_ref, y_fast = ref(x), fast(x)
        loss_ref = tf.reduce_sum(y_ref * tf.cos(y_ref))
        loss_fast = tf.reduce_sum(y_fast * tf.cos(y_fast))
    assert y_fast.shape == y_ref.shape, (y_fast.shape, y_ref.shape)
    g_ref = tape.gradient(loss_ref, [x, *ref.trainable_variables])
    g_fast = tape.gradient(loss_fast, [x, *fast.trainable_variables])
    pairs = [(y_fast, y_ref), *zip(g_fast, g_ref, strict=True)]
    return {"diff": [float(np.abs(a.numpy() - b.numpy()).max()) for a, b in pairs],
            "scale": [float(np.abs(b.numpy()).max()) for _, b in pairs]}


def within_tolerance(result: dict) -> bool:
    """``|ours - keras| <= ATOL + RTOL |keras|`` for the outputs and every gradient."""
    return all(d <= ATOL + RTOL * s for d, s in zip(result["diff"], result["scale"], strict=True))
