"""The custom loop in-process: same seed -> same loss curve; a NaN stops it and keeps the last good checkpoint."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from cbst_tf import runtime
from cbst_tf.config import Config
from cbst_tf.errors import CbstError
from cbst_tf.train.loop import train
from cbst_tf.train.optimizer import build_optimizer


def _setup(seed=4):
    cfg = Config()
    cfg.runtime.strategy, cfg.runtime.seed = "default", seed
    cfg.train.lr, cfg.train.schedule = 0.05, "poly"
    return cfg, runtime.setup(cfg)


def _model(activation="relu"):
    inp = keras.Input((None, None, 3))
    h = keras.layers.Rescaling(1 / 127.5, -1.0)(inp)
    h = keras.layers.Conv2D(4, 3, padding="same", activation=activation)(h)
    h = keras.layers.Dropout(0.2)(h)
    return keras.Model(inp, keras.layers.Conv2D(3, 1)(h))


def _data(nan_at=None):
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, (12, 16, 16, 3)).astype("float32")
    y = rng.integers(0, 3, (12, 16, 16)).astype("int32")
    y[:, :3] = 255
    if nan_at is not None:  # unshuffled: the first image of step `nan_at` (1-based) is NaN
        x[2 * (nan_at - 1)] = np.nan

    def dataset_fn(segment):
        ds = tf.data.Dataset.from_tensor_slices((x, y))
        if nan_at is None:
            return ds.shuffle(12, seed=segment).batch(2, drop_remainder=True).repeat()
        # Segments are checkpoint_every = 2 steps of 2 images: continue where the last one ended.
        return ds.repeat().skip(4 * segment).batch(2)

    return dataset_fn


def _run(tmp_path, name, steps=6, nan_at=None, seed=4):
    cfg, rt = _setup(seed)
    model = _model("relu" if nan_at is None else None)  # ReLU would map NaN to 0
    opt = build_optimizer(cfg, model, total_steps=steps)
    return train(model, opt, _data(nan_at), rt, steps=steps, ckpt_dir=tmp_path / name, checkpoint_every=2,
                 log_every=3), model


def test_same_seed_same_loss_curve_and_weights(tmp_path):
    a, ma = _run(tmp_path, "a")
    b, mb = _run(tmp_path, "b")
    c, _ = _run(tmp_path, "c", seed=5)
    assert len(a.losses) == 6 and a.losses == b.losses
    assert a.losses != c.losses
    for x, y in zip(ma.get_weights(), mb.get_weights(), strict=True):
        np.testing.assert_array_equal(x, y)
    # The finished run is not repeated: rerunning resumes at the end and does nothing.
    again, _ = _run(tmp_path, "a")
    assert again.resumed_from == 6 and again.losses == []


def test_nan_loss_stops_with_one_line_error_and_keeps_last_good_checkpoint(tmp_path):
    with pytest.raises(CbstError) as info:
        _run(tmp_path, "nan", steps=8, nan_at=5)
    msg = str(info.value)
    assert "\n" not in msg and msg.startswith("non-finite loss at step 5; last good checkpoint: ")
    assert msg.endswith(str(tmp_path / "nan" / "ckpt-4"))
    assert sorted(p.name for p in (tmp_path / "nan").glob("*.index")) == ["ckpt-2.index", "ckpt-4.index"]
    assert tf.train.latest_checkpoint(str(tmp_path / "nan")).endswith("ckpt-4")
