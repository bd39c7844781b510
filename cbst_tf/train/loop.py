"""The distributed custom training loop (step b of the block coordinate descent, section 4.1).

``strategy.run`` inside a ``tf.function`` instead of ``Model.fit``: Keras 3 ``fit`` does not
support MultiWorkerMirroredStrategy (keras-team/keras#20585), and the masked loss needs a
global-batch normalisation that ``fit`` cannot express.

Loss (Eq. 1 / Eq. 3): mean cross-entropy over the valid (label != 255) pixels of the GLOBAL
batch. Each replica all-reduces its valid-pixel count *before* the forward pass and
differentiates ``local_sum / global_count``; the optimiser sums the replica gradients, which
is then exactly the gradient of the global mean whatever the split of ignored pixels.

Resumability: checkpoints (model, optimiser, step) every ``checkpoint_every`` steps and at the
end. The data order is a pure function of ``(seed, step)``: the input is rebuilt at every
checkpoint boundary as ``dataset_fn(segment)`` with ``segment = step // checkpoint_every``, and
a resumed run starts at a boundary, so it sees exactly the batches an uninterrupted run sees
(no multi-GB shuffle buffers in the checkpoint).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import keras
import tensorflow as tf

from cbst_tf import progress
from cbst_tf.errors import CbstError
from cbst_tf.runtime import Runtime
from cbst_tf.train.checkpoint import RunCheckpoint
from cbst_tf.train.crst_loss import (
    regularized_pixels,
    regularized_terms,
    soft_cross_entropy_sum,
    soft_label_count,
)
from cbst_tf.train.loss import valid_pixel_count
from cbst_tf.train.optimizer import coupled_l2_loss, current_lr

DatasetFn = Callable[[int], tf.data.Dataset]


def _scalar(name: str, value: float) -> None:
    """A TensorBoard scalar via core ``tf.summary.write`` (the tensorboard package is not needed).

    The metadata is what ``tensorboard.summary.scalar`` writes: plugin ``scalars``, version 0.
    """
    from tensorflow.core.framework import summary_pb2

    meta = summary_pb2.SummaryMetadata()
    meta.plugin_data.plugin_name = "scalars"
    tf.summary.write(name, tf.constant(value, tf.float32), metadata=meta)


@dataclass
class LoopResult:
    """What a call of :func:`train` did: its final step, where it resumed, the losses it saw."""

    step: int
    resumed_from: int
    losses: list[float] = field(default_factory=list)  # one per step run by THIS call
    checkpoint: str | None = None


def _distribute(strategy: tf.distribute.Strategy, dataset: tf.data.Dataset):
    # DATA sharding: every worker runs the same seeded pipeline and keeps its slice of each
    # global batch, so the global batch is the same whatever the number of workers.
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return strategy.experimental_distribute_dataset(dataset.with_options(options))


def _batches(strategy, dataset_fn: DatasetFn, start: int, every: int) -> Iterator:
    """Global batches for steps ``start, start+1, ...``; the input restarts at every boundary."""
    step = start
    while True:
        iterator = iter(_distribute(strategy, dataset_fn(step // every)))
        for _ in range(every - step % every):
            yield next(iterator)
            step += 1


def make_train_step(model: keras.Model, optimizer, strategy: tf.distribute.Strategy, xla: bool = False,
                    regularizer: tuple[str, float] | None = None):
    """A ``tf.function`` running one optimiser step on a distributed global batch.

    Returns ``(mean cross-entropy, valid pixels, all pixels, images)`` over the global batch.
    ``regularizer``: CRST's model regularisation ``(kind, alpha)`` (batches then carry a third
    element, ``is_target`` bool [B]): ``alpha`` times the mean ``r(p)`` over the pseudo-labelled
    target pixels of the global batch is added (:func:`cbst_tf.train.crst_loss.regularized_terms`;
    their count is all-reduced like the labelled count). ``("lrent", alpha)``: CRST's label
    regularisation; the third element is then float32 [B, h, w, C] soft labels and the loss is
    the soft cross-entropy ``-sum_k y_k log p_k`` over the pixels with ``sum_k y_k != 0`` of the
    global batch (:func:`cbst_tf.train.crst_loss.soft_cross_entropy_sum`; ``alpha`` is already in
    the labels).
    """
    variables = model.trainable_variables
    replicas = strategy.num_replicas_in_sync
    kind, alpha = regularizer if regularizer is not None else ("none", 0.0)
    soft = kind == "lrent"

    def forward_backward(images, labels, extra, global_count, global_reg_count):
        with tf.GradientTape() as tape:
            logits = model(images, training=True)
            if soft:
                loss_sum, _ = soft_cross_entropy_sum(extra, logits)
                loss = loss_sum / tf.maximum(global_count, 1.0)
            else:  # CBST, or MR (CBST's loss exactly at alpha 0)
                loss, loss_sum = regularized_terms(labels, logits, extra, regularizer=kind, weight=alpha,
                                                   global_count=global_count, global_reg_count=global_reg_count)
            # + the optimiser's coupled L2 (gradient wd * w), this replica's share of it
            loss = loss + coupled_l2_loss(optimizer, replicas)
            scaled = optimizer.scale_loss(loss)
        return tape.gradient(scaled, variables), loss_sum

    # XLA compiles the per-replica maths only; the collectives and the optimiser update stay
    # outside, where tf.distribute places them.
    compiled = tf.function(forward_backward, jit_compile=True) if xla else forward_backward

    def replica_step(images, labels, extra):
        ctx = tf.distribute.get_replica_context()
        count = soft_label_count(extra) if soft else valid_pixel_count(labels)
        global_count = ctx.all_reduce(tf.distribute.ReduceOp.SUM, count)
        global_reg_count = global_count
        if kind not in ("none", "lrent"):
            reg_count = tf.reduce_sum(regularized_pixels(labels, extra))
            global_reg_count = ctx.all_reduce(tf.distribute.ReduceOp.SUM, reg_count)
        grads, loss_sum = compiled(images, labels, extra, global_count, global_reg_count)
        optimizer.apply(grads, variables)
        pixels = tf.cast(tf.size(labels), tf.float32)
        return loss_sum, count, pixels, tf.cast(tf.shape(images)[0], tf.float32)

    @tf.function
    def train_step(batch):
        images, labels = batch[0], batch[1]
        # MR: is_target flags; LRENT: soft labels; CBST: a constant stands in (never read).
        extra = batch[2] if kind != "none" else tf.zeros([0], tf.bool)
        per_replica = strategy.run(replica_step, args=(images, labels, extra))
        loss_sum, count, pixels, n_images = (
            strategy.reduce(tf.distribute.ReduceOp.SUM, t, axis=None) for t in per_replica)
        return loss_sum / tf.maximum(count, 1.0), count, pixels, n_images

    return train_step


def train(model: keras.Model, optimizer, dataset_fn: DatasetFn, rt: Runtime, *, steps: int,
          ckpt_dir: str | Path, checkpoint_every: int, keep_checkpoints: int = 3, log_every: int = 20,
          tb_dir: str | Path | None = None, description: str = "train",
          regularizer: tuple[str, float] | None = None) -> LoopResult:
    """Train ``model`` (built in ``rt.strategy.scope()``) until ``steps``, resuming from ``ckpt_dir``.

    ``dataset_fn(segment)`` returns the global-batch dataset ``(image, label)`` (with ``regularizer``:
    ``(image, label, is_target)``, for LRENT ``(image, label, soft labels)``) for steps
    ``[segment * checkpoint_every, (segment + 1) * checkpoint_every)``. A non-finite loss stops
    with a one-line :class:`CbstError`; no checkpoint is written after it.
    """
    strategy = rt.strategy
    with strategy.scope():
        step_var = tf.Variable(0, dtype=tf.int64, trainable=False, name="train_step",
                               aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA)
    ckpt = RunCheckpoint(ckpt_dir, keep_checkpoints, is_chief=rt.is_chief, worker_index=rt.worker_index,
                         model=model, optimizer=optimizer, step=step_var,
                         # Keras 3 does not expose RNG states (dropout's SeedGenerator) as
                         # checkpoint dependencies of the model; listing every model variable
                         # saves them too, so a resumed run draws the same dropout masks.
                         model_variables=list(model.variables))
    latest = ckpt.restore_latest()
    start = int(step_var.numpy())
    result = LoopResult(step=start, resumed_from=start, checkpoint=latest)
    if start >= steps:
        return result
    if latest:
        progress.log(f"{description}: resuming at step {start} from {latest}")

    train_step = make_train_step(model, optimizer, strategy, xla=rt.xla, regularizer=regularizer)
    writer = (tf.summary.create_file_writer(str(tb_dir)) if tb_dir and rt.is_chief
              else tf.summary.create_noop_writer())
    batches = _batches(strategy, dataset_fn, start, checkpoint_every)
    window: list[float] = []
    images = pixels = valid = 0.0
    tick = time.perf_counter()
    step = start
    for _ in progress.track(range(start, steps), total=steps - start, description=description):
        lr = current_lr(optimizer)
        loss, count, n_pix, n_img = train_step(next(batches))
        loss = float(loss)
        step += 1
        if not math.isfinite(loss):
            raise CbstError(f"non-finite loss at step {step}; last good checkpoint: {ckpt.latest or 'none'}")
        result.losses.append(loss)
        window.append(loss)
        images += float(n_img)
        pixels += float(n_pix)
        valid += float(count)
        if step % log_every == 0 or step == steps:
            rate = images / max(time.perf_counter() - tick, 1e-9)
            mean = sum(window) / len(window)
            with writer.as_default(step=step):
                _scalar("loss", mean)
                _scalar("learning_rate", lr)
                _scalar("images_per_second", rate)
                _scalar("ignored_pixel_share", 1.0 - valid / max(pixels, 1.0))
            progress.log(f"{description}: step {step}/{steps} loss {mean:.4f} lr {lr:.3g} {rate:.1f} img/s")
            window.clear()
            images = pixels = valid = 0.0
            tick = time.perf_counter()
        if step % checkpoint_every == 0 or step == steps:
            step_var.assign(step)
            result.checkpoint = ckpt.save(step)
    writer.flush()
    result.step = step
    return result
