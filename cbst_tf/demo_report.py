"""The demo's evaluation and report material: every model's mIoU on the labelled target split,
the per-round label statistics of each method and the figures (:mod:`cbst_tf.report`).
``cbst-tf demo`` (:mod:`cbst_tf.demo`) writes them into ``report.json`` / ``report.md``."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cbst_tf.config import Config
from cbst_tf.io import atomic_write_json, read_json
from cbst_tf.layout import DemoLayout, PriorsLayout, RunLayout, priors_file

#: The self-training rows of the default demo (``--methods``), the paper's Table 3 layout.
METHODS = ("st", "cbst", "cbst_sp")
#: Every self-training row the demo can run: id -> (``selftrain.method``, ``selftrain.regularizer``).
#: The CRST rows regularise CBST (-SP: with the spatial priors), as the paper's MRKLD-SP.
ROWS = {"st": ("st", "none"), "cbst": ("cbst", "none"), "cbst_sp": ("cbst_sp", "none"),
        **{f"{r}{sp}": (f"cbst{sp}", r) for r in ("mrkld", "mrent", "mrl2", "lrent") for sp in ("", "_sp")}}
ROW_NAMES = {"source_only": "Source only", "st": "ST", "cbst": "CBST", "cbst_sp": "CBST-SP",
             **{f"{r}{sp}": r.upper() + sp.replace("_sp", "-SP") for r in ("mrkld", "mrent", "mrl2", "lrent")
                for sp in ("", "_sp")},
             "oracle": "Oracle (target labels)"}


def parse_methods(text: str | None) -> tuple[str, ...]:
    """``--methods st,cbst,mrkld_sp`` -> the rows in that order (default :data:`METHODS`); a
    one-line error names an unknown row and lists the known ones."""
    from cbst_tf.bounds import quote
    from cbst_tf.errors import ConfigError

    if text is None:
        return METHODS
    rows = tuple(dict.fromkeys(m.strip() for m in text.split(",") if m.strip()))
    for row in rows:
        if row not in ROWS:
            raise ConfigError(f"--methods: unknown row {quote(row)}; known: {', '.join(ROWS)}")
    if not rows:
        raise ConfigError(f"--methods {quote(text)}: no rows; known: {', '.join(ROWS)}")
    return rows
PANEL_IMAGES = 4


def evaluate_all(cfg: Config, weights: dict[str, Path], demo: DemoLayout) -> tuple[dict, dict]:
    """mIoU of every model on the labelled target split (each also written to the demo's
    ``eval/<row>.json``), and panels for the first images."""
    from cbst_tf.data.reader import read_manifest
    from cbst_tf.evaluate.configured import evaluate_from_config

    total = int(read_manifest(cfg.data.target_eval)["num_examples"])
    results, panels = {}, {}
    for name, path in weights.items():
        kept: list = []

        def keep(example: dict, gt: np.ndarray, pred: np.ndarray, kept: list = kept) -> None:
            if len(kept) < PANEL_IMAGES:
                kept.append((example["image"], gt, pred))

        result = evaluate_from_config(cfg, path, cfg.data.target_eval, total=total, on_prediction=keep,
                                      description=f"evaluate {name}")
        result["weights"] = str(path)
        atomic_write_json(demo.eval(name), result)
        results[name], panels[name] = result, kept
    return results, panels


def method_rounds(out: Path, methods: tuple[str, ...] = METHODS) -> dict[str, list[dict]]:
    """Per-round label stats of each finished self-training row, by row id."""
    rounds = {}
    for method in methods:
        summary = RunLayout(DemoLayout(out).run(method)).selftrain_summary
        if summary.is_file():
            rounds[method] = read_json(summary)["rounds"]
    return rounds


def has_quality(rounds: dict[str, list[dict]]) -> bool:
    return bool(rounds) and all(r and all("pseudo_label_quality" in s for s in r) for r in rounds.values())


def write_figures(out: Path, cfg: Config, panels: dict, methods: tuple[str, ...] = METHODS) -> list[str]:
    import shutil

    from cbst_tf.report import plot_quality, plot_selection, qualitative_panels, save_rgb_png

    made = []
    rounds = {ROW_NAMES[k]: v for k, v in method_rounds(out, methods).items()}
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
