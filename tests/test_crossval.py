"""NTHU 10-fold cross-validation (Table 1 protocol) and the all-rounds driver's resume."""

from __future__ import annotations

import numpy as np
import pytest
from layouts import write_nthu

from cbst_tf.config import load_config
from cbst_tf.crossval import fold_ids
from cbst_tf.errors import ConfigError, GateError
from cbst_tf.io import read_json


def test_folds_partition_the_city_deterministically():
    ids = [f"Rome/Images/Test/pic_{i:03d}.png" for i in range(100)]
    folds = fold_ids(list(reversed(ids)))
    assert folds == fold_ids(ids)  # independent of input order
    assert [len(f) for f in folds] == [10] * 10
    flat = [i for f in folds for i in f]
    assert sorted(flat) == sorted(ids) and len(set(flat)) == 100
    assert folds != fold_ids(ids, seed=1)
    assert folds[0] != sorted(ids)[:10]  # shuffled, not the first ten


@pytest.fixture(scope="module")
def city(tmp_path_factory):
    from cbst_tf.data.convert import convert_dataset

    root = tmp_path_factory.mktemp("nthu")
    write_nthu(root / "raw", "Rome", n_train=0, n_test=20, size=(16, 24), seed=5)
    write_nthu(root / "src", "Rome", n_train=0, n_test=8, size=(16, 24), seed=6)
    test = root / "rome_test"
    convert_dataset(fmt="nthu", root=root / "raw", out=test, split="Rome/test", shards=1, skip_bad=False,
                    workers=1, command="test")
    source = root / "source"
    convert_dataset(fmt="nthu", root=root / "src", out=source, split="Rome/test", shards=1, skip_bad=False,
                    workers=1, command="test")
    return root, test, source


def cfg_for(workdir, source, test, extra=()):
    return load_config(None, [
        f"runtime.workdir={workdir}", f"data.source={source}", f"data.target_eval={test}",
        "model.width=0.03", "data.crop_size=[16,16]", "train.global_batch_size=2", "train.steps=4",
        "train.checkpoint_every=4", "selftrain.rounds=1", "selftrain.epochs_per_round=0.5",
        "eval.protocol=nthu13", "data.parallel_calls=1", "selftrain.method=cbst", *extra])


@pytest.mark.slow
def test_crossval_runs_ten_folds_pools_and_gates(tmp_path, city):
    from cbst_tf.crossval import run_crossval

    _, test, source = city
    cfg = cfg_for(tmp_path / "w", source, test)
    report = run_crossval(cfg, "Rome")
    base = tmp_path / "w" / "crossval" / "Rome"
    assert set(report["pooled"]) == {"Source", "ST", "CBST"}
    for row in report["per_fold"].values():
        assert [f["fold"] for f in row] == list(range(10))
    # Pooled = confusion matrices of the folds summed: recompute from the fold results.
    total = sum(np.asarray(read_json(base / f"fold_{k}" / "cbst" / "result.json")["confusion_matrix"])
                for k in range(10))
    labelled_pixels = sum(read_json(test / "manifest.json")["class_pixel_counts"])
    assert total.sum() == labelled_pixels  # every labelled test pixel scored exactly once
    pooled = report["pooled"]["CBST"]["miou"]
    diag, rows, cols = np.diag(total), total.sum(1), total.sum(0)
    with np.errstate(invalid="ignore"):
        iou = diag / (rows + cols - diag)
    from cbst_tf.labels import NTHU13_TRAIN_IDS

    assert pooled == pytest.approx(100 * np.nanmean(iou[list(NTHU13_TRAIN_IDS)]))
    test_ids = [read_json(base / f"fold_{k}" / "data" / "test" / "manifest.json")["num_examples"]
                for k in range(10)]
    assert test_ids == [2] * 10
    assert read_json(base / "fold_3" / "data" / "train" / "manifest.json")["labelled"] is False
    assert (base / "results.md").is_file() and (base / "DONE").is_file()
    # Resuming redoes nothing (results are cached per fold and method) and the gate fires.
    cfg.eval.min_miou = 99.0
    with pytest.raises(GateError, match=r"CBST pooled mIoU .* below --min-miou 99.00 \(Rome\)"):
        run_crossval(cfg, "Rome")
    # Other evaluation settings would mix two experiments in the cached folds: refused, naming them.
    cfg.eval.scales = [0.5, 1.0]
    with pytest.raises(ConfigError, match=r"crossval Rome: .* was started with other settings \(differs in: eval.scales\)"):
        run_crossval(cfg, "Rome")


@pytest.mark.slow
def test_selftrain_driver_resumes_without_redoing_steps(tmp_path, city):
    from cbst_tf.selftrain.driver import run_selftrain

    _, test, source = city
    cfg = cfg_for(tmp_path / "w", source, test, [f"data.target={test}", "selftrain.rounds=2"])
    final = run_selftrain(cfg)
    assert final == tmp_path / "w" / "round_2" / "finetune" / "final.weights.h5"
    summary = read_json(tmp_path / "w" / "selftrain.json")
    assert [r["portion"] for r in summary["rounds"]] == [0.2, 0.25]
    stamps = {p: p.stat().st_mtime_ns for p in (tmp_path / "w").rglob("final.weights.h5")}
    # Interrupted after round 1's labels: remove round 2 entirely and round 1's finetune marker.
    import shutil

    shutil.rmtree(tmp_path / "w" / "round_2")
    run_selftrain(cfg)
    for path, stamp in stamps.items():
        if "round_2" not in str(path):
            assert path.stat().st_mtime_ns == stamp, f"{path} was redone"
    assert (tmp_path / "w" / "round_2" / "finetune" / "DONE").is_file()
