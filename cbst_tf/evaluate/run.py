"""``cbst-tf evaluate``: mIoU of trained weights on the labelled target split.

Reads ``data.target_eval`` (TFRecords with labels), predicts every image at its label
resolution with ``eval.scales`` / ``eval.flip`` (multi-scale testing, Table 3 "MST"),
scores it under ``eval.protocol`` and writes, into the run directory (``--out``, default
``<workdir>/eval/<weights name>``):

* ``metrics.json`` - ``miou``, ``iou`` (class -> IoU, null when undefined), ``means``,
  ``confusion_matrix``, ``protocol``, ``classes``, ``num_images``, ``weights``, ``scales``,
  ``flip`` (scores in percent, as in the paper);
* ``metrics.md`` - the paper's table layout (columns = classes + mean);
* ``predictions/`` - with ``eval.save_predictions`` (N, or -1 for all): train-id PNGs and
  image | ground truth | prediction panels.

Every file is written atomically; ``metrics.json`` last. The ``eval.min_miou`` gate is
checked only after the outputs exist, so a failing CI run still leaves its evidence.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

from cbst_tf import environment
from cbst_tf.config import Config
from cbst_tf.errors import CbstError, GateError
from cbst_tf.io import atomic_dir, atomic_write_json, atomic_write_text, check_writable
from cbst_tf.layout import RunLayout, pretrained_weights, require
from cbst_tf.outdir import claim_out
from cbst_tf.progress import log


def latest_weights(cfg: Config) -> Path:
    """The newest finished model in the workdir: the last round's
    ``round_R/finetune/final.weights.h5``, else the source model (``pretrain/final.weights.h5``)."""
    rounds = RunLayout.of(cfg).finetuned_rounds()
    if rounds:
        return rounds[-1][1]
    return require(pretrained_weights(cfg), "trained weights",
                   "run `cbst-tf pretrain` / `cbst-tf selftrain` first, or pass --weights")


def _check_dataset(cfg: Config) -> tuple[Path, dict]:
    from cbst_tf.data.reader import read_manifest

    if not cfg.data.target_eval:
        raise CbstError("data.target_eval: no labelled evaluation dataset set (pass --split DIR)")
    directory = Path(cfg.data.target_eval)
    manifest = read_manifest(directory)
    if not manifest.get("labelled", False):
        raise CbstError(f"{directory / 'manifest.json'}: dataset has no labels; evaluation needs ground truth")
    from cbst_tf.data.manifest import check_class_count

    check_class_count(manifest, directory / "manifest.json", cfg.data.num_classes)
    return directory, manifest


def run_evaluate(cfg: Config, weights: Path | None = None, out: Path | None = None) -> dict:
    """Evaluate ``weights`` (default :func:`latest_weights`) on ``data.target_eval``; write the
    outputs; raise :class:`GateError` (exit 3) when mIoU < ``eval.min_miou``. Returns metrics."""
    from cbst_tf import runs
    from cbst_tf.evaluate.protocols import get_protocol

    protocol = get_protocol(cfg.eval.protocol)
    if cfg.data.num_classes != protocol.num_classes:
        raise CbstError(f"data.num_classes: {cfg.data.num_classes} classes, but eval.protocol "
                        f"{protocol.name} scores a {protocol.num_classes}-class model")
    weights = require(Path(weights), "weights file", "check --weights") if weights else latest_weights(cfg)
    directory, manifest = _check_dataset(cfg)
    name = RunLayout.run_name(weights)
    claim = None
    if out is not None:  # a user-named directory: only an earlier evaluation's output is written into
        claim = claim_out(out, "evaluate", {"--weights": weights, "--split": directory})
        out = claim.path
    else:  # the run directory's eval/<name>: found unwritable now, not after the evaluation
        out = RunLayout.of(cfg).eval(name)
        check_writable(out, "evaluation output")
    try:
        with runs.step(cfg, out, "evaluate", resumable=False, record=False):  # outputs: metrics.json last
            metrics = _evaluate(cfg, weights, directory, manifest, protocol, out, name)
    except BaseException:
        if claim is not None:
            claim.release()
        raise
    if claim is not None:
        claim.seal()
    _gate(metrics["miou"], cfg.eval.min_miou)
    return metrics


def _evaluate(cfg: Config, weights: Path, directory: Path, manifest: dict, protocol: Any, out: Path,
              name: str) -> dict:
    from cbst_tf.evaluate.configured import evaluate_from_config, load_model
    from cbst_tf.evaluate.predictions import PredictionSaver
    from cbst_tf.evaluate.report import format_table, print_table

    model = load_model(cfg, weights)  # a wrong weights file fails before anything is logged
    log(f"evaluate: {weights} on {directory} ({manifest.get('num_examples', '?')} images), "
        f"protocol {protocol.name}, scales {cfg.eval.scales}, flip {cfg.eval.flip}, upsample {cfg.eval.upsample}"
        + (f", long side {cfg.eval.long_side}" if cfg.eval.long_side else ""))
    save = cfg.eval.save_predictions
    pred_dir = atomic_dir(out / "predictions") if save != 0 else contextlib.nullcontext(None)
    with pred_dir as tmp:
        result = evaluate_from_config(cfg, weights, directory, model=model, protocol=protocol,
                                      total=manifest.get("num_examples"), on_prediction=PredictionSaver(tmp, save) if tmp is not None else None)

    metrics = {
        "miou": result["miou"], "iou": result["iou"], "means": result["means"],
        "protocol": protocol.name, "classes": result["classes"], "num_images": result["num_images"],
        "weights": str(weights), "dataset": str(directory), "scales": result["scales"],
        "flip": result["flip"], "input_scale": result["input_scale"],
        "upsample": result["upsample"], "long_side": result["long_side"],
        "num_pixels": result["num_pixels"], "confusion_matrix": result["confusion_matrix"],
        "environment": environment.describe({"weights": weights}),
    }
    title = f"{protocol.table}: {name} on {directory.name}"
    atomic_write_text(out / "metrics.md", f"# {title}\n\n" + format_table({name: metrics}, protocol))
    atomic_write_json(out / "metrics.json", metrics)
    print_table({name: metrics}, protocol, title=title)
    log(f"evaluate: wrote {out / 'metrics.json'}")
    return metrics


def _gate(miou: float | None, minimum: float | None) -> None:
    """CI quality gate (exit code 3): mIoU below ``eval.min_miou`` (undefined mIoU fails too)."""
    if minimum is None:
        return
    if miou is None:
        raise GateError(f"mIoU is undefined (no evaluated pixels), below --min-miou {minimum:.2f}")
    if miou < minimum:
        raise GateError(f"mIoU {miou:.2f} is {minimum - miou:.2f} below --min-miou {minimum:.2f}")
