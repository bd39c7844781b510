"""Shared inference: single- and multi-scale testing with optional horizontal flip.

Multi-scale testing (MST, section 5.2 / Table 3, "multi-scale testing at scales 0.5, 0.75,
and 1.0 boosts the mIoU to 47.0%") averages the softmax PROBABILITIES of one forward pass
per scale, each resized back to the output size. The official code never implemented it;
averaging probabilities (not logits) keeps every pass on the same, calibrated scale.
Flip testing adds, per scale, the pass on the mirrored image, mirrored back.

Each pass: resize the image by ``scale * input_scale`` (bilinear), run the network, resize
its logits (bilinear) to ``size`` (the label size; by default the image size). The network
call sits in one ``tf.function`` whose input signature leaves batch, height and width
unknown, so images of every size share a single trace instead of retracing per shape.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import tensorflow as tf

_SIGNATURE = [
    tf.TensorSpec([None, None, None, 3], tf.float32),  # images
    tf.TensorSpec([2], tf.int32),  # network input size (h, w)
    tf.TensorSpec([2], tf.int32),  # output size (h, w); (0, 0): the network's own output size
    tf.TensorSpec([], tf.bool),  # mirror the input and un-mirror the logits
]
# One traced forward function for the most recently used model: it closes over the model,
# so caching more would keep old models (and their weights) alive.
_CACHE: dict[str, object] = {}


def _resize_if_needed(x: tf.Tensor, hw: tf.Tensor) -> tf.Tensor:
    # Skipping the identity resize keeps the single-scale path bit-identical to a plain call.
    same = tf.reduce_all(tf.equal(tf.shape(x)[1:3], hw)) | tf.reduce_all(tf.equal(hw, 0))
    return tf.cond(same, lambda: x, lambda: tf.image.resize(x, hw, method="bilinear"))


def traced_forward(model):
    """THE traced test pass ``(images, in_hw, out_hw, flip) -> float32 logits at out_hw`` of
    ``model`` (``out_hw = (0, 0)``: at the network's output size), shared by evaluation
    (:func:`predict_probs`) and the label step's cached stride logits."""
    if _CACHE.get("model") is model:
        return _CACHE["fn"]

    @tf.function(input_signature=_SIGNATURE)
    def forward(images, in_hw, out_hw, flip):
        x = _resize_if_needed(images, in_hw)
        x = tf.cond(flip, lambda: tf.reverse(x, axis=[2]), lambda: x)
        logits = tf.cast(model(x, training=False), tf.float32)
        logits = tf.cond(flip, lambda: tf.reverse(logits, axis=[2]), lambda: logits)
        return _resize_if_needed(logits, out_hw)

    _CACHE.update(model=model, fn=forward)
    return forward


def scaled_size(hw: Sequence[int], factor: float) -> tuple[int, int]:
    """``h * factor``, ``w * factor`` rounded half up, at least 1 pixel each."""
    return max(1, int(hw[0] * factor + 0.5)), max(1, int(hw[1] * factor + 0.5))


def inference_passes(scales: Sequence[float], flip: bool) -> list[tuple[float, bool]]:
    """The test passes ``(scale, mirrored)``: every scale, unmirrored then (``flip``) mirrored."""
    if not scales or min(scales) <= 0:
        raise ValueError(f"scales must be a non-empty list of positive numbers, got {list(scales)}")
    return [(s, f) for s in scales for f in ((False, True) if flip else (False,))]


def _batched(image) -> tuple[tf.Tensor, bool]:
    x = tf.convert_to_tensor(image, dtype=tf.float32)
    if x.shape.rank == 3:
        return x[tf.newaxis], True
    if x.shape.rank != 4 or x.shape[-1] != 3:
        raise ValueError(f"image must be (H, W, 3) or (N, H, W, 3), got shape {tuple(x.shape)}")
    return x, False


def _pass_logits(model, x: tf.Tensor, scale: float, flip: bool, input_scale: float,
                 size: tuple[int, int]) -> tf.Tensor:
    in_hw = scaled_size((int(x.shape[1]), int(x.shape[2])), scale * input_scale)
    return traced_forward(model)(x, tf.constant(in_hw, tf.int32), tf.constant(size, tf.int32),
                           tf.constant(flip))


def predict_probs(model, image, scales: Sequence[float] = (1.0,), flip: bool = False,
                  input_scale: float = 1.0, size: Sequence[int] | None = None) -> np.ndarray:
    """Class probabilities, float32 ``(H, W, C)`` (or ``(N, H, W, C)`` for a batch).

    ``image``: float32 RGB 0..255, ``(H, W, 3)`` or ``(N, H, W, 3)``; ``size``: output
    ``(H, W)``, default the image size. The softmax of every pass (scale x flip) is averaged.
    """
    x, single = _batched(image)
    out_hw = tuple(size) if size is not None else (int(x.shape[1]), int(x.shape[2]))
    total = None
    passes = inference_passes(scales, flip)
    for scale, mirrored in passes:
        probs = tf.nn.softmax(_pass_logits(model, x, scale, mirrored, input_scale, out_hw), axis=-1)
        total = probs if total is None else total + probs
    if len(passes) > 1:
        total = total / float(len(passes))
    out = total.numpy().astype(np.float32, copy=False)
    return out[0] if single else out


def protocol_probs(model, image, scales: Sequence[float] = (1.0,), flip: bool = False, *,
                   upsample: str = "bilinear_logits", long_side: int | None = None, input_scale: float = 1.0,
                   size: Sequence[int] | None = None) -> np.ndarray:
    """THE test-time probabilities ``(H, W, C)`` of one image ``(H, W, 3)`` under the configured
    protocol (``eval.scales``, ``eval.flip``, ``eval.upsample``, ``eval.long_side``,
    ``data.input_scale``), shared by ``evaluate`` and ``predict`` so both give the same classes.

    ``bicubic_probs``: the official protocol (:func:`cbst_tf.official_eval.official_probs`);
    otherwise :func:`predict_probs`, the image first scaled so its longer side is ``long_side``
    (else by ``input_scale``). ``size``: output size, default the image's.
    """
    if upsample == "bicubic_probs":
        from cbst_tf.official_eval import official_probs

        return official_probs(model, image, scales, flip, size=size, long_side=long_side, input_scale=input_scale)
    factor = long_side / max(np.shape(image)[:2]) if long_side else input_scale
    return predict_probs(model, image, scales, flip, factor, size=size)
