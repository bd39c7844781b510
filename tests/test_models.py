"""Networks: published parameter counts, shapes at odd sizes, exact split of the final
upsampling, weight loading (Keras VGG16 file, own checkpoints), mixed precision, BN freezing
and analytic FLOPs. Width-1.0 models are only built (never run); runs use tiny widths."""

from __future__ import annotations

import json
import math

import h5py
import keras
import numpy as np
import pytest

from cbst_tf.config import Config
from cbst_tf.errors import CbstError
from cbst_tf.models import build_model, classifier_variables, resize_logits
from cbst_tf.models.layers import bilinear_kernel
from cbst_tf.models.resnet38 import resnet38_trunk
from cbst_tf.models.summary import model_flops, print_summary
from cbst_tf.models.weights import load_checkpoint

TINY = 0.0625


def conv_params(k: int, cin: int, cout: int, bias: bool = True) -> int:
    return k * k * cin * cout + (cout if bias else 0)


def _randomise(model: keras.Model, seed: int = 0) -> None:
    # Score layers start at zero (as in FCN); random weights make equality checks meaningful.
    rng = np.random.default_rng(seed)
    values = []
    for w in model.get_weights():
        fan_in = max(1, int(np.prod(w.shape[:-1])))
        v = rng.normal(0.0, 1.0 / math.sqrt(fan_in), w.shape).astype(np.float32)
        # 1-D weights (biases, BN statistics) positive so moving variances stay valid.
        values.append(np.abs(v) + 0.5 if w.ndim == 1 else v)
    model.set_weights(values)


def _images(h: int, w: int, n: int = 1, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0, 255, (n, h, w, 3)).astype(np.float32)


# ----------------------------------------------------------------------------- parameter counts


def test_fcn8s_vgg16_parameter_count_is_the_published_one():
    # Reference: Long et al.'s caffe voc-fcn8s (fcn.berkeleyvision.org voc-fcn8s/net.py),
    # 21 classes, layer by layer. Its upscore8 (16x16x21x21 = 112,896 weights, frozen at
    # bilinear) is our weightless resize_logits, so it is the only difference.
    vgg = [(3, 64), (64, 64), (64, 128), (128, 128), (128, 256), (256, 256), (256, 256),
           (256, 512), (512, 512), (512, 512), (512, 512), (512, 512), (512, 512)]
    caffe = sum(conv_params(3, a, b) for a, b in vgg)
    caffe += conv_params(7, 512, 4096) + conv_params(1, 4096, 4096)  # fc6, fc7
    caffe += conv_params(1, 4096, 21) + conv_params(1, 512, 21) + conv_params(1, 256, 21)  # scores
    caffe += 2 * conv_params(4, 21, 21, bias=False)  # upscore2, upscore_pool4
    caffe += conv_params(16, 21, 21, bias=False)  # upscore8
    assert caffe == 134_489_759  # the caffe model's 134.5M
    model = build_model("fcn8s_vgg16", 21)
    assert model.count_params() == caffe - 112_896 == 134_376_863


def _resnet38_reference(classes_head: int | None) -> int:
    """Model A1 of itijyou/ademxapp util/symbol/resnet_v2.py, counted from its level table."""
    total = conv_params(3, 3, 64, bias=False)
    bn = 0
    cin = 64
    levels = [(3, [128, 128], [3, 3]), (3, [256, 256], [3, 3]), (6, [512, 512], [3, 3]),
              (3, [512, 1024], [3, 3]), (1, [512, 1024, 2048], [1, 3, 1]),
              (1, [1024, 2048, 4096], [1, 3, 1])]
    for units, filters, kernels in levels:
        for u in range(units):
            c = cin
            for f, k in zip(filters, kernels, strict=True):
                bn += c
                total += conv_params(k, c, f, bias=False)
                c = f
            if u == 0:
                total += conv_params(1, cin, filters[-1], bias=False)  # projection shortcut
            cin = filters[-1]
    bn += cin  # bn7
    total += 4 * bn  # gamma, beta, moving mean, moving variance
    if classes_head is None:
        return total + 4096 * 1000 + 1000  # ImageNet: global pool + 1000-way linear
    return total + conv_params(3, 4096, 512) + conv_params(3, 512, classes_head)


def test_resnet38_parameter_count_matches_official_symbol():
    image = keras.Input((None, None, 3))
    feats = resnet38_trunk(image)
    logits = keras.layers.Dense(1000)(keras.layers.GlobalAveragePooling2D()(feats))
    imagenet = keras.Model(image, logits)
    # 105.0M conv weights + 0.4M BN + 4.1M classifier. (The ~124M sometimes quoted for
    # model A is not reproduced by the official symbol, which this follows exactly.)
    assert imagenet.count_params() == _resnet38_reference(None) == 109_215_656
    seg = build_model("resnet38", 19)
    assert seg.count_params() == _resnet38_reference(19) == 124_081_107


