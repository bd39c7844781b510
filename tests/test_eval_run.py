"""``cbst-tf evaluate`` end to end on a tiny TFRecord fixture with a tiny real network.

The labels are built from the network's own predictions (so mIoU is known) with a few
blocks changed; the expected confusion matrix is computed here with a plain model call.
"""

import hashlib
import json
import os
from pathlib import Path

import cv2
import numpy as np
import pytest
import tensorflow as tf
from typer.testing import CliRunner

from cbst_tf.cli import app
from cbst_tf.config import load_config
from cbst_tf.data.writer import DatasetWriter
from cbst_tf.evaluate.confusion import ConfusionMatrix, mean_iou
from cbst_tf.evaluate.report import format_table
from cbst_tf.evaluate.run import latest_weights
from cbst_tf.layout import RunLayout
from cbst_tf.models import build_model

HW = (32, 40)
WIDTH = 0.02


def tiny_model():
    import keras

    keras.utils.set_random_seed(3)
    return build_model("fcn8s_vgg16", 19, width=WIDTH, weights=None, dropout=0.5, freeze_bn=False,
                       mean=(123.68, 116.78, 103.94))


def write_split(directory: Path, images, labels) -> None:
    with DatasetWriter(directory, num_items=len(images), shards=2, name="val", fmt="test") as w:
        for i, (img, lab) in enumerate(zip(images, labels, strict=True)):
            ok, buf = cv2.imencode(".png", img[..., ::-1])
            assert ok
            w.add(i, buf.tobytes(), "png", HW[0], HW[1], f"city/img_{i}_leftImg8bit.png", lab)
        w.close()


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval")
    model = tiny_model()
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (*HW, 3), dtype=np.uint8) for _ in range(3)]
    expected = ConfusionMatrix(19)
    labels = []
    for k, img in enumerate(images):
        pred = np.argmax(model(img[None].astype(np.float32), training=False).numpy()[0], -1).astype(np.uint8)
        label = pred.copy()
        label[: 4 * (k + 1), :10] = (k * 5 + 2) % 19  # some wrong pixels of known classes
        label[-3:, -5:] = 255
        labels.append(label)
        expected.update(label, pred)
    write_split(root / "val", images, labels)
    write_split(root / "unlabelled", images, [None] * 3)
    work = root / "work"
    (work / "pretrain").mkdir(parents=True)
    model.save_weights(work / "pretrain" / "final.weights.h5")
    cfg = root / "exp.yaml"
    cfg.write_text(f"model: {{name: fcn8s_vgg16, width: {WIDTH}}}\n"
                   f"data: {{target_eval: {root / 'val'}, prefetch: 0, parallel_calls: 1}}\n"
                   f"runtime: {{workdir: {work}}}\n")
    return {"root": root, "cfg": cfg, "work": work, "expected": expected}


def invoke(*args):
    return CliRunner().invoke(app, ["evaluate", *map(str, args)])


def test_evaluate_writes_metrics_and_predictions(setup):
    res = invoke("--config", setup["cfg"], "--save-predictions", "2")
    assert res.exit_code == 0, res.output
    out = setup["work"] / "eval" / "pretrain"
    metrics = json.loads((out / "metrics.json").read_text())
    want = setup["expected"]
    assert metrics["confusion_matrix"] == want.matrix.tolist()
    assert metrics["num_images"] == 3 and metrics["protocol"] == "cityscapes19"
    assert metrics["miou"] == pytest.approx(100 * mean_iou(want.iou()), abs=1e-9)
    assert 0 < metrics["miou"] < 100
    nan_classes = [c for c, v in enumerate(want.iou()) if np.isnan(v)]
    assert nan_classes and all(metrics["iou"][metrics["classes"][c]] is None for c in nan_classes)
    assert metrics["scales"] == [1.0] and metrics["flip"] is False
    assert metrics["weights"].endswith("pretrain/final.weights.h5")
    env = metrics["environment"]  # what produced the numbers (issue 29)
    assert env["packages"]["tensorflow"] == tf.__version__ and env["packages"]["numpy"] == np.__version__
    digest = hashlib.sha256(Path(metrics["weights"]).read_bytes()).hexdigest()[:16]
    assert env["weights"] == {"weights": f"sha256:{digest}"}
    assert isinstance(env["onednn"], bool) and env["threads"]["cpu_count"] == os.cpu_count()
    md = (out / "metrics.md").read_text()
    assert "| Method | Road | SW | Build |" in md and f"{metrics['miou']:.1f} |" in md
    preds = sorted(p.name for p in (out / "predictions").iterdir())
    assert preds == ["img_0_leftImg8bit_panel.png", "img_0_leftImg8bit_trainIds.png",
                     "img_1_leftImg8bit_panel.png", "img_1_leftImg8bit_trainIds.png"]
    panel = cv2.imread(str(out / "predictions" / "img_0_leftImg8bit_panel.png"))
    assert panel.shape == (HW[0], 3 * HW[1], 3)
    saved = cv2.imread(str(out / "predictions" / "img_1_leftImg8bit_trainIds.png"), cv2.IMREAD_UNCHANGED)
    assert saved.shape == HW and saved.max() < 19
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temp files left


