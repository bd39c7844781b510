"""Multi-scale / flip inference vs a slow per-pass reference written here."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from cbst_tf import inference
from cbst_tf.inference import predict_probs, scaled_size

C = 5


def conv_model(seed: int = 0, kernel: int = 3) -> keras.Model:
    keras.utils.set_random_seed(seed)
    inp = keras.Input((None, None, 3))
    x = keras.layers.Rescaling(1 / 127.5, offset=-1.0)(inp)
    x = keras.layers.Conv2D(6, kernel, padding="same", activation="relu")(x)
    out = keras.layers.Conv2D(C, kernel, padding="same")(x)
    return keras.Model(inp, out)


def image(h: int = 12, w: int = 16, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0, 255, (h, w, 3)).astype(np.float32)


def reference_probs(model, img, scales, flip, input_scale=1.0, size=None):
    """Obviously-correct: one eager call per (scale, flip), resize, softmax, mean."""
    h, w = img.shape[:2]
    size = size or (h, w)
    acc = []
    for s in scales:
        for f in ([False, True] if flip else [False]):
            x = tf.constant(img[None])
            hw = (max(1, int(h * s * input_scale + 0.5)), max(1, int(w * s * input_scale + 0.5)))
            if hw != (h, w):
                x = tf.image.resize(x, hw, method="bilinear")
            if f:
                x = x[:, :, ::-1]
            y = model(x, training=False)
            if f:
                y = y[:, :, ::-1]
            if tuple(y.shape[1:3]) != tuple(size):
                y = tf.image.resize(y, size, method="bilinear")
            acc.append(tf.nn.softmax(y, axis=-1).numpy()[0])
    return np.mean(acc, axis=0)


def test_single_scale_is_exactly_the_plain_model_call():
    model, img = conv_model(), image()
    plain_logits = model(img[None], training=False).numpy()[0]
    plain = tf.nn.softmax(plain_logits, axis=-1).numpy()
    probs = predict_probs(model, img, scales=(1.0,))
    assert probs.dtype == np.float32 and probs.shape == (12, 16, C)
    assert np.array_equal(probs, plain)
    # averaging two identical passes is exact too
    assert np.array_equal(predict_probs(model, img, scales=(1.0, 1.0)), plain)


def test_multi_scale_averages_probabilities_like_the_reference():
    model, img = conv_model(), image(13, 18)
    scales = (0.5, 0.75, 1.0)
    got = predict_probs(model, img, scales=scales)
    want = reference_probs(model, img, scales, False)
    np.testing.assert_allclose(got, want, atol=1e-6)
    np.testing.assert_allclose(got.sum(-1), 1.0, atol=1e-5)
    # it really differs from single scale (the test can fail)
    assert np.abs(got - predict_probs(model, img)).max() > 1e-3


def test_flip_matches_reference_and_is_a_no_op_on_an_equivariant_model():
    model, img = conv_model(kernel=3), image()
    got = predict_probs(model, img, scales=(1.0, 0.75), flip=True)
    np.testing.assert_allclose(got, reference_probs(model, img, (1.0, 0.75), True), atol=1e-6)
    assert np.abs(got - predict_probs(model, img, scales=(1.0, 0.75))).max() > 1e-4

    pointwise = conv_model(kernel=1)  # 1x1 convolutions commute with mirroring
    np.testing.assert_allclose(predict_probs(pointwise, img, flip=True),
                               predict_probs(pointwise, img), atol=1e-7)


def test_input_scale_output_size_batches_and_one_trace():
    model, img = conv_model(), image(10, 14)
    got = predict_probs(model, img, scales=(1.0,), input_scale=0.5, size=(20, 28))
    assert got.shape == (20, 28, C)
    np.testing.assert_allclose(got, reference_probs(model, img, (1.0,), False, 0.5, (20, 28)), atol=1e-6)
    batch = np.stack([img, image(10, 14, seed=3)])
    out = predict_probs(model, batch, scales=(0.5, 1.0))
    assert out.shape == (2, 10, 14, C)
    np.testing.assert_allclose(out[1], predict_probs(model, batch[1], scales=(0.5, 1.0)), atol=1e-6)
    for hw in [(9, 11), (17, 5), (8, 8)]:
        predict_probs(model, image(*hw), scales=(0.5, 1.0), flip=True)
    assert inference._CACHE["fn"].experimental_get_tracing_count() == 1


def test_bad_arguments():
    model = conv_model()
    with pytest.raises(ValueError, match="scales"):
        predict_probs(model, image(), scales=())
    with pytest.raises(ValueError, match="image must be"):
        predict_probs(model, np.zeros((4, 4), np.float32))
    assert scaled_size((10, 15), 0.5) == (5, 8) and scaled_size((1, 1), 0.1) == (1, 1)
