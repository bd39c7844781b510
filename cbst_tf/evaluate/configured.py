"""A configured model evaluated on a labelled TFRecord split: the one place where an experiment's
config (``model.*``, ``data.*``, ``eval.*``) is unpacked into :func:`~cbst_tf.evaluate.evaluator.evaluate_model`'s
arguments. ``cbst-tf evaluate``, the demo's rows and crossval's folds all call it, so they score
with the same protocol, scales, flip, upsampling and input scale."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cbst_tf.config import Config
from cbst_tf.evaluate.evaluator import PredictionHook, evaluate_model
from cbst_tf.evaluate.protocols import Protocol


def load_model(cfg: Config, weights: Path) -> Any:
    """The full-resolution network of ``cfg.model`` with ``weights`` (``model.weights`` is only
    an initialisation for training, so it is not loaded here)."""
    from cbst_tf.models import build_from_config

    return build_from_config(cfg, weights=weights)


def evaluate_from_config(cfg: Config, weights: Path, dataset: str | Path, *, model: Any = None,
                         protocol: Protocol | str | None = None, total: int | None = None,
                         on_prediction: PredictionHook | None = None, description: str = "evaluate") -> dict:
    """mIoU of ``weights`` (or an already loaded ``model``) on the labelled TFRecords ``dataset``,
    with the test settings of ``cfg.eval`` and ``cfg.data`` (:func:`evaluate_model`'s result)."""
    from cbst_tf.data.reader import eval_dataset

    return evaluate_model(model if model is not None else load_model(cfg, weights), eval_dataset(dataset, cfg.data),
                          protocol if protocol is not None else cfg.eval.protocol, cfg.eval.scales, cfg.eval.flip,
                          input_scale=cfg.data.input_scale, total=total, on_prediction=on_prediction,
                          description=description, upsample=cfg.eval.upsample, long_side=cfg.eval.long_side)
