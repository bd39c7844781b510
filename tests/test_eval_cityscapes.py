"""Same IoU/mIoU as the official Cityscapes evaluation (cityscapesscripts) on a tiny fixture.

Both sides treat a class absent from the ground truth and never predicted on a valid pixel
as NaN and average only the rest; the fixture has such a class (train) on purpose, and one
(bus) that is absent from the ground truth but predicted, which both score 0.
"""

import math

import cv2
import numpy as np
import pytest

from cbst_tf.evaluate.confusion import ConfusionMatrix, mean_iou
from cbst_tf.evaluate.protocols import get_protocol
from cbst_tf.labels import CITYSCAPES_LUT, CLASS_NAMES, TRAIN_ID_TO_LABEL_ID

csEval = pytest.importorskip("cityscapesscripts.evaluation.evalPixelLevelSemanticLabeling")


def write_fixture(root, n=3, shape=(16, 24), seed=0):
    rng = np.random.default_rng(seed)
    gts, preds = [], []
    train_label = TRAIN_ID_TO_LABEL_ID[16]
    bus_label = TRAIN_ID_TO_LABEL_ID[15]
    for i in range(n):
        gt = rng.integers(0, 34, shape).astype(np.uint8)  # every label id, incl. void ones
        gt[gt == train_label] = 0  # "train": absent from the ground truth ...
        gt[gt == bus_label] = 7  # "bus": absent from the ground truth, but predicted below
        pred_train = rng.integers(0, 19, shape)
        pred_train[pred_train == 16] = 13  # ... and never predicted -> NaN
        # make predictions partly right so IoUs are not all tiny
        right = rng.random(shape) < 0.5
        pred = np.vectorize(TRAIN_ID_TO_LABEL_ID.get)(pred_train).astype(np.uint8)
        valid = CITYSCAPES_LUT[gt] != 255
        pred[right & valid] = gt[right & valid]
        city = root / "gtFine" / "val" / "city"
        city.mkdir(parents=True, exist_ok=True)
        g = city / f"city_{i:06d}_000019_gtFine_labelIds.png"
        p = root / "pred" / f"city_{i:06d}_000019_pred_labelIds.png"
        p.parent.mkdir(exist_ok=True)
        cv2.imwrite(str(g), gt)
        cv2.imwrite(str(p), pred)
        gts.append(g)
        preds.append(p)
    return gts, preds


def official(gts, preds):
    args = csEval.args
    args.evalInstLevelScore = False
    args.evalPixelAccuracy = False
    args.JSONOutput = False
    args.quiet = True
    return csEval.evaluateImgLists([str(p) for p in preds], [str(g) for g in gts], args)


def test_miou_equals_cityscapesscripts(tmp_path, capsys):
    gts, preds = write_fixture(tmp_path)
    result = official(gts, preds)

    proto = get_protocol("cityscapes19")
    cm = ConfusionMatrix(19)
    for g, p in zip(gts, preds, strict=True):
        gt = CITYSCAPES_LUT[cv2.imread(str(g), cv2.IMREAD_UNCHANGED)]
        pred = CITYSCAPES_LUT[cv2.imread(str(p), cv2.IMREAD_UNCHANGED)]
        cm.update(proto.remap_label(gt), proto.remap_prediction(pred))
    iou = cm.iou()

    scores = result["classScores"]
    for c, name in enumerate(CLASS_NAMES):
        if math.isnan(scores[name]):
            assert math.isnan(iou[c]), name
        else:
            assert iou[c] == pytest.approx(scores[name], abs=1e-6), name
    assert math.isnan(scores["train"]) and math.isnan(iou[16])
    assert scores["bus"] == 0.0 and iou[15] == 0.0
    assert 0.2 < result["averageScoreClasses"] < 0.9
    assert mean_iou(iou, proto.classes) == pytest.approx(result["averageScoreClasses"], abs=1e-6)
