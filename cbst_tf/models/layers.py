"""Small weightless or special-purpose Keras layers shared by the two networks.

- :class:`Normalize` turns float32 RGB 0..255 into the network's input space inside the
  model, so a crop padded with the dataset mean becomes exactly 0 after normalisation.
- :class:`CropTo` crops a feature map to the spatial shape of a reference (FCN skips).
- :class:`FrozenBatchNorm` keeps BatchNorm statistics fixed while gamma/beta still train
  (the official CBST/ResNet-38 code runs MXNet BatchNorm with ``use_global_stats=True``).
- :class:`Conv2D` is Keras' ``Conv2D`` computed by the fastest equivalent op for its shape
  (matmul for 1x1, native dilated conv, patch matrix for FCN's fc6) that every CPU supports.
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


_NATIVE_DILATION = 8  # from this dilation on, the native dilated kernel beats space-to-batch
_PROBED: dict[str, bool] = {}


def native_dilated_gradient_supported(dtype: tf.DType | str = tf.float32) -> bool:
    """Whether this process's default device differentiates ``tf.nn.conv2d(dilations > 1)`` in ``dtype``.

    TensorFlow's CPU kernels compute the native dilated convolution's gradients
    (``Conv2DBackpropInput/Filter`` with ``dilations``) only with oneDNN, which TF 2.21 turns
    on by default only on CPUs with AVX512_VNNI, AVX512_BF16 or AMX, and only in float32 and
    bfloat16; its Eigen kernels (every other x86 CPU, ``TF_ENABLE_ONEDNN_OPTS=0``, or float16)
    raise "Current CPU implementations do not yet support dilation rates larger than 1".
    cuDNN supports them. Probed once per process and dtype on a 5x5 map, eagerly (also when
    called while a ``tf.function`` is traced).
    """
    dtype = tf.as_dtype(dtype)
    if dtype.name not in _PROBED:
        with tf.init_scope():
            try:
                kernel = tf.ones((3, 3, 1, 1), dtype)
                dy = tf.ones((1, 5, 5, 1), dtype)
                args = {"strides": [1, 1, 1, 1], "padding": "SAME", "dilations": [1, 2, 2, 1]}
                tf.raw_ops.Conv2DBackpropInput(input_sizes=[1, 5, 5, 1], filter=kernel, out_backprop=dy, **args)
                tf.raw_ops.Conv2DBackpropFilter(input=dy, filter_sizes=[3, 3, 1, 1], out_backprop=dy, **args)
                _PROBED[dtype.name] = True
            except (tf.errors.InvalidArgumentError, tf.errors.UnimplementedError, tf.errors.NotFoundError):
                _PROBED[dtype.name] = False
    return _PROBED[dtype.name]


@tf.custom_gradient
def _patch_conv(x, kernel):
    """'same', stride-1 convolution as ``patches @ kernel`` (im2col), with the conv's own gradients."""
    kh, kw, cin, cout = kernel.shape
    patches = tf.image.extract_patches(x, [1, kh, kw, 1], [1, 1, 1, 1], [1, 1, 1, 1], "SAME")
    shape = tf.shape(patches)
    y = tf.matmul(tf.reshape(patches, [-1, kh * kw * cin]), tf.reshape(kernel, [-1, cout]))
    y = tf.reshape(y, tf.concat([shape[:3], [cout]], 0))

    def grad(dy):
        dx = tf.raw_ops.Conv2DBackpropInput(input_sizes=tf.shape(x), filter=kernel, out_backprop=dy,
                                            strides=[1, 1, 1, 1], padding="SAME")
        dk = tf.raw_ops.Conv2DBackpropFilter(input=x, filter_sizes=tf.shape(kernel), out_backprop=dy,
                                             strides=[1, 1, 1, 1], padding="SAME")
        return dx, dk

    return y, grad


def _dilated_conv(rate: int):
    """'same', stride-1 convolution with dilation ``rate`` (odd kernels) by the native kernel.

    Its gradients use the native ``Conv2DBackpropInput/Filter`` where this process's kernels
    have them (oneDNN, cuDNN). Elsewhere (TensorFlow's Eigen CPU kernels) they are built from
    ops every CPU has, at the cost of one convolution each, 5x faster than Keras'
    space-to-batch gradient at the ResNet-38 head's shape (``bench/conv_paths.py``):

    * ``dx`` is the same dilated 'same' convolution of ``dy`` with the kernel flipped in space
      and its in/out channels swapped (exact for odd kernels, whose padding is symmetric);
    * ``dk[i, j]`` is ``sum_n x(n + d * (i, j) - pad) dy(n)^T``: one ``Cin x Cout`` matmul per
      kernel tap over the shifted, zero-padded input.
    """

    @tf.custom_gradient
    def conv(x, kernel):
        y = tf.nn.conv2d(x, kernel, 1, "SAME", dilations=rate)

        def grad(dy):
            if native_dilated_gradient_supported(dy.dtype):
                args = {"strides": [1, 1, 1, 1], "padding": "SAME", "dilations": [1, rate, rate, 1]}
                dx = tf.raw_ops.Conv2DBackpropInput(input_sizes=tf.shape(x), filter=kernel, out_backprop=dy, **args)
                dk = tf.raw_ops.Conv2DBackpropFilter(input=x, filter_sizes=tf.shape(kernel), out_backprop=dy, **args)
                return dx, dk
            kh, kw = kernel.shape[0], kernel.shape[1]
            flipped = tf.transpose(tf.reverse(kernel, [0, 1]), [0, 1, 3, 2])
            dx = tf.nn.conv2d(dy, flipped, 1, "SAME", dilations=rate)
            ph, pw = rate * (kh - 1) // 2, rate * (kw - 1) // 2
            padded = tf.pad(x, [[0, 0], [ph, ph], [pw, pw], [0, 0]])
            h, w = tf.shape(x)[1], tf.shape(x)[2]
            taps = [tf.einsum("nhwc,nhwo->co", padded[:, i * rate:i * rate + h, j * rate:j * rate + w, :], dy)
                    for i in range(kh) for j in range(kw)]
            return dx, tf.reshape(tf.stack(taps), tf.shape(kernel))

        return y, grad

    return conv