def test_min_miou_gate_exit_3_after_writing(setup, tmp_path):
    out = tmp_path / "gate"
    res = invoke("--config", setup["cfg"], "--out", out, "--min-miou", "99.5",
                 "--scales", "0.5,1.0", "--flip")
    assert res.exit_code == 3, res.output
    metrics = json.loads((out / "metrics.json").read_text())
    miou = metrics["miou"]
    assert f"error: mIoU {miou:.2f} is {99.5 - miou:.2f} below --min-miou 99.50" in res.output
    assert metrics["scales"] == [0.5, 1.0] and metrics["flip"] is True
    assert invoke("--config", setup["cfg"], "--out", out, "--min-miou", "1").exit_code == 0


def test_one_line_errors(setup, tmp_path):
    res = invoke("--config", setup["cfg"], "--weights", tmp_path / "nope.weights.h5")
    assert res.exit_code == 1 and "nope.weights.h5: weights file not found" in res.output
    res = invoke("--config", setup["cfg"], "--split", setup["root"] / "unlabelled", "--out", tmp_path / "u")
    assert res.exit_code == 1 and "dataset has no labels" in res.output
    res = invoke("--config", setup["cfg"], "--workdir", tmp_path / "empty")
    assert res.exit_code == 1 and "pretrain/final.weights.h5: trained weights not found" in res.output
    assert not (tmp_path / "u").exists()


def test_default_weights_and_names(tmp_path):
    cfg = load_config(None, [f"runtime.workdir={tmp_path}"])
    for rel in ("pretrain/final.weights.h5", "round_2/finetune/final.weights.h5",
                "round_10/finetune/final.weights.h5", "round_3/finetune/ckpt/x.weights.h5"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"")
    assert latest_weights(cfg) == tmp_path / "round_10/finetune/final.weights.h5"
    assert RunLayout.run_name(latest_weights(cfg)) == "round_10"
    assert RunLayout.run_name(tmp_path / "pretrain/final.weights.h5") == "pretrain"
    assert RunLayout.run_name(Path("my_model.weights.h5")) == "my_model"


def test_format_table_paper_layout():
    s13 = {"iou": {"road": 50.0, "wall": None}, "miou": 40.0, "means": {"mIoU": 35.25, "mIoU*": 40.0}}
    table = format_table({"CBST": s13}, "synthia13").splitlines()
    assert table[0].startswith("| Method | Road | SW | Build | Wall* | Fence* | Pole* | TL |")
    assert table[0].endswith("| Bike | mIoU | mIoU* |")
    assert table[2].startswith("| CBST | 50.0 | - | - | - |") and table[2].endswith("| 35.2 | 40.0 |")


def test_evaluate_model_in_memory_at_label_resolution():
    """Labels at half the image size: logits are resized to the label, NTHU merge applied."""
    import tensorflow as tf

    from cbst_tf.evaluate import evaluate_model
    from cbst_tf.labels import NTHU13_TRAIN_IDS, NTHU_PREDICTION_MERGE

    model = tiny_model()
    rng = np.random.default_rng(4)
    examples, seen = [], []
    want = ConfusionMatrix(19)
    for k in range(2):
        img = rng.integers(0, 256, (*HW, 3)).astype(np.float32)
        label = rng.integers(0, 19, (HW[0] // 2, HW[1] // 2)).astype(np.uint8)
        examples.append({"image": img, "label": label, "source_id": f"c/{k}.png"})
        logits = tf.image.resize(model(img[None], training=False), label.shape, method="bilinear")
        pred = np.argmax(tf.nn.softmax(logits).numpy()[0], -1)
        pred = np.vectorize(lambda c: NTHU_PREDICTION_MERGE.get(int(c), int(c)))(pred)
        gt = np.vectorize(lambda c: NTHU_PREDICTION_MERGE.get(int(c), int(c)))(label)
        gt[~np.isin(gt, NTHU13_TRAIN_IDS)] = 255
        want.update(gt, pred)
    result = evaluate_model(model, examples, "nthu13", on_prediction=lambda ex, g, p: seen.append(p.shape))
    assert result["confusion_matrix"] == want.matrix.tolist()
    assert seen == [(HW[0] // 2, HW[1] // 2)] * 2 and result["num_images"] == 2
    assert list(result["iou"]) == ["road", "sidewalk", "building", "traffic light", "traffic sign",
                                   "vegetation", "sky", "person", "rider", "car", "bus", "motorcycle",
                                   "bicycle"]
    assert result["miou"] == pytest.approx(100 * mean_iou(want.iou(), NTHU13_TRAIN_IDS), abs=1e-9)
