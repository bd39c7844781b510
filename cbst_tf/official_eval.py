"""The official CBST test-time protocol (yzou2/CBST ``issegm/evaluate.py``), ``eval.upsample:
bicubic_probs``.

How the released models were scored, step by step, and how this module does each step:

1. **Test scale as a longer side.** The image is resized so that its longer side is
   ``--test-scales`` pixels (2048 for Cityscapes evaluation, i.e. unchanged; 1850 when the
   official code generates pseudo-labels), with PIL on the uint8 image: Lanczos
   ("ANTIALIAS") when both sides shrink, bicubic when both grow, bilinear otherwise. Here:
   ``eval.long_side`` (else ``data.input_scale``) times each of ``eval.scales``, resized by
   PIL exactly so.
2. **Padding to the stride.** The normalised image is zero-padded at the bottom/right to a
   multiple of 8; zero after normalisation is the mean, which is what we pad with.
3. **Network and flip.** Softmax probabilities at output stride 8; with flipping, the
   padded input is mirrored and the mirrored-back probabilities of both passes averaged.
4. **Upsampling.** Each class's probability map is resized by exactly 8 with PIL bicubic
   interpolation, cropped to the (resized) image, and, if the image was resized in step
   1, resized to the original size (same PIL filter choice as step 1). Here:
   ``tf.image.resize(..., antialias=True)``, whose bicubic / Lanczos-3 / bilinear kernels
   with normalised border weights equal PIL's on float maps to ~2e-7 (tested).
5. **Arg-max** of the averaged probabilities.

The official code has no multi-scale testing (``assert len(crop_sizes) == 1``); with
several ``eval.scales`` the probabilities of every scale (each brought to the output size
as in step 4) are averaged, as :mod:`cbst_tf.inference` does.

Our default (``bilinear_logits``) instead resizes images bilinearly, runs the full
network (logits upsampled bilinearly inside it, grid-aligned) and averages softmaxes.
"""

from __future__ import annotations

from collections.abc import Sequence

import keras
import numpy as np
import tensorflow as tf
from PIL import Image

from cbst_tf.models.resize import OUTPUT_STRIDE

_CACHE: dict[str, object] = {}


def pil_filter(src_hw: Sequence[int], dst_hw: Sequence[int]) -> str:
    """The official resize filter: ``lanczos3`` to shrink, ``bicubic`` to grow, else ``bilinear``."""
    if dst_hw[0] < src_hw[0] and dst_hw[1] < src_hw[1]:
        return "lanczos3"
    if dst_hw[0] > src_hw[0] and dst_hw[1] > src_hw[1]:
        return "bicubic"
    return "bilinear"


_PIL = {"lanczos3": Image.LANCZOS, "bicubic": Image.BICUBIC, "bilinear": Image.BILINEAR}


def resize_image(image: np.ndarray, hw: Sequence[int]) -> np.ndarray:
    """``image`` (H, W, 3) 0..255 resized to ``hw`` as the official code does (PIL, uint8)."""
    h, w = int(hw[0]), int(hw[1])
    if tuple(image.shape[:2]) == (h, w):
        return np.asarray(image, np.float32)
    pil = Image.fromarray(np.clip(np.asarray(image), 0, 255).astype(np.uint8))
    return np.asarray(pil.resize((w, h), _PIL[pil_filter(image.shape[:2], (h, w))]), np.float32)


def resize_maps(maps: tf.Tensor, hw: Sequence[int], method: str | None = None) -> tf.Tensor:
    """PIL-equivalent resize of float maps ``(N, h, w, C)`` to ``hw`` (filter by direction)."""
    maps = tf.convert_to_tensor(maps, tf.float32)
    src = (int(maps.shape[1]), int(maps.shape[2]))
    if src == tuple(int(v) for v in hw):
        return maps
    return tf.image.resize(maps, [int(hw[0]), int(hw[1])], method=method or pil_filter(src, hw), antialias=True)


def long_side_size(hw: Sequence[int], long_side: int) -> tuple[int, int]:
    """``hw`` scaled so that its longer side is ``long_side`` (official ``ts.Scale``: round)."""
    h, w = int(hw[0]), int(hw[1])
    if max(h, w) == long_side:
        return h, w
    if w >= h:
        return max(1, int(np.round(long_side * h / w))), long_side
    return long_side, max(1, int(np.round(long_side * w / h)))


def stride_model(model: keras.Model) -> keras.Model:
    """``model`` without its final :class:`~cbst_tf.models.resize.ResizeLogits` (stride-8 logits)."""
    if _CACHE.get("model") is model:
        return _CACHE["stride"]
    last = model.layers[-1]
    inner = model
    if type(last).__name__ == "ResizeLogits":
        inner = keras.Model(model.inputs, last.input[0], name=f"{model.name}_stride{OUTPUT_STRIDE}")
    fn = tf.function(lambda x: tf.nn.softmax(tf.cast(inner(x, training=False), tf.float32), axis=-1),
                     input_signature=[tf.TensorSpec([None, None, None, 3], tf.float32)], reduce_retracing=True)
    _CACHE.update(model=model, stride=fn)
    return fn


def pad_value(model: keras.Model) -> np.ndarray:
    """The RGB value that the network normalises to zero (what the official code pads with)."""
    try:
        return np.asarray(model.get_layer("normalize").mean, np.float32)  # RGB, normalises to 0
    except ValueError:
        return np.zeros(3, np.float32)


def official_probs(model: keras.Model, image: np.ndarray, scales: Sequence[float] = (1.0,), flip: bool = False,
                   size: Sequence[int] | None = None, long_side: int | None = None,
                   input_scale: float = 1.0) -> np.ndarray:
    """Class probabilities ``(H, W, C)`` of one image ``(H, W, 3)`` under the official protocol
    (module docstring). ``size``: output size (default the image size)."""
    image = np.asarray(image, np.float32)
    hw = image.shape[:2]
    out_hw = tuple(int(v) for v in (size if size is not None else hw))
    forward = stride_model(model)
    pad = pad_value(model)
    total = None
    for scale in scales:
        if long_side:
            base = long_side_size(hw, int(round(long_side * scale)))
        else:
            f = input_scale * scale
            base = (max(1, int(hw[0] * f + 0.5)), max(1, int(hw[1] * f + 0.5)))
        x = resize_image(image, base)
        s = OUTPUT_STRIDE
        ph, pw = -(-base[0] // s) * s, -(-base[1] // s) * s
        padded = np.broadcast_to(pad, (ph, pw, 3)).copy()
        padded[: base[0], : base[1]] = x
        batch = padded[None] if not flip else np.stack([padded, padded[:, ::-1]])
        probs = forward(tf.constant(batch))
        if flip:
            probs = 0.5 * (probs[:1] + probs[1:, :, ::-1])
        up = resize_maps(probs, (probs.shape[1] * s, probs.shape[2] * s), method="bicubic")
        up = up[:, : base[0], : base[1]]
        up = resize_maps(up, out_hw)
        total = up if total is None else total + up
    total = total / float(len(scales))
    return total.numpy()[0].astype(np.float32, copy=False)
