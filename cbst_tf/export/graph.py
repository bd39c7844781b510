"""The configured test protocol as one TensorFlow graph: uint8 images in, classes out.

:func:`serving_fns` builds the two functions that ``cbst-tf export`` registers, both
needing nothing but TensorFlow once saved:

* ``serve(images)``: uint8 RGB ``[N, H, W, 3]`` of any size -> ``class_ids`` int32
  ``[N, H, W]`` (Cityscapes train ids) and ``probabilities`` float32 ``[N, H, W, C]``;
* ``serve_bytes(image_bytes)``: string ``[N]`` of encoded PNG/JPEG (one size per batch),
  decoded like ``predict`` decodes (3 channels), then ``serve``.

The network normalises its input itself. The test passes are the ones ``predict`` and
``evaluate`` run (:func:`cbst_tf.inference.protocol_probs`), as graph ops:

* ``bilinear_logits``: THE traced forward pass (:func:`cbst_tf.inference.traced_forward`)
  per scale and flip, pass sizes rounded like :func:`~cbst_tf.inference.scaled_size` (in
  float64, as Python does), softmaxes averaged: the same ops as ``predict``.
* ``bicubic_probs``: :func:`cbst_tf.official_eval.official_probs` step by step (long side,
  padding with the mean to the stride, stride-8 softmax, x8 bicubic upsampling, crop,
  resize back with the filter chosen by direction). One difference: when a test scale or
  ``eval.long_side`` resizes the *image*, the official code resizes the 8-bit image with
  PIL; the graph uses TensorFlow's antialiased resize of the same kernel in PIL's two
  rounded passes (:func:`_resize_8bit`), which differs by one grey level on a few pixels.

The arg-max over the channels the protocol can predict and the protocol's merge are the
ones of :class:`cbst_tf.predict.classes.ClassReader`.
"""

from __future__ import annotations

from collections.abc import Callable

import tensorflow as tf

from cbst_tf.config import Config
from cbst_tf.inference import inference_passes, traced_forward
from cbst_tf.predict.classes import ClassReader

IMAGES = tf.TensorSpec([None, None, None, 3], tf.uint8, name="images")
IMAGE_BYTES = tf.TensorSpec([None], tf.string, name="image_bytes")


def _round_half_up(hw: tf.Tensor, factor: tf.Tensor) -> tf.Tensor:
    """``max(1, int(h * factor + 0.5))`` per side, in float64 like :func:`cbst_tf.inference.scaled_size`."""
    return tf.maximum(1, tf.cast(tf.floor(tf.cast(hw, tf.float64) * factor + 0.5), tf.int32))


def bilinear_probs(model, cfg: Config) -> Callable[[tf.Tensor], tf.Tensor]:
    """``x`` float32 ``[N, H, W, 3]`` -> averaged softmax ``[N, H, W, C]`` of :func:`predict_probs`."""
    forward = traced_forward(model)
    passes = inference_passes(cfg.eval.scales, cfg.eval.flip)
    long_side, input_scale = cfg.eval.long_side, float(cfg.data.input_scale)

    def probs(x: tf.Tensor) -> tf.Tensor:
        hw = tf.shape(x)[1:3]
        if long_side:
            base = tf.constant(float(long_side), tf.float64) / tf.cast(tf.reduce_max(hw), tf.float64)
        else:
            base = tf.constant(input_scale, tf.float64)
        total = None
        for scale, mirrored in passes:
            in_hw = _round_half_up(hw, tf.constant(float(scale), tf.float64) * base)
            p = tf.nn.softmax(forward(x, in_hw, hw, tf.constant(mirrored)), axis=-1)
            total = p if total is None else total + p
        return total / float(len(passes)) if len(passes) > 1 else total

    return probs


def _by_direction(maps: tf.Tensor, src: tf.Tensor, dst: tf.Tensor,
                  resize: Callable[[str], tf.Tensor] | None = None) -> tf.Tensor:
    """:func:`cbst_tf.official_eval.resize_maps` with dynamic sizes: the filter is chosen by
    direction (:func:`~cbst_tf.official_eval.pil_filter`); ``resize(method)`` does the resizing."""
    resize = resize or (lambda method: tf.image.resize(maps, dst, method=method, antialias=True))
    return tf.case([(tf.reduce_all(tf.equal(src, dst)), lambda: maps),
                    (tf.reduce_all(dst < src), lambda: resize("lanczos3")),
                    (tf.reduce_all(dst > src), lambda: resize("bicubic"))],
                   default=lambda: resize("bilinear"), exclusive=False)


