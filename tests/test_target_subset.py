"""CRST's class-balanced target subset (issue 30, ``selftrain.target_subset``): the source model's
per-image score against the numpy reference, and every round's label step restricted to it."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
from test_label_step import SIZE, make_cfg, read_pseudo, save_model, target  # noqa: F401  (fixture)

from cbst_tf.algos import class_balanced_score, image_class_confidence
from cbst_tf.io import read_json
from cbst_tf.layout import RunLayout


def test_device_class_confidence_equals_the_numpy_reference():
    from cbst_tf.selftrain.target_subset import class_confidence

    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.full(7, 0.3), size=(30, 40)).astype(np.float32)
    probs[0, :5] = 1.0 / 7  # ties: the first class wins in both
    sums, counts = class_confidence(tf.constant(probs), 7)
    want_sums, want_counts = image_class_confidence(probs)
    np.testing.assert_array_equal(counts, want_counts)
    np.testing.assert_allclose(sums, want_sums, rtol=1e-12, atol=0)


def _reference_scores(model, target_dir):
    """The score of every target image from the label step's probabilities, by numpy."""
    from cbst_tf.config import load_config
    from cbst_tf.data.reader import eval_dataset
    from cbst_tf.models import build_model

    cfg = load_config(None, ["data.parallel_calls=1"])
    stride = build_model(cfg.model.name, 19, width=0.0625, dropout=0.0, upsample=False)
    stride.set_weights(model.get_weights())
    scores = {}
    for ex in eval_dataset(target_dir, cfg.data).as_numpy_iterator():
        logits = stride(ex["image"][None]).numpy().astype(np.float16).astype(np.float32)
        p = tf.nn.softmax(tf.image.resize(logits, SIZE, method="bilinear")[0], axis=-1).numpy()
        scores[ex["source_id"].decode()] = class_balanced_score(*image_class_confidence(p))
    return scores


def test_label_steps_read_only_the_highest_scoring_images(tmp_path, target):  # noqa: F811
    from cbst_tf.selftrain.label_step import run_label

    cfg = make_cfg(tmp_path / "w", target, "cbst", ["selftrain.target_subset=0.5"])
    model = save_model(cfg, seed=2)
    label_dir = run_label(cfg, 1)
    scores = _reference_scores(model, target)
    ranked = sorted(scores, key=lambda s: -scores[s])
    assert len(scores) == 6 and scores[ranked[2]] > scores[ranked[3]]  # a clear cut
    info = read_json(RunLayout.of(cfg).target_subset)
    assert sorted(info["ids"]) == sorted(ranked[:3]) and info["num_images"] == 6
    for sid, s in scores.items():
        assert abs(info["scores"][sid] - s) < 1e-5
    assert sorted(read_pseudo(label_dir)) == sorted(ranked[:3])
    stats = read_json(label_dir / "stats.json")
    assert stats["num_images"] == 3 and sum(stats["predicted_pixels"]) == 3 * SIZE[0] * SIZE[1]
    # another portion: recomputed (keyed), never reused
    cfg2 = make_cfg(tmp_path / "w", target, "cbst", ["selftrain.target_subset=0.34"])
    from cbst_tf.selftrain.target_subset import target_subset_ids

    assert sorted(target_subset_ids(cfg2)) == sorted(ranked[:2])
    assert read_json(RunLayout.of(cfg2).target_subset)["portion"] == 0.34


@pytest.mark.parametrize("portion", [0.0, 1.5])
def test_portion_out_of_range_is_a_config_error(portion):
    from cbst_tf.config import load_config
    from cbst_tf.errors import ConfigError

    with pytest.raises(ConfigError, match="selftrain.target_subset"):
        load_config(None, [f"selftrain.target_subset={portion}"])
