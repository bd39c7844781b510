"""The embedded benchmark has a real, learnable domain gap (issue: embedded default data).

A source-only model scores at least 15 mIoU below a model trained on target labels, with
the same small network and budget, and well above chance. Both are trained with the real
pipeline (synth -> convert -> pretrain -> evaluate), only smaller than the demo.
"""

from __future__ import annotations

import copy

import pytest


@pytest.mark.slow
def test_source_only_is_far_below_the_target_oracle_and_far_above_chance(tmp_path):
    """With the demo's default seed, data, model and training budget (the built-in preset).

    Last measured: source-only 17.3 vs oracle 36.2 mIoU on seed 0 (gap 18.9); the demo's
    other seeds are in README.
    """
    from cbst_tf.data.reader import eval_dataset
    from cbst_tf.demo import _prepare_data, demo_config
    from cbst_tf.evaluate.evaluator import evaluate_model
    from cbst_tf.evaluate.run import load_model
    from cbst_tf.train.steps import run_pretrain

    cfg = demo_config(None, [], tmp_path, seed=0, fast=False)
    _prepare_data(cfg, tmp_path, seed=0)
    oracle = copy.deepcopy(cfg)
    oracle.data.source = cfg.data.target
    oracle.runtime.workdir = str(tmp_path / "runs" / "oracle")

    scores = {}
    for name, c in (("source_only", cfg), ("oracle", oracle)):
        weights = run_pretrain(c)
        result = evaluate_model(load_model(c, weights), eval_dataset(c.data.target_eval, c.data), "cityscapes19")
        scores[name] = result["miou"]
    print(f"source-only {scores['source_only']:.1f} mIoU, oracle {scores['oracle']:.1f} mIoU")
    assert scores["oracle"] - scores["source_only"] >= 15.0, scores
    # Chance: a constant "road" prediction scores about road's share / 19 (< 2 mIoU here).
    assert scores["source_only"] >= 8.0, scores
