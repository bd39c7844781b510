"""The embedded benchmark has a real, learnable domain gap, and CBST-SP closes part of it.

The CI regression gate of the method on the demo's own preset and seed 0: a source-only
model scores well below a model trained on target labels (same network and budget) and
well above chance, and CBST-SP (3 rounds) beats source-only by a measured margin, so a
later change that silently breaks adaptation fails here. Everything runs through the real
pipeline (synth -> convert -> pretrain -> priors -> label/finetune rounds -> evaluate).
"""

from __future__ import annotations

from pathlib import Path

import pytest

# The gate runs the demo preset without its stand-in init stage (synth.init_images=0): the init
# would add a third pretraining run to CI's critical path, and adaptation must hold without it
# too. Measured on this benchmark (v7) at seed 0 without the init: source-only 37.7, CBST-SP
# 39.7, oracle 45.6 mIoU (gap 7.9, CBST-SP +2.0; with the init, the demo's five seeds gave
# CBST-SP +2.6 to +4.8 over source-only; docs/RESEARCH_LOG.md). The bounds leave room for
# another CPU's floating-point rounding (the same code once measured 17.3 and 17.6 mIoU
# source-only on two machines), not for a broken method.
MIN_GAP = 4.0
MIN_CBST_SP_GAIN = 1.0


def configs(out: Path):
    """The demo preset at seed 0 without the init stage (data and source runs under ``out``)
    and its oracle twin."""
    from cbst_tf.demo import demo_config, oracle_config

    cfg = demo_config(None, ["synth.init_images=0"], out, seed=0, fast=False)
    return cfg, oracle_config(cfg, out)


@pytest.mark.slow
def test_gap_to_the_oracle_and_cbst_sp_gain_over_source_only(tmp_path):
    from cbst_tf.demo import oracle_beside, prepare_data
    from cbst_tf.evaluate.configured import evaluate_from_config
    from cbst_tf.layout import RunLayout, priors_file, weights_before_round
    from cbst_tf.selftrain.driver import run_method
    from cbst_tf.selftrain.priors_step import run_priors
    from cbst_tf.train.steps import run_pretrain

    cfg, oracle = configs(tmp_path)
    prepare_data(cfg, tmp_path, seed=0)
    # The oracle needs only the converted data: the demo's second process pretrains it beside
    # source pretrain -> priors -> CBST-SP, so the test's wall time is about two thirds of
    # running them one after the other.
    with oracle_beside(cfg, tmp_path) as oracle_weights:
        weights = {"source_only": run_pretrain(cfg)}
        run_priors(cfg)
        source = weights_before_round(cfg, 1)
        weights["cbst_sp"] = run_method(cfg, tmp_path / "runs" / "cbst_sp", "cbst_sp", source,
                                        {"selftrain.priors": str(priors_file(cfg))})
        weights["oracle"] = oracle_weights()
    assert (RunLayout.of(oracle).pretrain / "DONE").read_text().startswith("steps=1500")

    scores = {name: evaluate_from_config(cfg, w, cfg.data.target_eval)["miou"] for name, w in weights.items()}
    print({k: round(v, 1) for k, v in scores.items()})
    assert scores["oracle"] - scores["source_only"] >= MIN_GAP, scores
    # Chance: a constant "road" prediction scores about road's share / 19 (< 2 mIoU here).
    assert scores["source_only"] >= 8.0, scores
    assert scores["cbst_sp"] - scores["source_only"] >= MIN_CBST_SP_GAIN, scores
