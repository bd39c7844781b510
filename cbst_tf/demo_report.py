"""The demo's evaluation and report material: every model's mIoU on the labelled target split,
the per-round label statistics of each method and the figures (:mod:`cbst_tf.report`).
``cbst-tf demo`` (:mod:`cbst_tf.demo`) writes them into ``report.json`` / ``report.md``."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cbst_tf.config import Config
from cbst_tf.io import atomic_write_json, read_json
from cbst_tf.layout import PriorsLayout, RunLayout, priors_file

METHODS = ("st", "cbst", "cbst_sp")
ROW_NAMES = {"source_only": "Source only", "st": "ST", "cbst": "CBST", "cbst_sp": "CBST-SP",
             "oracle": "Oracle (target labels)"}
PANEL_IMAGES = 4


def method_dir(out: Path, method: str) -> Path:
    """``<out>/runs/<method>``: the run directory (:class:`~cbst_tf.layout.RunLayout`) of one row."""
    return out / "runs" / method


def evaluate_all(cfg: Config, weights: dict[str, Path]) -> tuple[dict, dict]:
    """mIoU of every model on the labelled target split, and panels for the first images."""
    from cbst_tf.data.reader import eval_dataset, read_manifest
    from cbst_tf.evaluate.evaluator import evaluate_model
    from cbst_tf.evaluate.run import load_model

    total = int(read_manifest(cfg.data.target_eval)["num_examples"])
    results, panels = {}, {}
    for name, path in weights.items():
        cache = Path(cfg.runtime.workdir).parent.parent / "eval" / f"{name}.json"  # <out>/eval
        kept: list = []

        def keep(example: dict, gt: np.ndarray, pred: np.ndarray, kept: list = kept) -> None:
            if len(kept) < PANEL_IMAGES:
                kept.append((example["image"], gt, pred))

        result = evaluate_model(load_model(cfg, path), eval_dataset(cfg.data.target_eval, cfg.data),
                                cfg.eval.protocol, cfg.eval.scales, cfg.eval.flip, input_scale=cfg.data.input_scale,
                                total=total, on_prediction=keep, description=f"evaluate {name}",
                                upsample=cfg.eval.upsample, long_side=cfg.eval.long_side)
        result["weights"] = str(path)
        atomic_write_json(cache, result)
        results[name], panels[name] = result, kept
    return results, panels


def method_rounds(out: Path) -> dict[str, list[dict]]:
    """Per-round label stats of each finished self-training method, by method id."""
    rounds = {}
    for method in METHODS:
        summary = RunLayout(method_dir(out, method)).selftrain_summary
        if summary.is_file():
            rounds[method] = read_json(summary)["rounds"]
    return rounds


def has_quality(rounds: dict[str, list[dict]]) -> bool:
    return bool(rounds) and all(r and all("pseudo_label_quality" in s for s in r) for r in rounds.values())


def write_figures(out: Path, cfg: Config, panels: dict) -> list[str]:
    import shutil

    from cbst_tf.report import plot_quality, plot_selection, qualitative_panels, save_rgb_png

    made = []
    rounds = {ROW_NAMES[k]: v for k, v in method_rounds(out).items()}
    selection = {k: v for k, v in rounds.items() if k in (ROW_NAMES["st"], ROW_NAMES["cbst"])}
    if selection and all(selection.values()):
        plot_selection(selection, out / "selection_per_class.png",
                       "Pseudo-label pixels selected per class and round (ST vs CBST)")
        made.append("selection_per_class.png")
    if has_quality(rounds):
        plot_quality(rounds, out / "pseudo_label_quality.png",
                     "Pseudo-labels against the target-train labels (never used by the methods)")
        made.append("pseudo_label_quality.png")
    grid = PriorsLayout(Path(priors_file(cfg)).parent).grid
    if grid.is_file():
        shutil.copyfile(grid, out / "spatial_priors.png")
        made.append("spatial_priors.png")
    columns = [m for m in ("source_only", "st", "cbst", "cbst_sp") if m in panels]
    if columns:
        rows = []
        for i in range(min(len(panels[c]) for c in columns)):
            image, gt, _ = panels[columns[0]][i]
            named = {"ground truth": gt}
            named.update({ROW_NAMES[c]: panels[c][i][2] for c in columns})
            rows.append(qualitative_panels(image, named))
        save_rgb_png(out / "qualitative.png", np.concatenate(rows, axis=0))
        made.append("qualitative.png")
    return made