@keras.saving.register_keras_serializable(package="cbst_tf")
class Conv2D(keras.layers.Conv2D):
    """Keras' ``Conv2D`` (channels last) whose stride-1 cases run as the fastest equivalent op.

    Same weights, names, results and gradients as ``keras.layers.Conv2D``; only the
    algorithm differs. The class keeps the name ``Conv2D`` on purpose: Keras'
    ``.weights.h5`` files key layers by snake-cased class name and position
    (``layers/conv2d_7``), so any other name would make checkpoints saved with plain
    ``Conv2D`` layers unloadable (and vice versa). Which path is faster for which shape
    was measured with ``bench/forward.py`` (README, "Performance"):

    * 1x1 kernels become one matmul over pixels (after subsampling, when strided: a 1x1
      kernel never pads). This also keeps TF 2.21's oneDNN ``Conv2DBackpropFilter`` for
      strided 1x1 kernels out of the graph: with <= 8 input and <= 16 output channels (the
      narrow CPU widths of ResNet-38's projection shortcuts) it corrupts the heap and aborts
      the process;
    * large dilations (>= 8, 'same', odd kernels) call ``tf.nn.conv2d(dilations=...)``
      directly. Keras' ``ops.conv`` goes through ``tf.nn.convolution``, which computes a
      dilated conv as a plain one on d x d interleaved sub-maps (space-to-batch): at d = 2
      or 4 that is the faster path, but at d = 12 the sub-maps of a 64x128 feature map are
      ~5x11 pixels plus a 2-pixel halo and the native kernel wins. Its gradient is native
      where the kernels have it and built from forward ops elsewhere (:func:`_dilated_conv`),
      so the layer trains on every CPU, with oneDNN or without;
    * ``patches=True`` (FCN's fc6: 7x7, 512 -> 4096 on a 1/32-resolution map) builds the
      patch matrix (49 x 512 columns, one row per output pixel) and does one matmul. Its
      gradients are the convolution's own (``Conv2DBackpropInput/Filter``), so training
      memory and results are unchanged.

    Other strided convolutions keep Keras' path.
    """

    def __init__(self, filters, kernel_size, patches: bool = False, **kwargs):
        super().__init__(filters, kernel_size, **kwargs)
        self.patches = bool(patches)
        if self.data_format != "channels_last":
            raise ValueError("cbst_tf Conv2D supports only channels_last")
        if self.patches and (self.padding != "same" or self.dilation_rate != (1, 1)):
            raise ValueError("Conv2D(patches=True) supports only 'same' padding without dilation")

    def convolution_op(self, inputs, kernel):
        if self.groups != 1 or (self.strides != (1, 1) and self.kernel_size != (1, 1)):
            return super().convolution_op(inputs, kernel)
        kernel = tf.cast(tf.convert_to_tensor(kernel), inputs.dtype)  # read the (autocast) variable
        if self.kernel_size == (1, 1):
            # A 1x1 kernel never pads ('same' or 'valid'): a stride is a subsampling first.
            if self.strides != (1, 1):
                inputs = inputs[:, :: self.strides[0], :: self.strides[1], :]
            shape = tf.shape(inputs)
            flat = tf.reshape(inputs, [-1, kernel.shape[2]])
            out = tf.matmul(flat, tf.reshape(kernel, kernel.shape[2:]))
            return tf.reshape(out, tf.concat([shape[:3], [kernel.shape[3]]], 0))
        if self.patches:
            return _patch_conv(inputs, kernel)
        d = self.dilation_rate
        if (d[0] == d[1] >= _NATIVE_DILATION and self.padding == "same"
                and self.kernel_size[0] % 2 == 1 and self.kernel_size[1] % 2 == 1):
            return _dilated_conv(d[0])(inputs, kernel)
        return super().convolution_op(inputs, kernel)

    def get_config(self):
        return {**super().get_config(), "patches": self.patches}
