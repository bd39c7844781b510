"""The masked pixel-wise cross-entropy of Eqs. (1) and (3).

Eq. (3) sums ``-y^T log p`` over labelled pixels; a pseudo-label ``y = 0`` (stored as the ignore
id 255, like unlabelled source pixels) contributes nothing. Training minimises the *mean* over
the valid pixels of the whole global batch, so every replica returns its loss **sum** and its
valid-pixel **count** and the caller divides by the count all-reduced over replicas: replicas
with more ignored pixels then weigh exactly as much as in single-device training.
"""

from __future__ import annotations

import tensorflow as tf

IGNORE_LABEL = 255


def valid_pixel_count(labels: tf.Tensor, ignore_label: int = IGNORE_LABEL) -> tf.Tensor:
    """Number of pixels whose label is not ``ignore_label`` (float32 scalar)."""
    return tf.reduce_sum(tf.cast(tf.not_equal(labels, ignore_label), tf.float32))


def masked_cross_entropy_sum(labels: tf.Tensor, logits: tf.Tensor,
                             ignore_label: int = IGNORE_LABEL) -> tuple[tf.Tensor, tf.Tensor]:
    """``(sum of -log p(label) over valid pixels, number of valid pixels)`` for one (local) batch.

    ``labels`` int [B, H, W]; ``logits`` [B, H, W, C] (cast to float32 so the softmax is stable
    under mixed precision).
    """
    labels = tf.cast(labels, tf.int32)
    valid = tf.not_equal(labels, ignore_label)
    # Ignored pixels need *some* in-range label for the op; their term is masked out below.
    safe = tf.where(valid, labels, tf.zeros_like(labels))
    ce = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=safe, logits=tf.cast(logits, tf.float32))
    mask = tf.cast(valid, tf.float32)
    return tf.reduce_sum(ce * mask), tf.reduce_sum(mask)
