"""CRST's regularised finetuning loss (step b; Zou et al., ICCV 2019, section 4; docs/CRST.md).

Model regularisation (MR) keeps CBST's hard pseudo-labels and adds ``alpha * r(p)`` on the
target pixels that HAVE a pseudo-label (``p = softmax(logits)``, K classes):

* ``mrkld``: ``r = -(1/K) sum_k log p_k`` (KL(u || p) up to a constant); ``dr/dz = p - 1/K``;
* ``mrent``: ``r = sum_k p_k log p_k`` (the negative entropy); ``dr/dz_j = p_j (log p_j - r)``;
* ``mrl2``:  ``r = sum_k p_k^2``; ``dr/dz_j = 2 p_j (p_j - r)``.

Only MRKLD is in the official code (yzou2/CRST ``crst_seg.py``, ``reg_loss_calc``, lines
824-865): ``ce / valid_num + mr_weight_kld * kld / valid_reg_num``, where ``ce`` sums the
cross-entropy over every labelled pixel of the batch (source and target), ``kld`` sums
``-log p_k / K`` over the labelled pixels of target images only (source images carry
``reg_weight = --mr-weight-src = 0``) and ``valid_reg_num`` counts those pixels; the term is
dropped when there are none. We compute the same two means over the GLOBAL batch: every
replica returns sums, and the caller divides by counts all-reduced over replicas
(:func:`regularized_loss`, as :mod:`cbst_tf.train.loop` does for the cross-entropy).

One difference, on purpose: the official code multiplies the per-pixel KLD by the flag twice
(the dataset's per-image ``reg_weight`` is ``--mr-weight-kld`` too, lines 347/359, then
``mr_weight_kld * kld``), so ``--mr-weight-kld 0.1`` weighs the mean KLD by 0.01. Here
``selftrain.mr_weight`` is the ``alpha`` of the paper's loss, applied once; 0.01 reproduces the
code.

Label regularisation (LRENT) trains on soft labels ``y`` (:func:`cbst_tf.algos.lrent_soft_labels`)
with the soft cross-entropy ``-sum_k y_k log p_k`` (``reg_loss_calc_expand``, lines 867-907:
a pixel counts when ``sum_k y_k != 0``; source pixels carry one-hot ``y``).

With weight 0 every MR variant returns the plain masked cross-entropy of
:mod:`cbst_tf.train.loss` exactly (value and gradient; tests/test_crst.py). With a non-zero
weight the cross-entropy and ``r(p)`` share one log-softmax (:func:`regularized_sums`).
"""

from __future__ import annotations

import tensorflow as tf

from cbst_tf.algos.crst import MODEL_REGULARIZERS
from cbst_tf.errors import CbstError
from cbst_tf.train.loss import IGNORE_LABEL, masked_cross_entropy_sum


def _regularizer_of_log_p(log_p: tf.Tensor, kind: str) -> tf.Tensor:
    if kind == "mrkld":
        return -tf.reduce_mean(log_p, axis=-1)
    p = tf.exp(log_p)  # an underflow to 0 gives 0 * finite = 0, never 0 * -inf
    if kind == "mrent":
        return tf.reduce_sum(p * log_p, axis=-1)
    return tf.reduce_sum(p * p, axis=-1)


def _check_kind(kind: str) -> None:
    if kind not in MODEL_REGULARIZERS:
        raise CbstError(f"regularizer: expected one of {', '.join(MODEL_REGULARIZERS)}, got {kind!r}")


def confidence_regularizer(logits: tf.Tensor, kind: str) -> tf.Tensor:
    """Per-pixel ``r(p)`` (shape ``logits.shape[:-1]``, float32) of an MR variant."""
    _check_kind(kind)
    # finite for finite logits
    return _regularizer_of_log_p(tf.nn.log_softmax(tf.cast(logits, tf.float32), axis=-1), kind)


def regularized_pixels(labels: tf.Tensor, is_target: tf.Tensor, ignore_label: int = IGNORE_LABEL) -> tf.Tensor:
    """float32 [B, H, W] mask of the pixels MR applies to: pseudo-labelled pixels of target images.

    ``is_target``: bool [B], True for the target (pseudo-labelled) examples of the batch.
    """
    labelled = tf.not_equal(tf.cast(labels, tf.int32), ignore_label)
    target = tf.reshape(tf.cast(is_target, tf.bool), [-1, 1, 1])
    return tf.cast(tf.logical_and(labelled, target), tf.float32)


