"""CRST's model regularisation wired into finetuning (issue 30): the loop's MR step against a
numpy reference, weight 0 reproducing CBST bit for bit, and the tagged input pipeline."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from cbst_tf import runtime
from cbst_tf.config import Config
from cbst_tf.train.loop import make_train_step, train
from cbst_tf.train.optimizer import build_optimizer


def _setup():
    cfg = Config()
    cfg.runtime.strategy, cfg.runtime.seed = "default", 4
    cfg.train.lr, cfg.train.schedule, cfg.train.weight_decay = 0.05, "poly", 0.0
    return cfg, runtime.setup(cfg)


def _model():
    keras.utils.set_random_seed(3)
    inp = keras.Input((None, None, 3))
    h = keras.layers.Rescaling(1 / 127.5, -1.0)(inp)
    h = keras.layers.Conv2D(4, 3, padding="same", activation="relu")(h)
    return keras.Model(inp, keras.layers.Conv2D(5, 1)(h))


def _batches(n=12, tagged=True):
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, (n, 8, 8, 3)).astype("float32")
    y = rng.integers(0, 5, (n, 8, 8)).astype("int32")
    y[:, :2] = 255
    t = np.arange(n) % 3 != 0  # two target images in three

    def dataset_fn(segment):
        parts = (x, y, t) if tagged else (x, y)
        return tf.data.Dataset.from_tensor_slices(parts).shuffle(n, seed=segment).batch(4, drop_remainder=True).repeat()

    return dataset_fn, (x, y, t)


def _train(tmp_path, name, regularizer, tagged=True, steps=6):
    cfg, rt = _setup()
    model = _model()
    opt = build_optimizer(cfg, model, total_steps=steps)
    result = train(model, opt, _batches(tagged=tagged)[0], rt, steps=steps, ckpt_dir=tmp_path / name,
                   checkpoint_every=3, log_every=3, regularizer=regularizer)
    return result, model


@pytest.mark.parametrize("kind", ["mrkld", "mrent", "mrl2"])
def test_weight_zero_reproduces_cbst_bit_for_bit(tmp_path, kind):
    base, mb = _train(tmp_path, "cbst", None, tagged=False)
    zero, mz = _train(tmp_path, kind, (kind, 0.0))
    assert zero.losses == base.losses
    for a, b in zip(mb.get_weights(), mz.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    moved, mm = _train(tmp_path, kind + "_on", (kind, 0.5))
    assert max(float(np.abs(a - b).max()) for a, b in zip(mb.get_weights(), mm.get_weights(), strict=True)) > 1e-4


def _reference_loss(logits, labels, is_target, kind, alpha):
    """The MR loss written out per pixel (docs/CRST.md): mean CE over labelled pixels plus alpha times
    the mean r(p) over the labelled pixels of target images."""
    ce, n, reg, m = 0.0, 0, 0.0, 0
    for b in range(logits.shape[0]):
        for i in range(logits.shape[1]):
            for j in range(logits.shape[2]):
                if labels[b, i, j] == 255:
                    continue
                z = logits[b, i, j].astype(np.float64)
                p = np.exp(z - z.max())
                p /= p.sum()
                ce -= np.log(p[labels[b, i, j]])
                n += 1
                if is_target[b]:
                    r = {"mrkld": -np.mean(np.log(p)), "mrent": np.sum(p * np.log(p)), "mrl2": np.sum(p * p)}[kind]
                    reg += r
                    m += 1
    return ce / n + (alpha * reg / m if m else 0.0)


@pytest.mark.parametrize("kind", ["mrkld", "mrent", "mrl2"])
def test_one_step_follows_the_reference_loss(kind):
    """The step's gradient is the gradient of the reference loss: one SGD step without momentum
    or decay moves the weights by -lr * dL/dw, with dL/dw from finite differences of the reference."""
    cfg, rt = _setup()
    cfg.train.momentum, cfg.train.schedule, cfg.train.lr = 0.0, "fixed", 0.5
    model = _model()
    _, (x, y, t) = _batches()
    x, y, t = x[:4], y[:4], t[:4]
    weights = [w.copy() for w in model.get_weights()]
    opt = build_optimizer(cfg, model, total_steps=1)
    step = make_train_step(model, opt, rt.strategy, regularizer=(kind, 0.7))
    step((tf.constant(x), tf.constant(y), tf.constant(t)))
    after = model.get_weights()
    bias = len(weights) - 1  # the classifier's bias: few parameters, exact finite differences

    def loss_at(b):
        model.set_weights(weights[:bias] + [b])
        return _reference_loss(model(x).numpy(), y, t, kind, 0.7)

    grad = np.zeros_like(weights[bias], np.float64)
    for k in range(grad.size):
        e = np.zeros_like(weights[bias])
        e.flat[k] = 1e-3
        grad.flat[k] = (loss_at(weights[bias] + e) - loss_at(weights[bias] - e)) / 2e-3
    np.testing.assert_allclose(weights[bias] - after[bias], 0.5 * grad, rtol=2e-3, atol=2e-6)
    assert np.abs(grad).max() > 1e-3


def test_tagged_batches_hold_the_same_examples(tmp_path):
    """``mixed_batches(..., tags=...)`` adds the source flag without changing what is drawn."""
    from cbst_tf.data.reader import Source, mixed_batches
    from cbst_tf.data.writer import DatasetWriter

    cfg = Config()
    cfg.data.crop_size = [16, 16]
    rng = np.random.default_rng(1)
    dirs = []
    for d, value in (("src", 1), ("tgt", 2)):
        out = tmp_path / d
        with DatasetWriter(out, num_items=6, shards=1, name=d, fmt="test") as w:
            for k in range(6):
                img = rng.integers(0, 255, (16, 16, 3), np.uint8)
                import cv2

                ok, enc = cv2.imencode(".png", img)
                lab = np.full((16, 16), value, np.uint8)
                w.add(k, enc.tobytes(), "png", 16, 16, f"{d}{k}", lab)
            w.close()
        dirs.append(out)
    sources = [Source(dirs[0], 1), Source(dirs[1], 2)]
    plain = mixed_batches(sources, cfg.data, 4, seed=3).take(5)
    tagged = mixed_batches(sources, cfg.data, 4, seed=3, tags=[False, True]).take(5)
    for (xa, ya), (xb, yb, tb) in zip(plain.as_numpy_iterator(), tagged.as_numpy_iterator(), strict=True):
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(ya, yb)
        # every labelled pixel of a target crop is 2, of a source crop 1
        for k in range(4):
            values = set(np.unique(yb[k]).tolist()) - {255}
            assert values == ({2} if tb[k] else {1})
