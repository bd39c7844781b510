"""Acceptance: ``predict --format labelids`` on a Cityscapes split, scored by cityscapesscripts'
own pixel-level evaluation (which finds each prediction by its own name matching), equals
``cbst-tf evaluate``'s mIoU on the converted split.

The split is written in the exact on-disk layout of Cityscapes (``leftImg8bit/val/<city>/`` and
``gtFine/val/<city>/`` with ``labelIds``, ``instanceIds``, ``color`` and ``polygons.json``); its
ground truth is the network's own prediction with blocks changed, void and non-evaluated label
ids, so the mIoU is neither 0 nor 100.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from badcase import reset_debug, run  # noqa: F401 - reset_debug is an autouse fixture
from tiny import MEAN, WIDTH, random_image, save_weights, write_config

from cbst_tf.labels import TRAIN_ID_TO_LABEL_ID

pytest.importorskip("cityscapesscripts.evaluation.evalPixelLevelSemanticLabeling")

# The script's own main(): ground truth found by its glob, each prediction by its own name matching
# (getPrediction). Only its instance-level score is off: it calls np.in1d, gone in NumPy 2.
OFFICIAL = """
import cityscapesscripts.evaluation.evalPixelLevelSemanticLabeling as cs
cs.args.evalInstLevelScore = False
cs.main()
"""
FRAMES = [("frankfurt", (32, 64)), ("frankfurt", (24, 48)), ("lindau", (40, 56)), ("munster", (32, 64))]


def model_labels(weights: Path, image: np.ndarray) -> np.ndarray:
    """Cityscapes label ids of the network's arg-max (a plain Keras call)."""
    from cbst_tf.models import build_model

    model = build_model("fcn8s_vgg16", 19, width=WIDTH, dropout=0.0, mean=MEAN)
    model.load_weights(weights)
    ids = np.argmax(model(image[None].astype(np.float32), training=False)[0].numpy(), axis=-1)
    return np.vectorize(TRAIN_ID_TO_LABEL_ID.get)(ids).astype(np.uint8)


def write_split(root: Path, weights: Path) -> None:
    from cityscapesscripts.helpers.labels import id2label

    rng = np.random.default_rng(11)
    for i, (city, hw) in enumerate(FRAMES):
        stem = f"{city}_{i:06d}_{19 + i:06d}"
        image = random_image(rng, hw)
        left = root / "leftImg8bit" / "val" / city / f"{stem}_leftImg8bit.png"
        left.parent.mkdir(parents=True, exist_ok=True)
        assert cv2.imwrite(str(left), image[..., ::-1])
        labels = model_labels(weights, image)
        h, w = hw
        labels[: h // 3, : w // 4] = rng.choice([7, 8, 11, 21, 23, 26])  # some wrong blocks
        labels[-h // 4:, w // 2:] = rng.choice([24, 26, 33])
        labels[:2, :] = 0  # unlabeled
        labels[-2:, :] = 1  # ego vehicle
        labels[h // 2, :] = 9  # parking: not an evaluated class
        gt = root / "gtFine" / "val" / city
        gt.mkdir(parents=True, exist_ok=True)
        assert cv2.imwrite(str(gt / f"{stem}_gtFine_labelIds.png"), labels)
        instances = labels.astype(np.uint16)
        things = labels >= 24
        instances[things] = labels[things].astype(np.uint16) * 1000 + np.broadcast_to(np.arange(w) // 16, (h, w))[things]
        assert cv2.imwrite(str(gt / f"{stem}_gtFine_instanceIds.png"), instances)
        color = np.array([id2label[int(v)].color for v in range(34)], np.uint8)[labels]
        assert cv2.imwrite(str(gt / f"{stem}_gtFine_color.png"), color[..., ::-1])
        (gt / f"{stem}_gtFine_polygons.json").write_text(json.dumps({"imgHeight": h, "imgWidth": w, "objects": []}))


@pytest.mark.slow
def test_cityscapesscripts_scores_predict_labelids_like_evaluate(tmp_path):
    weights = save_weights(tmp_path / "w.weights.h5", seed=2)
    root = tmp_path / "cityscapes"
    write_split(root, weights)
    cfg = write_config(tmp_path / "exp.yaml", eval={"flip": True})
    code, out = run("data", "convert", "--format", "cityscapes", "--root", root, "--split", "val",
                    "--out", tmp_path / "tfr", "--shards", "2")
    assert code == 0, out
    code, out = run("evaluate", "-c", cfg, "-w", weights, "--split", tmp_path / "tfr", "--out", tmp_path / "eval")
    assert code == 0, out
    miou = json.loads((tmp_path / "eval" / "metrics.json").read_text())["miou"]
    assert 5 < miou < 95
    code, out = run("predict", "-c", cfg, "-w", weights, "--input", root / "leftImg8bit" / "val",
                    "--out", tmp_path / "submission", "--format", "labelids")
    assert code == 0, out

    (tmp_path / "csx").mkdir()
    env = {**os.environ, "CITYSCAPES_DATASET": str(root), "CITYSCAPES_RESULTS": str(tmp_path / "submission" / "labelids"),
           "CITYSCAPES_EXPORT_DIR": str(tmp_path / "csx")}
    official = subprocess.run([sys.executable, "-c", OFFICIAL], env=env, cwd=tmp_path, capture_output=True, text=True)
    assert official.returncode == 0, official.stdout + official.stderr
    assert "ERROR" not in official.stdout
    result = json.loads((tmp_path / "csx" / "resultPixelLevelSemanticLabeling.json").read_text())
    assert result["averageScoreClasses"] == pytest.approx(miou / 100, abs=1e-4)
