"""Training-time augmentation of one (image, label) pair, as pure TensorFlow ops.

Paper appendix A: random rescaling by a factor in ``scale_range`` (0.7-1.3), a random
``crop_size`` crop (500x500) - images padded with the mean colour, labels with 255 (ignore)
when smaller than the crop - and horizontal flipping. Section 5 (hard sample mining) and
the official code (``issegm/data_mix_PatchMine.py``): with probability ``mine_prob`` the
crop is centred on a pixel of a rare class; as there, a class is first drawn uniformly
among the mined classes present in the image, then a pixel of it uniformly.

Every random draw is *stateless*, derived from a per-example seed, so a pipeline with
parallel calls still produces the same crops for the same seed.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import tensorflow as tf


def _pad_to(image: tf.Tensor, label: tf.Tensor, height: tf.Tensor, width: tf.Tensor,
            mean: Sequence[float]) -> tuple[tf.Tensor, tf.Tensor]:
    """Pad bottom/right up to at least (height, width): image with ``mean``, label with 255."""
    h, w = tf.shape(label)[0], tf.shape(label)[1]
    pads = [[0, tf.maximum(height - h, 0)], [0, tf.maximum(width - w, 0)]]
    # One pad per channel keeps the padded values exactly equal to the mean.
    image = tf.stack([tf.pad(image[..., c], pads, constant_values=float(mean[c])) for c in range(3)], axis=-1)
    label = tf.pad(label, pads, constant_values=255)
    return image, label


def _mined_offset(label: tf.Tensor, classes: tf.Tensor, crop_hw: tuple[int, int],
                  seeds: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """(found, oy, ox): a crop offset centred on a random pixel of a random present mined class."""
    hit = tf.equal(label[..., None], classes)  # (H, W, K)
    present = tf.reduce_any(hit, axis=[0, 1])
    found = tf.reduce_any(present)
    logits = tf.where(present, 0.0, -1e9)[None]
    k = tf.random.stateless_categorical(logits, 1, seeds[0], dtype=tf.int32)[0, 0]
    coords = tf.where(hit[..., k])
    n = tf.maximum(tf.shape(coords, out_type=tf.int64)[0], 1)
    j = tf.random.stateless_uniform([], seeds[1], 0, n, dtype=tf.int64)
    yx = tf.cond(found, lambda: tf.cast(tf.gather(coords, tf.minimum(j, n - 1)), tf.int32),
                 lambda: tf.zeros([2], tf.int32))
    h, w = tf.shape(label)[0], tf.shape(label)[1]
    # Clamping the offset (instead of padding around the pixel) keeps the crop inside the
    # padded image while the chosen pixel stays inside the crop.
    oy = tf.clip_by_value(yx[0] - crop_hw[0] // 2, 0, h - crop_hw[0])
    ox = tf.clip_by_value(yx[1] - crop_hw[1] // 2, 0, w - crop_hw[1])
    return found, oy, ox


def augment(image: tf.Tensor, label: tf.Tensor, seed: tf.Tensor, *, crop_hw: Sequence[int],
            scale_range: Sequence[float], mean: Sequence[float], flip: bool = True,
            mine_classes: Sequence[int] | None = None, mine_prob: float = 0.0,
            soft: Callable[[tf.Tensor, tf.Tensor], tf.Tensor] | None = None) -> tuple[tf.Tensor, ...]:
    """Scale, pad, crop (random or mined) and flip one example.

    ``image``: float32 (H, W, 3) RGB 0..255; ``label``: uint8 (H, W) train ids; ``seed``:
    int64 (2,) per-example seed. Returns float32 (ch, cw, 3) and int32 (ch, cw).

    ``soft(size, offset)`` (LRENT): the (ch, cw, C) soft labels of the crop at ``offset`` (int32
    (2,)) of the image rescaled to ``size`` (int32 (2,)); they are flipped with the crop and
    zeroed where the label is 255, and returned third. The random draws are the same with or
    without it, so the image and label crops are too.
    """
    ch, cw = int(crop_hw[0]), int(crop_hw[1])
    seeds = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), num=7)
    lo, hi = float(scale_range[0]), float(scale_range[1])
    size = tf.shape(label)[:2]
    if hi > lo or lo != 1.0:
        scale = tf.random.stateless_uniform([], seeds[0], lo, hi) if hi > lo else tf.constant(lo)
        hw = tf.cast(tf.shape(label)[:2], tf.float32)
        size = tf.maximum(tf.cast(tf.round(hw * scale), tf.int32), 1)
        # Both resizers use half-pixel centres, so image and label stay aligned.
        image = tf.image.resize(image, size, method="bilinear")
        label = tf.image.resize(label[..., None], size, method="nearest")[..., 0]
    image, label = _pad_to(image, label, ch, cw, mean)
    h, w = tf.shape(label)[0], tf.shape(label)[1]
    oy = tf.random.stateless_uniform([], seeds[1], 0, h - ch + 1, dtype=tf.int32)
    ox = tf.random.stateless_uniform([], seeds[2], 0, w - cw + 1, dtype=tf.int32)
    if mine_classes is not None and len(mine_classes) > 0 and mine_prob > 0.0:
        classes = tf.constant(list(mine_classes), dtype=label.dtype)
        found, my, mx = _mined_offset(label, classes, (ch, cw), seeds[3:5])
        mine = tf.logical_and(found, tf.random.stateless_uniform([], seeds[5]) < mine_prob)
        oy, ox = tf.where(mine, my, oy), tf.where(mine, mx, ox)
    image = image[oy:oy + ch, ox:ox + cw]
    label = label[oy:oy + ch, ox:ox + cw]
    y = soft(size, tf.stack([oy, ox])) if soft is not None else None
    if flip:
        flip_it = tf.random.stateless_uniform([], seeds[6]) < 0.5
        image = tf.cond(flip_it, lambda: image[:, ::-1], lambda: image)
        label = tf.cond(flip_it, lambda: label[:, ::-1], lambda: label)
        if y is not None:
            y = tf.cond(flip_it, lambda: y[:, ::-1], lambda: y)
    image = tf.ensure_shape(image, [ch, cw, 3])
    label = tf.ensure_shape(tf.cast(label, tf.int32), [ch, cw])
    if y is None:
        return image, label
    y = tf.where(tf.equal(label, 255)[..., tf.newaxis], tf.zeros_like(y), y)
    return image, label, tf.ensure_shape(y, [ch, cw, None])
