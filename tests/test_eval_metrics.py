"""Confusion matrix, IoU, NaN handling and protocol mappings vs slow pixel-loop references."""

import math

import numpy as np
import pytest

from cbst_tf.errors import CbstError
from cbst_tf.evaluate.confusion import ConfusionMatrix, iou_from_confusion, mean_iou
from cbst_tf.evaluate.protocols import PROTOCOLS, get_protocol


def slow_iou(pairs, num_classes):
    """Pixel loop: count TP/FP/FN per class over (gt, pred) pairs, 255 ignored."""
    tp = [0] * num_classes
    fp = [0] * num_classes
    fn = [0] * num_classes
    for gt_img, pr_img in pairs:
        for g, p in zip(gt_img.ravel().tolist(), pr_img.ravel().tolist(), strict=True):
            if g == 255:
                continue
            if g == p:
                tp[g] += 1
            else:
                fn[g] += 1
                fp[p] += 1
    out = []
    for c in range(num_classes):
        d = tp[c] + fp[c] + fn[c]
        out.append(float("nan") if d == 0 else tp[c] / d)
    return out


def random_pairs(rng, n, c, shape=(7, 9), absent=()):
    pairs = []
    for _ in range(n):
        gt = rng.integers(0, c, shape)
        gt[rng.random(shape) < 0.2] = 255
        pred = rng.integers(0, c, shape)
        for a in absent:  # a class neither in the ground truth nor predicted
            gt[gt == a] = 255
            pred[pred == a] = (a + 1) % c
        pairs.append((gt.astype(np.uint8), pred.astype(np.uint8)))
    return pairs


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_iou_matches_pixel_loop_reference(seed):
    rng = np.random.default_rng(seed)
    c = 6
    pairs = random_pairs(rng, 4, c, absent=(2,))
    # class 4: absent from the ground truth but predicted -> IoU 0, not NaN
    for gt, _ in pairs:
        gt[gt == 4] = 255
    cm = ConfusionMatrix(c)
    for gt, pred in pairs:
        cm.update(gt, pred)
    want = slow_iou(pairs, c)
    got = cm.iou()
    assert cm.matrix.dtype == np.int64
    assert cm.matrix.sum() == sum(int((g != 255).sum()) for g, _ in pairs)
    assert math.isnan(got[2]) and math.isnan(want[2])
    assert got[4] == 0.0
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-12, equal_nan=True)
    ref_mean = np.nanmean(want)
    assert mean_iou(got) == pytest.approx(ref_mean, abs=1e-12)
    assert mean_iou(got, [0, 1, 2]) == pytest.approx(np.nanmean(want[:3]), abs=1e-12)


def test_merge_equals_one_pass_and_all_nan_mean():
    rng = np.random.default_rng(5)
    pairs = random_pairs(rng, 6, 4)
    whole, a, b = ConfusionMatrix(4), ConfusionMatrix(4), ConfusionMatrix(4)
    for i, (gt, pred) in enumerate(pairs):
        whole.update(gt, pred)
        (a if i % 2 else b).update(gt, pred)
    assert np.array_equal(a.merge(b).matrix, whole.matrix)
    assert np.array_equal(ConfusionMatrix.from_matrix(whole.matrix).iou(), whole.iou(), equal_nan=True)
    assert math.isnan(mean_iou(np.array([np.nan, np.nan])))
    assert np.isnan(iou_from_confusion(np.zeros((3, 3)))).all()


def test_update_rejects_bad_input():
    cm = ConfusionMatrix(3)
    with pytest.raises(ValueError, match="shape"):
        cm.update(np.zeros((2, 2)), np.zeros((2, 3)))
    with pytest.raises(ValueError, match="ground-truth ids"):
        cm.update(np.full((2, 2), 7), np.zeros((2, 2)))
    with pytest.raises(ValueError, match="predicted ids"):
        cm.update(np.zeros((2, 2)), np.full((2, 2), 3))
    # predictions on ignored pixels do not matter, even out of range
    cm.update(np.full((2, 2), 255), np.full((2, 2), 200))
    assert cm.matrix.sum() == 0


