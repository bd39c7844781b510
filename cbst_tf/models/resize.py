"""The final, weightless upsampling of output-stride logits to the input size.

Both networks predict on a grid of ``ceil(H / 8) x ceil(W / 8)`` cells (output stride 8)
whose top-left cell sits at the top-left image corner. The alignment-correct upsampling of
such a grid is the one the official ResNet-38/CBST code uses (ademxapp ``interp_preds_as``):
resize the ``h x w`` logits by exactly the stride to ``8h x 8w`` with half-pixel-centre
bilinear interpolation, then crop the top-left ``H x W``. A plain resize straight to
``H x W`` would stretch the grid by ``8h / H`` whenever ``H`` is not a multiple of 8
(up to 7 px of drift at the far border).

:func:`resize_logits` recognises that case from the shapes alone: when ``h == ceil(H/8)``
and ``w == ceil(W/8)`` it applies the exact stride-8 upsampling and crop; any other
combination (e.g. logits of a rescaled test image being brought back to the label size)
is a plain bilinear resize to ``size``. For multiples of 8 both coincide. The network's
own last step (:class:`ResizeLogits`) calls the same function, so
``resize_logits(model_noup(x), x.shape[1:3])`` equals ``model(x)`` exactly.
"""

from __future__ import annotations

from collections.abc import Sequence

import keras
import tensorflow as tf

OUTPUT_STRIDE = 8


def resize_logits(logits, size: Sequence[int] | tf.Tensor, stride: int = OUTPUT_STRIDE) -> tf.Tensor:
    """Bilinearly upsample ``logits (N, h, w, C)`` to ``(N, H, W, C)`` float32, ``size = (H, W)``.

    Grid-aligned (resize by ``stride`` then crop) when ``(h, w) == ceil((H, W) / stride)``,
    otherwise a plain half-pixel bilinear resize; see the module docstring.
    """
    logits = tf.convert_to_tensor(logits)
    if logits.dtype != tf.float32:
        logits = tf.cast(logits, tf.float32)
    shape = tf.shape(logits)
    h, w = shape[1], shape[2]
    size = tf.cast(tf.convert_to_tensor(size), tf.int32)
    big_h, big_w = size[0], size[1]
    aligned = tf.logical_and(tf.equal(h, -(-big_h // stride)), tf.equal(w, -(-big_w // stride)))
    target = tf.stack([tf.where(aligned, h * stride, big_h), tf.where(aligned, w * stride, big_w)])
    out = tf.image.resize(logits, target, method="bilinear")
    return out[:, :big_h, :big_w, :]


@keras.saving.register_keras_serializable(package="cbst_tf")
class ResizeLogits(keras.layers.Layer):
    """Layer form of :func:`resize_logits` for inputs ``[logits, image]`` (float32 output)."""

    def __init__(self, stride: int = OUTPUT_STRIDE, **kwargs):
        kwargs["dtype"] = "float32"
        super().__init__(**kwargs)
        self.stride = int(stride)

    def call(self, inputs):
        logits, image = inputs
        return resize_logits(logits, tf.shape(image)[1:3], self.stride)

    def compute_output_shape(self, input_shape):
        logits_shape, image_shape = input_shape
        return (logits_shape[0], image_shape[1], image_shape[2], logits_shape[3])

    def get_config(self):
        return {**super().get_config(), "stride": self.stride}
