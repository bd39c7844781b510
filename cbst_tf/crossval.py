"""``cbst-tf crossval --city C``: the NTHU cross-city protocol of Table 1 (section 5.1).

Each city has 100 labelled test images. Following Chen et al. (ICCV 2017) and the paper,
they are split into 10 folds; for each fold we self-train on the other 90 images, used
WITHOUT labels, and test on the 10 held-out ones. Folds: the images' ``source_id``\\ s
sorted, permuted with ``numpy.random.default_rng(FOLD_SEED)``, then cut into 10 contiguous
groups (``numpy.array_split``) - fixed and documented, so every run and every user gets
the same folds. Rows: the source model, ST, CBST (and the configured method if it is
another one, e.g. CBST-SP); per-fold scores and pooled scores (confusion matrices of the
10 folds summed, so the pooled mIoU is over all 100 images' pixels).

Orchestration, like the demo: it runs pretraining and self-training (:mod:`cbst_tf.selftrain`)
and scores with :mod:`cbst_tf.evaluate`, so it sits above both.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cbst_tf import progress
from cbst_tf.config import Config
from cbst_tf.errors import CbstError, GateError
from cbst_tf.io import atomic_dir, atomic_write_json, atomic_write_text, read_json
from cbst_tf.layout import FoldLayout, RunLayout, pretrained_weights
from cbst_tf.reuse import NO_EFFECT
from cbst_tf.runs import is_done, step

FOLDS = 10
FOLD_SEED = 2018
ROWS = {"source_only": "Source", "st": "ST", "st_sp": "ST-SP", "cbst": "CBST", "cbst_sp": "CBST-SP"}


def fold_ids(source_ids: list[str], folds: int = FOLDS, seed: int = FOLD_SEED) -> list[list[str]]:
    """The fixed folds: sorted ids, one seeded permutation, ``folds`` contiguous groups."""
    ids = np.array(sorted(source_ids))
    perm = np.random.default_rng(seed).permutation(len(ids))
    return [sorted(ids[part].tolist()) for part in np.array_split(perm, folds)]


def _write_subset(src: str, ids: set[str], out: Path, labelled: bool, data_cfg) -> None:
    """Copy the examples of ``src`` whose source_id is in ``ids`` into a new TFRecord dir."""
    from cbst_tf.data.reader import eval_dataset
    from cbst_tf.data.writer import DatasetWriter

    if (out / "manifest.json").is_file():
        return
    with atomic_dir(out) as tmp:
        with DatasetWriter(tmp, num_items=len(ids), shards=1, name=out.name, fmt="nthu-fold",
                           command="cbst-tf crossval") as writer:
            k = 0
            for ex in eval_dataset(src, data_cfg).as_numpy_iterator():
                sid = ex["source_id"].decode()
                if sid in ids:
                    h, w = ex["image"].shape[:2]
                    writer.add(k, ex["encoded"], ex["format"].decode(), h, w, sid,
                               ex["label"] if labelled else None)
                    k += 1
            writer.close()


def run_crossval(cfg: Config, city: str) -> dict:
    """Run (or resume) the 10 folds for ``city``; writes ``crossval/<city>/results.{json,md}``."""
    from cbst_tf.data.reader import read_manifest

    test_src = cfg.data.target_eval.format(city=city)
    if not test_src:
        raise CbstError("data.target_eval: set it to the city's labelled test TFRecords (may contain {city})")
    manifest = read_manifest(test_src)
    if not manifest.get("labelled"):
        raise CbstError(f"{Path(test_src) / 'manifest.json'}: the city's test split has no labels")
    base = RunLayout.of(cfg).crossval(city)
    # Never skipped when DONE: a rerun resumes the folds, rebuilds the tables and re-checks the gate.
    # Its folds resume, but only under the same settings (evaluation settings included).
    skip = tuple(k for k in NO_EFFECT if k != "eval.") + ("eval.min_miou",)
    with step(cfg, base, f"crossval {city}", resumable=False, resume_skip=skip) as run:
        rows, report = _folds(cfg, city, test_src, base)
        if not is_done(base):
            run.finish(city, outputs=("results.json",))
    gate_row = ROWS[cfg.selftrain.method]
    miou, minimum = rows[gate_row]["miou"], cfg.eval.min_miou
    if minimum is not None and (miou is None or miou < minimum):
        shown = "undefined" if miou is None else f"{miou:.2f}"
        gap = "" if miou is None else f" is {minimum - miou:.2f}"
        raise GateError(f"{gate_row} pooled mIoU {shown}{gap} below --min-miou {minimum:.2f} ({city})")
    return report


def _result_key(path: Path) -> str | None:
    try:
        result = read_json(path)
    except CbstError:
        return None
    return result.get("key") if isinstance(result, dict) else None


def _folds(cfg: Config, city: str, test_src: str, base: Path) -> tuple[dict, dict]:
    """Every fold and method (each resumed from its ``result.json``), pooled; writes the tables."""
    import hashlib

    from cbst_tf.data.manifest import dataset_digest
    from cbst_tf.data.reader import eval_dataset
    from cbst_tf.evaluate.configured import evaluate_from_config
    from cbst_tf.evaluate.confusion import ConfusionMatrix
    from cbst_tf.evaluate.evaluator import summarize
    from cbst_tf.evaluate.report import format_table, print_table
    from cbst_tf.io import file_digest
    from cbst_tf.selftrain.driver import run_method
    from cbst_tf.train.steps import run_pretrain

    source = Path(cfg.selftrain.source_weights) if cfg.selftrain.source_weights else pretrained_weights(cfg)
    if not source.is_file():
        run_pretrain(cfg)
    ids = [ex["source_id"].decode() for ex in eval_dataset(test_src, cfg.data).as_numpy_iterator()]
    methods = ["source_only", "st", "cbst"]
    if cfg.selftrain.method not in methods:
        methods.append(cfg.selftrain.method)
    per_fold: dict[str, list] = {m: [] for m in methods}
    pooled = {}
    # A fold's result is reused only for the same source model and test data (their digests).
    key = hashlib.sha256(f"{file_digest(source)} {dataset_digest(test_src)}".encode()).hexdigest()
    layout = RunLayout.of(cfg)
    for k, test_ids in enumerate(fold_ids(ids)):
        fold: FoldLayout = layout.fold(city, k)
        train_ids = set(ids) - set(test_ids)
        _write_subset(test_src, train_ids, fold.train, False, cfg.data)
        _write_subset(test_src, set(test_ids), fold.test, True, cfg.data)
        for method in methods:
            done = fold.result(method)
            if done.is_file() and _result_key(done) != key:
                progress.log(f"crossval {city}: discarding {done}: made from another source model or test data")
                done.unlink()
            if not done.is_file():
                weights = source
                if method != "source_only":
                    weights = run_method(cfg, fold.method(method), method, source, {"data.target": str(fold.train)},
                                         f"crossval {city} (fold {k}, {method})")
                result = evaluate_from_config(cfg, Path(weights), fold.test,
                                              description=f"evaluate {RunLayout.run_name(Path(weights))}")
                atomic_write_json(done, {**result, "key": key})
            result = read_json(done)
            per_fold[method].append({"fold": k, "miou": result["miou"], "iou": result["iou"]})
            cm = np.asarray(result["confusion_matrix"], np.int64)
            pooled[method] = cm if method not in pooled else pooled[method] + cm
        progress.log(f"crossval {city}: fold {k + 1}/{FOLDS} done")
    rows = {ROWS[m]: summarize(ConfusionMatrix.from_matrix(pooled[m]), cfg.eval.protocol) for m in methods}
    report = {"city": city, "folds": FOLDS, "fold_seed": FOLD_SEED, "protocol": cfg.eval.protocol,
              "pooled": {ROWS[m]: {"miou": rows[ROWS[m]]["miou"], "iou": rows[ROWS[m]]["iou"]} for m in methods},
              "per_fold": {ROWS[m]: per_fold[m] for m in methods}}
    atomic_write_json(base / "results.json", report)
    fold_table = "\n".join(f"| {ROWS[m]} | " + " | ".join(f"{f['miou']:.1f}" for f in per_fold[m]) + " |"
                           for m in methods)
    atomic_write_text(base / "results.md", "\n".join([
        f"# Cross-city adaptation: {city} (Table 1 layout; pooled over {FOLDS} folds)", "",
        format_table(rows, cfg.eval.protocol), "## mIoU per fold", "",
        "| Method | " + " | ".join(str(k) for k in range(FOLDS)) + " |",
        "| --- | " + " | ".join("---:" for _ in range(FOLDS)) + " |", fold_table, ""]))
    print_table(rows, cfg.eval.protocol, title=f"{city}: pooled over {FOLDS} folds")
    return rows, report