# ----------------------------------------------------------------------------- protocols

NTHU_MERGE_REF = {"pole": "building", "fence": "building", "wall": "building",
                  "truck": "car", "terrain": "vegetation"}
NAMES = ["road", "sidewalk", "building", "wall", "fence", "pole", "traffic light",
         "traffic sign", "vegetation", "terrain", "sky", "person", "rider", "car",
         "truck", "bus", "train", "motorcycle", "bicycle"]


def test_protocol_classes_and_columns_follow_the_paper():
    cs = get_protocol("cityscapes19")
    assert cs.classes == tuple(range(19)) and cs.class_names == tuple(NAMES)
    s16, s13 = get_protocol("synthia16"), get_protocol("synthia13")
    missing = {"terrain", "truck", "train"}
    assert s16.class_names == tuple(n for n in NAMES if n not in missing)
    assert s13.class_names == tuple(n for n in NAMES if n not in missing | {"wall", "fence", "pole"})
    # Table 2 layout: 16 columns with Wall*, Fence*, Pole*, then mIoU and mIoU*
    assert s16.headings == ("Road", "SW", "Build", "Wall*", "Fence*", "Pole*", "TL", "TS", "Veg.",
                            "Sky", "PR", "Rider", "Car", "Bus", "Motor", "Bike")
    assert [m for m, _ in s13.means] == ["mIoU", "mIoU*"] and s13.primary == "mIoU*"
    nthu = get_protocol("nthu13")  # Table 1 columns
    assert nthu.headings == ("Road", "SW", "Build", "TL", "TS", "Veg.", "Sky", "PR", "Rider",
                             "Car", "Bus", "Motor", "Bike")
    with pytest.raises(CbstError, match="eval.protocol: unknown protocol 'kitti'"):
        get_protocol("kitti")


def reference_read(name, probs, label):
    """Hand-written per-pixel reading of each protocol."""
    h, w, _ = probs.shape
    pred = np.zeros((h, w), np.uint8)
    gt = np.zeros((h, w), np.uint8)
    s16 = [NAMES.index(n) for n in NAMES if n not in ("terrain", "truck", "train")]
    for i in range(h):
        for j in range(w):
            p = probs[i, j]
            if name.startswith("synthia"):
                best = max(s16, key=lambda c: p[c])
            else:
                best = int(np.argmax(p))
            g = int(label[i, j])
            if name == "nthu13":
                best = NAMES.index(NTHU_MERGE_REF.get(NAMES[best], NAMES[best]))
                if g != 255:
                    g = NAMES.index(NTHU_MERGE_REF.get(NAMES[g], NAMES[g]))
                    if NAMES[g] not in ("road", "sidewalk", "building", "traffic light", "traffic sign",
                                        "vegetation", "sky", "person", "rider", "car", "bus",
                                        "motorcycle", "bicycle"):
                        g = 255
            elif name.startswith("synthia") and g != 255 and g not in s16:
                g = 255
            pred[i, j], gt[i, j] = best, g
    return pred, gt


@pytest.mark.parametrize("name", sorted(PROTOCOLS))
def test_protocol_mapping_matches_reference(name):
    rng = np.random.default_rng(7)
    probs = rng.random((6, 8, 19)).astype(np.float32)
    label = rng.integers(0, 19, (6, 8)).astype(np.uint8)
    label[0, :3] = 255
    proto = get_protocol(name)
    want_pred, want_gt = reference_read(name, probs, label)
    assert np.array_equal(proto.predict(probs), want_pred)
    assert np.array_equal(proto.remap_label(label), want_gt)
    # mIoU over the protocol's classes from the slow reference
    want = slow_iou([(want_gt, want_pred)], 19)
    cm = ConfusionMatrix(19).update(proto.remap_label(label), proto.predict(probs))
    assert mean_iou(cm.iou(), proto.classes) == pytest.approx(
        np.nanmean([want[c] for c in proto.classes]), abs=1e-12)


def test_protocol_rejects_wrong_class_count():
    with pytest.raises(CbstError, match="model has 5 classes"):
        get_protocol("cityscapes19").predict(np.zeros((2, 2, 5)))