def _resize_8bit(x: tf.Tensor, src: tf.Tensor, dst: tf.Tensor) -> tf.Tensor:
    """:func:`cbst_tf.official_eval.resize_image` (PIL on the 8-bit image) approximated: like
    PIL, a horizontal then a vertical pass, each rounded (half up) to 8 bits; PIL's 22-bit
    fixed-point weights still move a value across a rounding edge on ~0.1% of the pixels
    (bicubic, Lanczos) to ~4% (bilinear, where exact halves are common), by one grey level."""

    def passes(method: str) -> tf.Tensor:
        def pass_(y: tf.Tensor, hw: tf.Tensor) -> tf.Tensor:
            y = tf.image.resize(y, hw, method=method, antialias=True)
            return tf.clip_by_value(tf.floor(y + 0.5), 0.0, 255.0)

        y = tf.cond(tf.equal(src[1], dst[1]), lambda: x, lambda: pass_(x, tf.stack([src[0], dst[1]])))
        return tf.cond(tf.equal(src[0], dst[0]), lambda: y, lambda: pass_(y, dst))

    return _by_direction(x, src, dst, passes)


def _long_side_size(hw: tf.Tensor, long_side: int) -> tf.Tensor:
    """:func:`cbst_tf.official_eval.long_side_size` (round half to even, as ``np.round``)."""
    h, w = hw[0], hw[1]
    wide = tf.stack([tf.maximum(1, tf.cast(tf.round(tf.cast(long_side * h, tf.float64) / tf.cast(w, tf.float64)),
                                           tf.int32)), tf.constant(long_side)])
    tall = tf.stack([tf.constant(long_side), tf.maximum(1, tf.cast(
        tf.round(tf.cast(long_side * w, tf.float64) / tf.cast(h, tf.float64)), tf.int32))])
    return tf.where(tf.equal(tf.maximum(h, w), long_side), hw, tf.where(w >= h, wide, tall))


def official_probs(model, cfg: Config) -> Callable[[tf.Tensor], tf.Tensor]:
    """``x`` float32 ``[N, H, W, 3]`` -> the official protocol's probabilities (module docstring)."""
    from cbst_tf.models.resize import OUTPUT_STRIDE as S
    from cbst_tf.official_eval import pad_value, stride_model

    forward = stride_model(model)
    pad = tf.constant(pad_value(model), tf.float32)
    scales, flip = list(cfg.eval.scales), bool(cfg.eval.flip)
    long_side, input_scale = cfg.eval.long_side, float(cfg.data.input_scale)

    def probs(x: tf.Tensor) -> tf.Tensor:
        n, hw = tf.shape(x)[0], tf.shape(x)[1:3]
        total = None
        for scale in scales:
            if long_side:
                base = _long_side_size(hw, int(round(long_side * scale)))
            else:
                base = _round_half_up(hw, tf.constant(input_scale * scale, tf.float64))
            xi = _resize_8bit(x, hw, base)
            padded_hw = -(-base // S) * S
            right = tf.broadcast_to(pad, tf.stack([n, base[0], padded_hw[1] - base[1], 3]))
            row = tf.concat([xi, right], axis=2)
            bottom = tf.broadcast_to(pad, tf.stack([n, padded_hw[0] - base[0], padded_hw[1], 3]))
            padded = tf.concat([row, bottom], axis=1)
            if flip:
                p = forward(tf.concat([padded, tf.reverse(padded, axis=[2])], axis=0))
                p = 0.5 * (p[:n] + tf.reverse(p[n:], axis=[2]))
            else:
                p = forward(padded)
            up = tf.image.resize(p, tf.shape(p)[1:3] * S, method="bicubic", antialias=True)
            up = _by_direction(up[:, : base[0], : base[1]], base, hw)
            total = up if total is None else total + up
        return total / float(len(scales))

    return probs


def class_ids(probs: tf.Tensor, reader: ClassReader) -> tf.Tensor:
    """:meth:`ClassReader.train_ids` in TensorFlow: int32 train ids ``[N, H, W]``."""
    sub = probs if len(reader.allowed) == reader.num_channels else tf.gather(probs, list(reader.allowed), axis=-1)
    index = tf.argmax(sub, axis=-1, output_type=tf.int32)
    return tf.gather(tf.constant(reader.result_ids, tf.int32), index)


def serving_fns(model, cfg: Config) -> tuple[Callable, Callable]:
    """``(serve, serve_bytes)`` (module docstring) for ``model`` under ``cfg``'s test protocol."""
    reader = ClassReader.of(cfg.data.num_classes, cfg.eval.protocol)
    probs_of = official_probs(model, cfg) if cfg.eval.upsample == "bicubic_probs" else bilinear_probs(model, cfg)

    def serve(images: tf.Tensor) -> dict[str, tf.Tensor]:
        probs = probs_of(tf.cast(images, tf.float32))
        return {"class_ids": class_ids(probs, reader), "probabilities": probs}

    def serve_bytes(image_bytes: tf.Tensor) -> dict[str, tf.Tensor]:
        def decode(data: tf.Tensor) -> tf.Tensor:
            image = tf.io.decode_image(data, channels=3, expand_animations=False)
            image.set_shape([None, None, 3])
            return image

        images = tf.map_fn(decode, image_bytes, fn_output_signature=tf.TensorSpec([None, None, 3], tf.uint8))
        return serve(images)

    return serve, serve_bytes
