"""The official CBST test-time protocol (``eval.upsample: bicubic_probs``) against a slow
reference written from yzou2/CBST ``issegm/evaluate.py``: PIL on uint8 images and on each
class's float probability map, numpy softmax, padding and flipping by hand."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from cbst_tf.evaluate.evaluator import evaluate_model
from cbst_tf.models import build_model
from cbst_tf.official_eval import long_side_size, official_probs, resize_maps

MEAN = (123.675, 116.28, 103.53)


def _pil_maps(maps: np.ndarray, hw, method) -> np.ndarray:
    """Each channel of ``maps`` (h, w, C) through PIL's float ('F') resize."""
    return np.stack([np.array(Image.fromarray(np.ascontiguousarray(maps[..., c]), mode="F")
                              .resize((hw[1], hw[0]), method)) for c in range(maps.shape[-1])], -1)


def _official_filter(src, dst):
    if dst[0] < src[0] and dst[1] < src[1]:
        return Image.LANCZOS
    if dst[0] > src[0] and dst[1] > src[1]:
        return Image.BICUBIC
    return Image.BILINEAR


@pytest.mark.parametrize("hw", [(40, 56), (3, 4), (9, 5), (5, 7)])
def test_map_resizing_equals_pil(hw):
    maps = np.random.default_rng(0).random((5, 7, 3)).astype(np.float32)
    want = _pil_maps(maps, hw, _official_filter((5, 7), hw))
    got = resize_maps(maps[None], hw).numpy()[0]
    np.testing.assert_allclose(got, want, atol=1e-6)


def test_long_side_size_rounds_like_the_official_scale():
    assert long_side_size((1024, 2048), 1850) == (925, 1850)
    assert long_side_size((1024, 2048), 2048) == (1024, 2048)
    assert long_side_size((1052, 1914), 1024) == (563, 1024)
    assert long_side_size((90, 60), 45) == (45, 30)


def _reference(stride_model, image, long_side, flip, classes):
    """issegm/evaluate.py ``_val_impl`` for one image, test_steps 1, by hand."""
    h0, w0 = image.shape[:2]
    if long_side and max(h0, w0) != long_side:
        nh, nw = long_side_size((h0, w0), long_side)
        im = np.array(Image.fromarray(image.astype(np.uint8)).resize((nw, nh), _official_filter((h0, w0), (nh, nw))),
                      np.float32)
    else:
        im = image.astype(np.float32)
    imh, imw = im.shape[:2]
    ph, pw = -(-imh // 8) * 8, -(-imw // 8) * 8
    data = np.empty((1, ph, pw, 3), np.float32)
    data[:] = MEAN  # zero after normalisation, as the official zero padding of the normalised image
    data[0, :imh, :imw] = im

    def softmax(z):
        e = np.exp(z - z.max(-1, keepdims=True))
        return e / e.sum(-1, keepdims=True)

    preds = softmax(stride_model(data).numpy().astype(np.float64))[0]
    if flip:
        preds = 0.5 * (preds + softmax(stride_model(data[:, :, ::-1]).numpy().astype(np.float64))[0][:, ::-1])
    preds = preds.astype(np.float32)
    up = _pil_maps(preds, (preds.shape[0] * 8, preds.shape[1] * 8), Image.BICUBIC)[:imh, :imw]
    if imh != h0:
        up = _pil_maps(up, (h0, w0), _official_filter((imh, imw), (h0, w0)))
    assert up.shape == (h0, w0, classes)
    return up


@pytest.mark.parametrize("long_side,flip", [(None, True), (26, True), (47, False)])
def test_official_probs_equal_the_reference(long_side, flip):
    import keras

    classes = 5
    keras.utils.set_random_seed(1)  # the initial weights must not depend on the tests run before
    model = build_model("resnet38", classes, 0.0625, mean=MEAN, freeze_bn=True)
    stride = build_model("resnet38", classes, 0.0625, mean=MEAN, freeze_bn=True, upsample=False)
    rng = np.random.default_rng(1)
    weights = [w + 0.3 * rng.standard_normal(w.shape).astype(np.float32) if w.ndim > 1 else w
               for w in model.get_weights()]
    model.set_weights(weights)
    stride.set_weights(weights)
    image = rng.integers(0, 256, (21, 30, 3)).astype(np.float32)
    want = _reference(stride, image, long_side, flip, classes)
    got = official_probs(model, image, flip=flip, long_side=long_side)
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, atol=2e-5)
    np.testing.assert_array_equal(got.argmax(-1), want.argmax(-1))
    # Not the same numbers as our default path (bilinear logits), else this test proves nothing.
    from cbst_tf.inference import predict_probs

    factor = long_side / 30 if long_side else 1.0
    ours = predict_probs(model, image, (1.0,), flip, factor, size=(21, 30))
    assert np.abs(ours - got).max() > 1e-3


def test_evaluate_model_records_the_protocol():
    model = build_model("resnet38", 19, 0.0625, mean=MEAN, freeze_bn=True)
    rng = np.random.default_rng(2)
    data = [{"image": rng.integers(0, 256, (24, 40, 3)).astype(np.float32),
             "label": rng.integers(0, 19, (24, 40)).astype(np.uint8)} for _ in range(2)]
    official = evaluate_model(model, data, "cityscapes19", upsample="bicubic_probs", long_side=32)
    default = evaluate_model(model, data, "cityscapes19")
    assert (official["upsample"], official["long_side"]) == ("bicubic_probs", 32)
    assert default["upsample"] == "bilinear_logits"
    assert official["num_pixels"] == default["num_pixels"] == 2 * 24 * 40
    # The same predictions as official_probs, image by image.
    preds = [official_probs(model, ex["image"], long_side=32).argmax(-1) for ex in data]
    cm = np.zeros((19, 19), np.int64)
    for ex, p in zip(data, preds, strict=True):
        np.add.at(cm, (ex["label"].ravel(), p.ravel()), 1)
    assert np.array_equal(np.asarray(official["confusion_matrix"]), cm)