def regularized_sums(labels: tf.Tensor, logits: tf.Tensor, is_target: tf.Tensor, kind: str,
                     ignore_label: int = IGNORE_LABEL) -> tuple[tf.Tensor, tf.Tensor]:
    """``(cross-entropy sum over the labelled pixels, r(p) sum over the regularised pixels)`` of one
    (local) batch from ONE log-softmax.

    Why not :func:`cbst_tf.train.loss.masked_cross_entropy_sum` plus :func:`confidence_regularizer`: two
    full-resolution softmaxes and their gradients cost 10-17% of a step of the demo's small
    network; one shared ``log p`` costs 1-3% (``bench/crst_step.py``). The cross-entropy
    ``-log p_label`` then rounds differently from the fused sparse op in the last float32 bits,
    which is why a zero weight takes CBST's loss instead (:func:`regularized_loss`).
    """
    _check_kind(kind)
    log_p = tf.nn.log_softmax(tf.cast(logits, tf.float32), axis=-1)
    labels = tf.cast(labels, tf.int32)
    valid = tf.not_equal(labels, ignore_label)
    safe = tf.where(valid, labels, tf.zeros_like(labels))  # any in-range id; masked out below
    picked = tf.gather(log_p, safe[..., None], batch_dims=3)[..., 0]
    ce_sum = -tf.reduce_sum(picked * tf.cast(valid, tf.float32))
    mask = regularized_pixels(labels, is_target, ignore_label)
    return ce_sum, tf.reduce_sum(_regularizer_of_log_p(log_p, kind) * mask)


def regularized_terms(labels: tf.Tensor, logits: tf.Tensor, is_target: tf.Tensor, *, regularizer: str,
                      weight: float, global_count: tf.Tensor, global_reg_count: tf.Tensor,
                      ignore_label: int = IGNORE_LABEL) -> tuple[tf.Tensor, tf.Tensor]:
    """``(loss, cross-entropy sum)``: one replica's share of the MR loss, to differentiate (replica
    losses add up to the global one), and its cross-entropy sum (for the training log).

    ``CE_sum / max(N, 1) + weight * R_sum / max(M, 1)`` with ``N`` the labelled pixels and ``M``
    the regularised pixels of the GLOBAL batch (all-reduced by the caller before the forward
    pass). ``regularizer="none"`` or ``weight == 0`` is exactly CBST's loss
    (:func:`cbst_tf.train.loss.masked_cross_entropy_sum`, as :mod:`cbst_tf.train.loop` has it).
    """
    if regularizer == "none" or weight == 0.0:
        ce_sum, _ = masked_cross_entropy_sum(labels, logits, ignore_label)
        return ce_sum / tf.maximum(global_count, 1.0), ce_sum
    ce_sum, reg_sum = regularized_sums(labels, logits, is_target, regularizer, ignore_label)
    loss = ce_sum / tf.maximum(global_count, 1.0) + weight * (reg_sum / tf.maximum(global_reg_count, 1.0))
    return loss, ce_sum


def regularized_loss(labels: tf.Tensor, logits: tf.Tensor, is_target: tf.Tensor, *, regularizer: str,
                     weight: float, global_count: tf.Tensor, global_reg_count: tf.Tensor,
                     ignore_label: int = IGNORE_LABEL) -> tf.Tensor:
    """The loss of :func:`regularized_terms` alone."""
    return regularized_terms(labels, logits, is_target, regularizer=regularizer, weight=weight,
                             global_count=global_count, global_reg_count=global_reg_count,
                             ignore_label=ignore_label)[0]


def soft_label_count(soft_labels: tf.Tensor) -> tf.Tensor:
    """Number of pixels with a (soft) label, ``sum_k y_k != 0`` (float32 scalar)."""
    return tf.reduce_sum(tf.cast(tf.not_equal(tf.reduce_sum(soft_labels, axis=-1), 0.0), tf.float32))


def soft_cross_entropy_sum(soft_labels: tf.Tensor, logits: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """``(sum of -sum_k y_k log p_k over labelled pixels, number of labelled pixels)`` for LRENT.

    ``soft_labels`` float32 [B, H, W, C], all zero on unlabelled pixels (which then add
    nothing); one-hot on source pixels.
    """
    y = tf.cast(soft_labels, tf.float32)
    log_p = tf.nn.log_softmax(tf.cast(logits, tf.float32), axis=-1)
    return -tf.reduce_sum(y * log_p), soft_label_count(y)


def soft_cross_entropy_loss(soft_labels: tf.Tensor, logits: tf.Tensor, global_count: tf.Tensor) -> tf.Tensor:
    """One replica's share of the LRENT loss: ``sum / max(N, 1)`` over the GLOBAL labelled pixels."""
    total, _ = soft_cross_entropy_sum(soft_labels, logits)
    return total / tf.maximum(global_count, 1.0)