def test_width_scales_channels():
    model = build_model("resnet38", 4, width=0.125)
    assert model.get_layer("conv1a").kernel.shape == (3, 3, 3, 8)
    assert model.get_layer("res7a_branch2b2").kernel.shape == (1, 1, 256, 512)
    assert model.get_layer("classifier_score").kernel.shape == (3, 3, 64, 4)
    tiny = build_model("fcn8s_vgg16", 3, width=0.001)
    assert tiny.get_layer("block1_conv1").kernel.shape == (3, 3, 3, 1)
    assert tiny.get_layer("fc6").kernel.shape == (7, 7, 1, 4)


# ----------------------------------------------------------------------------- shapes, resize


@pytest.mark.parametrize("name", ["fcn8s_vgg16", "resnet38"])
@pytest.mark.parametrize("hw", [(257, 333), (500, 500), (512, 1024)])
def test_output_shapes_any_size(name, hw):
    h, w = hw
    x = _images(h, w)
    full = build_model(name, 5, width=TINY)
    noup = build_model(name, 5, width=TINY, upsample=False)
    assert tuple(full(x).shape) == (1, h, w, 5)
    assert tuple(noup(x).shape) == (1, -(-h // 8), -(-w // 8), 5)


@pytest.mark.parametrize("name", ["fcn8s_vgg16", "resnet38"])
def test_resize_of_stride8_logits_equals_full_model(name):
    full = build_model(name, 3, width=TINY)
    noup = build_model(name, 3, width=TINY, upsample=False)
    _randomise(full)
    noup.set_weights(full.get_weights())
    x = _images(61, 83, n=2)
    expected = full(x, training=False).numpy()
    small = noup(x, training=False)
    assert small.shape[1:3] == (8, 11)
    got = resize_logits(small, x.shape[1:3]).numpy()
    assert np.array_equal(got, expected)
    assert np.std(expected) > 1e-3  # the comparison is not between constants


def _bilinear_reference(a: np.ndarray, out_h: int, out_w: int, scale_h: float, scale_w: float) -> np.ndarray:
    """Half-pixel-centre bilinear sampling of ``a (h, w)``: src = (dst + .5) * scale - .5, clamped."""
    h, w = a.shape
    out = np.zeros((out_h, out_w))
    for y in range(out_h):
        sy = min(max((y + 0.5) * scale_h - 0.5, 0.0), h - 1)
        y0, fy = int(math.floor(sy)), sy - math.floor(sy)
        y1 = min(y0 + 1, h - 1)
        for x in range(out_w):
            sx = min(max((x + 0.5) * scale_w - 0.5, 0.0), w - 1)
            x0, fx = int(math.floor(sx)), sx - math.floor(sx)
            x1 = min(x0 + 1, w - 1)
            top = a[y0, x0] * (1 - fx) + a[y0, x1] * fx
            bottom = a[y1, x0] * (1 - fx) + a[y1, x1] * fx
            out[y, x] = top * (1 - fy) + bottom * fy
    return out


def test_resize_logits_is_grid_aligned_bilinear():
    rng = np.random.default_rng(3)
    logits = rng.normal(size=(1, 5, 7, 2)).astype(np.float32)
    # 5x7 is the stride-8 grid of 37x50: exact factor 8 (cell k centred on pixel 8k + 3.5).
    got = resize_logits(logits, (37, 50)).numpy()
    for c in range(2):
        ref = _bilinear_reference(logits[0, :, :, c], 37, 50, 1 / 8, 1 / 8)
        np.testing.assert_allclose(got[0, :, :, c], ref, atol=1e-5)
    # Not that grid (e.g. logits of a rescaled image): plain resize with scale in/out.
    got = resize_logits(logits, (20, 30)).numpy()
    ref = _bilinear_reference(logits[0, :, :, 1], 20, 30, 5 / 20, 7 / 30)
    np.testing.assert_allclose(got[0, :, :, 1], ref, atol=1e-5)


def test_fcn_upsampling_starts_as_aligned_bilinear():
    # upscore2 (4x4 stride-2 deconvolution, bilinear init) + the 1-px crop must equal a
    # half-pixel-centre 2x bilinear resize away from the zero-padded border.
    model = build_model("fcn8s_vgg16", 2, width=TINY, upsample=False)
    layer = model.get_layer("upscore2")
    np.testing.assert_array_equal(layer.kernel.numpy()[:, :, 0, 0], bilinear_kernel(4, 2)[:, :, 0, 0])
    a = np.random.default_rng(0).normal(size=(1, 6, 9, 2)).astype(np.float32)
    up = layer(a).numpy()[:, 1:13, 1:19, :]
    for c in range(2):
        ref = _bilinear_reference(a[0, :, :, c], 12, 18, 0.5, 0.5)
        np.testing.assert_allclose(up[0, 1:-1, 1:-1, c], ref[1:-1, 1:-1], atol=1e-5)


# ----------------------------------------------------------------------------- weights


def _write_keras1_vgg16_file(vgg: keras.Model, path) -> None:
    """The layout of Keras' vgg16_weights_tf_dim_ordering_tf_kernels.h5 (Keras 1 era):
    root attribute layer_names; per layer a group whose weight_names are
    '<layer>_W_1:0' and '<layer>_b_1:0', datasets stored under those names."""
    with h5py.File(path, "w") as f:
        f.attrs["layer_names"] = [layer.name.encode() for layer in vgg.layers]
        for layer in vgg.layers:
            group = f.create_group(layer.name)
            names = [f"{layer.name}_{t}_1:0".encode() for t in ("W", "b")][: len(layer.weights)]
            group.attrs["weight_names"] = names
            for name, value in zip(names, layer.get_weights(), strict=True):
                group.create_dataset(name.decode(), data=value)


@pytest.mark.slow
def test_load_local_keras_vgg16_file_converts_fc_layers(tmp_path):
    vgg = keras.applications.VGG16(weights=None, include_top=True)
    path = tmp_path / "vgg16_weights_tf_dim_ordering_tf_kernels.h5"
    _write_keras1_vgg16_file(vgg, path)
    # The mimic is read by Keras itself like the real file.
    check = keras.applications.VGG16(weights=str(path), include_top=True)
    np.testing.assert_array_equal(check.get_layer("fc2").kernel.numpy(), vgg.get_layer("fc2").kernel.numpy())
    del check

    model = build_model("fcn8s_vgg16", 19, weights=str(path))
    for name in ("block1_conv1", "block3_conv2", "block5_conv3"):
        np.testing.assert_array_equal(model.get_layer(name).kernel.numpy(), vgg.get_layer(name).kernel.numpy())
        np.testing.assert_array_equal(model.get_layer(name).bias.numpy(), vgg.get_layer(name).bias.numpy())
    fc1 = vgg.get_layer("fc1").kernel.numpy()
    fc6 = model.get_layer("fc6").kernel.numpy()
    # Flatten order of a 7x7x512 map is (y, x, c): row (y*7 + x)*512 + c.
    assert fc6[2, 5, 17, 33] == fc1[(2 * 7 + 5) * 512 + 17, 33]
    np.testing.assert_array_equal(fc6.reshape(-1, 4096), fc1)
    np.testing.assert_array_equal(model.get_layer("fc7").kernel.numpy()[0, 0], vgg.get_layer("fc2").kernel.numpy())
    np.testing.assert_array_equal(model.get_layer("fc7").bias.numpy(), vgg.get_layer("fc2").bias.numpy())
    # Same conv features: the converted fc6 on a 7x7 pool5 equals fc1 on its flattening.
    pool5 = np.random.default_rng(0).normal(size=(1, 7, 7, 512)).astype(np.float32)
    conv_out = model.get_layer("fc6")(pool5).numpy()[0, 3, 3]
    dense_out = vgg.get_layer("fc1")(pool5.reshape(1, -1)).numpy()[0]
    np.testing.assert_allclose(conv_out, dense_out, rtol=1e-4, atol=1e-3)

    with pytest.raises(CbstError, match="vgg16_weights_tf_dim_ordering_tf_kernels.h5") as err:
        build_model("fcn8s_vgg16", 19, width=0.5, weights=str(path))
    assert "\n" not in str(err.value)


def test_missing_or_bad_weights_file_is_one_line_error(tmp_path):
    with pytest.raises(CbstError, match="nope.h5: weights file not found"):
        build_model("fcn8s_vgg16", 3, width=TINY, weights=str(tmp_path / "nope.h5"))
    bad = tmp_path / "garbage.h5"
    bad.write_bytes(b"not hdf5")
    with pytest.raises(CbstError, match="garbage.h5"):
        build_model("fcn8s_vgg16", 3, width=TINY, weights=str(bad))
    with pytest.raises(CbstError, match="resnet38"):
        build_model("resnet38", 3, width=TINY, weights="imagenet")
    with pytest.raises(CbstError, match="unknown network"):
        build_model("vgg", 3)
    with pytest.raises(CbstError, match="unknown option"):
        build_model("resnet38", 3, width=TINY, dropuot=0.1)


def test_checkpoint_round_trip_and_mismatch(tmp_path):
    model = build_model("resnet38", 3, width=TINY)
    _randomise(model, seed=5)
    path = tmp_path / "final.weights.h5"
    model.save_weights(str(path))
    # The checkpoint loads into the stride-8 variant too (same layers and variables).
    noup = build_model("resnet38", 3, width=TINY, upsample=False, weights=str(path))
    for a, b in zip(noup.get_weights(), model.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(CbstError, match="final.weights.h5: does not match model") as err:
        load_checkpoint(build_model("resnet38", 3, width=2 * TINY), path)
    assert "\n" not in str(err.value)
    with pytest.raises(CbstError, match="final.weights.h5"):
        load_checkpoint(build_model("resnet38", 4, width=TINY), path)


# ----------------------------------------------------------------------------- precision, BN, classifier


@pytest.mark.parametrize("name", ["fcn8s_vgg16", "resnet38"])
def test_logits_float32_under_mixed_bfloat16(name):
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        model = build_model(name, 3, width=TINY)
        noup = build_model(name, 3, width=TINY, upsample=False)
        x = _images(33, 41)
        assert model.get_layer("block1_conv1" if name == "fcn8s_vgg16" else "conv1a").compute_dtype == "bfloat16"
        assert model(x).dtype == "float32"
        assert noup(x).dtype == "float32"
    finally:
        keras.mixed_precision.set_global_policy("float32")


def test_freeze_bn_keeps_statistics_but_trains_affine():
    x = _images(24, 24, n=2)
    frozen = build_model("resnet38", 3, width=TINY, freeze_bn=True, dropout=0.0)
    bn = frozen.get_layer("bn7")
    before = bn.moving_mean.numpy().copy()
    np.testing.assert_array_equal(frozen(x, training=True).numpy(), frozen(x, training=False).numpy())
    np.testing.assert_array_equal(bn.moving_mean.numpy(), before)
    assert any(v is bn.gamma for v in frozen.trainable_weights)
    live = build_model("resnet38", 3, width=TINY, dropout=0.0)
    before = live.get_layer("bn7").moving_mean.numpy().copy()
    live(x, training=True)
    assert not np.allclose(live.get_layer("bn7").moving_mean.numpy(), before)


def test_classifier_variables():
    fcn = build_model("fcn8s_vgg16", 3, width=TINY)
    names = sorted(v.path for v in classifier_variables(fcn))
    assert names == sorted(["score_fr/kernel", "score_fr/bias", "score_pool4/kernel", "score_pool4/bias",
                            "score_pool3/kernel", "score_pool3/bias", "upscore2/kernel", "upscore_pool4/kernel"])
    res = build_model("resnet38", 3, width=TINY)
    assert sorted(v.path for v in classifier_variables(res)) == sorted(
        ["classifier_conv6a/kernel", "classifier_conv6a/bias", "classifier_score/kernel", "classifier_score/bias"])


# ----------------------------------------------------------------------------- FLOPs, summary


def test_flops_counted_analytically():
    x = keras.Input((10, 12, 3))
    y = keras.layers.Conv2D(4, 3, padding="same", dilation_rate=2)(x)  # 2*9*3*4*120
    y = keras.layers.Conv2D(5, 3, strides=2, padding="same")(y)  # 2*9*4*5*(5*6)
    y = keras.layers.Conv2DTranspose(2, 4, strides=2, use_bias=False)(y)  # 2*16*5*2*(5*6)
    y = keras.layers.Dense(7)(y)  # 2*2*7*(12*14)
    model = keras.Model(x, y)
    assert model_flops(model) == 2 * (9 * 3 * 4 * 120 + 9 * 4 * 5 * 30 + 16 * 5 * 2 * 30 + 2 * 7 * 12 * 14)


def test_print_summary_json(capsys):
    cfg = Config()
    cfg.model.width = 0.125
    cfg.data.num_classes = 19
    result = print_summary(cfg, (64, 128), as_json=True)
    printed = json.loads(capsys.readouterr().out)
    assert printed == result
    assert set(printed) == {"name", "params", "flops", "input"}
    assert printed["params"] == build_model("fcn8s_vgg16", 19, width=0.125).count_params()
    # conv1_1 alone: 2 * 3*3*3*8 MACs at every one of the 64x128 pixels.
    assert printed["flops"] > 2 * 3 * 3 * 3 * 8 * 64 * 128
    assert printed["input"] == [64, 128]
    print_summary(cfg, (64, 128), as_json=False)
    assert "fc6" in capsys.readouterr().out
