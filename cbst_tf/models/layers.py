"""Small weightless or special-purpose Keras layers shared by the two networks.

- :class:`Normalize` turns float32 RGB 0..255 into the network's input space inside the
  model, so a crop padded with the dataset mean becomes exactly 0 after normalisation.
- :class:`CropTo` crops a feature map to the spatial shape of a reference (FCN skips).
- :class:`FrozenBatchNorm` keeps BatchNorm statistics fixed while gamma/beta still train
  (the official CBST/ResNet-38 code runs MXNet BatchNorm with ``use_global_stats=True``).
- :func:`bilinear_kernel` is the upsampling filter FCN's learnable 2x layers start from.
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf


@keras.saving.register_keras_serializable(package="cbst_tf")
class Normalize(keras.layers.Layer):
    """``(x[..., order] - mean[order]) / std`` in float32, channels last.

    ``bgr=True`` reorders RGB input to BGR (the caffe convention of Keras' VGG16 weights).
    ``std`` is per channel in the *output* order. Always float32: pixel values do not fit
    bfloat16 precision, the next convolution casts to the compute dtype.
    """

    def __init__(self, mean, std=(1.0, 1.0, 1.0), bgr: bool = False, **kwargs):
        kwargs["dtype"] = "float32"
        super().__init__(**kwargs)
        self.mean = [float(v) for v in mean]
        self.std = [float(v) for v in std]
        self.bgr = bool(bgr)

    def call(self, x):
        mean = tf.constant(self.mean, tf.float32)
        if self.bgr:
            x = x[..., ::-1]
            mean = mean[::-1]
        return (x - mean) / tf.constant(self.std, tf.float32)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "mean": self.mean, "std": self.std, "bgr": self.bgr}


@keras.saving.register_keras_serializable(package="cbst_tf")
class CropTo(keras.layers.Layer):
    """``x[:, offset:offset + H_ref, offset:offset + W_ref]`` for inputs ``[x, ref]``.

    Works with unknown (dynamic) spatial sizes; the caller guarantees ``x`` is large enough.
    """

    def __init__(self, offset: int = 0, **kwargs):
        super().__init__(**kwargs)
        self.offset = int(offset)

    def call(self, inputs):
        x, ref = inputs
        shape = tf.shape(ref)
        o = self.offset
        return x[:, o : o + shape[1], o : o + shape[2], :]

    def compute_output_shape(self, input_shape):
        x_shape, ref_shape = input_shape
        return (x_shape[0], ref_shape[1], ref_shape[2], x_shape[3])

    def get_config(self):
        return {**super().get_config(), "offset": self.offset}


@keras.saving.register_keras_serializable(package="cbst_tf")
class FrozenBatchNorm(keras.layers.BatchNormalization):
    """BatchNorm that always normalises with (and never updates) its moving statistics.

    Unlike ``trainable=False`` (which in Keras 3 also freezes gamma and beta), the affine
    parameters keep receiving gradients, as in MXNet's ``use_global_stats=True``.
    """

    def call(self, inputs, training=None, mask=None):
        return super().call(inputs, training=False, mask=mask)


def bilinear_kernel(size: int, channels: int) -> np.ndarray:
    """Bilinear upsampling filter ``(size, size, channels, channels)``, identity across channels.

    The filter FCN initialises its deconvolutions with (Long et al. 2015, section 3.3):
    for factor ``f`` use ``size = 2f``, stride ``f`` and crop ``f // 2`` pixels.
    """
    factor = (size + 1) // 2
    center = factor - 1 if size % 2 == 1 else factor - 0.5
    og = np.arange(size, dtype=np.float64)
    filt1d = 1.0 - np.abs(og - center) / factor
    filt = np.outer(filt1d, filt1d).astype(np.float32)
    kernel = np.zeros((size, size, channels, channels), np.float32)
    for c in range(channels):
        kernel[:, :, c, c] = filt
    return kernel


@keras.saving.register_keras_serializable(package="cbst_tf")
class BilinearInit(keras.initializers.Initializer):
    """Keras initializer wrapper of :func:`bilinear_kernel` for ``Conv2DTranspose``."""

    def __call__(self, shape, dtype=None):
        size, size2, out_ch, in_ch = shape
        if size != size2 or out_ch != in_ch:
            raise ValueError(f"bilinear init needs a square kernel and equal channels, got {shape}")
        return tf.constant(bilinear_kernel(size, out_ch), dtype=dtype or "float32")
