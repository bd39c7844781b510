"""Spatial priors (section 4.4): counting, blur scaling, normalisation, Eq. 9 scaling, the step."""

import json
import math

import cv2
import numpy as np
import pytest

from cbst_tf.algos import (
    PriorAccumulator,
    class_frequency_accumulate,
    class_posterior,
    kernel_at_prior,
    prior_scale,
    resize_labels_nearest,
    resize_priors,
    smooth_and_normalise,
)
from cbst_tf.errors import CbstError


def test_counting_matches_brute_force():
    rng = np.random.default_rng(0)
    counts = np.zeros((6, 7, 4), np.int64)
    labels = [rng.choice([0, 1, 2, 3, 255], size=(6, 7)).astype(np.uint8) for _ in range(5)]
    for lab in labels:
        class_frequency_accumulate(counts, lab)
    want = np.zeros_like(counts)
    for lab in labels:
        for i in range(6):
            for j in range(7):
                if lab[i, j] != 255:
                    want[i, j, lab[i, j]] += 1
    np.testing.assert_array_equal(counts, want)
    with pytest.raises(CbstError, match="value 9 is not a train id below 4"):
        class_frequency_accumulate(counts, np.full((6, 7), 9, np.uint8))


def test_nearest_resize_samples_pixel_centres():
    lab = np.arange(16, dtype=np.uint8).reshape(4, 4)
    # 2x downsampling by centres picks rows/cols 1 and 3 (pixel centres 0.5*2 = 1, 1.5*2 = 3)
    np.testing.assert_array_equal(resize_labels_nearest(lab, (2, 2)), lab[1::2, 1::2])
    acc = PriorAccumulator(16, (2, 2))
    acc.update(lab)
    assert acc.counts.sum() == 4 and acc.counts[0, 0, 5] == 1


def test_normalisation_and_unseen_class_uniform():
    rng = np.random.default_rng(1)
    counts = rng.integers(0, 5, size=(16, 32, 3))
    counts[..., 2] = 0
    q = smooth_and_normalise(counts, 70, (128, 256), (16, 32))
    assert q.dtype == np.float32 and q.shape == (16, 32, 3)
    np.testing.assert_allclose(q.sum(axis=(0, 1)), 1.0, rtol=1e-5)
    np.testing.assert_allclose(q[..., 2], 1 / (16 * 32))


def test_class_posterior_is_the_per_pixel_class_frequency():
    """``prior_norm: classes``: from the pixel-normalised maps and the class totals, each pixel
    gets its source class frequency (checked against counting by hand); unseen pixels 1/C."""
    rng = np.random.default_rng(4)
    counts = rng.integers(0, 6, size=(5, 7, 4)).astype(np.float64)
    counts[..., 3] *= 40  # a frequent class next to rare ones: p(n|c) and p(c|n) differ most
    counts[2, 3] = 0  # a pixel where no class was seen
    q = (counts / counts.sum(axis=(0, 1))).astype(np.float32)
    got = class_posterior(q, counts.sum(axis=(0, 1)).tolist())
    assert got.dtype == np.float32 and got.shape == q.shape
    for y in range(5):
        for x in range(7):
            total = sum(counts[y, x])
            want = [0.25] * 4 if total == 0 else [counts[y, x, c] / total for c in range(4)]
            np.testing.assert_allclose(got[y, x], want, rtol=1e-5, err_msg=f"pixel {(y, x)}")
    # Against the paper's p(n|c), the frequent class gains at every pixel where it competes.
    both = (counts[..., 3] > 0) & (counts[..., 0] > 0)
    ratio_paper = q[..., 3] / np.maximum(q[..., 0], 1e-12)
    ratio_classes = got[..., 3] / np.maximum(got[..., 0], 1e-12)
    assert (ratio_classes[both] > ratio_paper[both]).all()
    with pytest.raises(CbstError, match="class_counts: expected 4 values"):
        class_posterior(q, [1.0, 2.0])
    with pytest.raises(CbstError, match="non-negative"):
        class_posterior(q, [1.0, -2.0, 1.0, 1.0])


def test_load_priors_classes_reads_counts_and_rejects_bad_ones(tmp_path):
    from cbst_tf.selftrain.priors_step import load_priors

    q = np.full((2, 3, 2), 1 / 6, dtype=np.float32)
    np.save(tmp_path / "priors.npy", q)
    meta = tmp_path / "priors.json"
    meta.write_text(json.dumps({"class_pixel_counts_at_prior": [3, 1]}))
    np.testing.assert_allclose(load_priors(tmp_path, 2, "classes"), np.broadcast_to([0.75, 0.25], q.shape))
    for bad in ([3], [3, "x"], [3, True], {"a": 1}):
        meta.write_text(json.dumps({"class_pixel_counts_at_prior": bad}))
        with pytest.raises(CbstError, match=r"priors\.json: class_pixel_counts_at_prior must list 2 counts"):
            load_priors(tmp_path, 2, "classes")
    with pytest.raises(CbstError, match="selftrain.prior_norm: expected 'pixels' or 'classes'"):
        load_priors(tmp_path, 2, "other")


def measured_sigma(q):
    ys, xs = np.mgrid[: q.shape[0], : q.shape[1]]
    cy, cx = (q * ys).sum(), (q * xs).sum()
    return math.sqrt((q * (ys - cy) ** 2).sum()), math.sqrt((q * (xs - cx) ** 2).sum())


def test_blur_kernel_is_scaled_from_source_pixels():
    image = (1024, 2048)
    assert kernel_at_prior(70, image, (128, 256)) == (8.75, 8.75)
    sigmas = []
    for prior in ((128, 256), (256, 512)):
        delta = np.zeros((*prior, 1))
        delta[prior[0] // 2, prior[1] // 2] = 1
        sy, sx = measured_sigma(smooth_and_normalise(delta, 70, image, prior)[..., 0])
        want = 70 / 6 * prior[0] / image[0]  # sigma = kernel / 6 at prior resolution
        assert abs(sy - want) / want < 0.05 and abs(sx - want) / want < 0.05
        sigmas.append(sy)
    # the same blur in source pixels: twice the prior resolution, twice the sigma in prior pixels
    assert abs(sigmas[1] / sigmas[0] - 2) < 0.03
    # anisotropic scaling: a prior squashed in x gets a narrower kernel in x
    delta = np.zeros((64, 64, 1))
    delta[32, 32] = 1
    sy, sx = measured_sigma(smooth_and_normalise(delta, 70, (512, 1024), (64, 64))[..., 0])
    assert abs(sy / sx - 2) < 0.1


def test_class_in_top_rows_gives_prior_at_the_top():
    labels = np.zeros((64, 128), np.uint8)
    labels[:8] = 1  # "sky" only in the top eighth
    labels[60:] = 255
    acc = PriorAccumulator(3, (32, 64))
    for _ in range(3):
        acc.update(labels)
    q = smooth_and_normalise(acc.counts, 16, (64, 128), (32, 64))
    assert q[:8, :, 1].sum() > 0.95  # top quarter of the prior holds nearly all of class 1
    assert q[4:, :, 1].sum() < q[:4, :, 1].sum()
    rows_1 = (q[..., 1].sum(axis=1) * np.arange(32)).sum()
    rows_0 = (q[..., 0].sum(axis=1) * np.arange(32)).sum()
    assert rows_1 < 3 < 14 < rows_0


def test_resize_priors_renormalises():
    rng = np.random.default_rng(2)
    q = smooth_and_normalise(rng.integers(0, 9, size=(8, 16, 4)), 10, (64, 128), (8, 16))
    big = resize_priors(q, (32, 48))
    assert big.shape == (32, 48, 4)
    np.testing.assert_allclose(big.sum(axis=(0, 1)), 1.0, rtol=1e-5)
    flat = resize_priors(np.full((4, 4, 1), 1 / 16, np.float32), (8, 8))
    np.testing.assert_allclose(flat, 1 / 64, rtol=1e-6)


def test_eq9_argmax_unchanged_by_the_global_scale():
    rng = np.random.default_rng(3)
    h, w, c = 256, 512, 6
    p = rng.dirichlet(np.full(c, 0.3), size=(h, w)).astype(np.float32)
    # classes with different spatial concentration, so their maxima differ
    q = rng.random((h, w, c)).astype(np.float32) ** (2.0 ** np.arange(c, dtype=np.float32))
    q /= q.sum(axis=(0, 1))  # q ~ 1/131072: q * p is a float16 subnormal
    exact = (q.astype(np.float64) * p).argmax(-1)
    s = prior_scale(q)
    assert s == 2.0 ** -math.ceil(math.log2(q.max())) and 0.5 < s * q.max() <= 1
    np.testing.assert_array_equal((s * q.astype(np.float64) * p).argmax(-1), exact)  # a global constant
    per_class = q / q.max(axis=(0, 1))  # a per-class constant would change Eq. 9's argmax
    assert ((per_class * p).argmax(-1) != exact).mean() > 0.05
    # float16 without the scale loses the argmax at many pixels; with it only near-ties differ
    raw16 = (q * p).astype(np.float16).astype(np.float64)
    scaled16 = (q * np.float32(s) * p).astype(np.float16).astype(np.float64)
    wrong = scaled16.argmax(-1) != exact
    assert (raw16.argmax(-1) != exact).mean() > max(0.01, 20 * wrong.mean())
    pot = np.sort(q.astype(np.float64) * p, axis=-1)
    near_tie = (pot[..., -1] - pot[..., -2]) <= pot[..., -1] * 2.0 ** -10
    assert wrong.mean() < 1e-3 and not (wrong & ~near_tie).any()


@pytest.mark.slow
def test_priors_step_end_to_end(tmp_path):
    from cbst_tf.config import load_config
    from cbst_tf.data.writer import DatasetWriter
    from cbst_tf.selftrain.priors_step import load_priors, run_priors

    rng = np.random.default_rng(4)
    labels = []
    src = tmp_path / "gta"
    with DatasetWriter(src, num_items=5, shards=2, name="gta", fmt="test") as writer:
        for i in range(5):
            lab = np.full((32, 64), 255, np.uint8)
            lab[:10] = 10  # sky on top
            lab[20:] = rng.choice([0, 1, 13], size=(12, 64))
            labels.append(lab)
            png = cv2.imencode(".png", np.zeros((32, 64, 3), np.uint8))[1].tobytes()
            writer.add(i, png, "png", 32, 64, f"img{i}.png", lab)
        writer.close()
    cfg = load_config(None, [f"data.source={src}", f"runtime.workdir={tmp_path / 'run'}",
                             "selftrain.prior_size=[16,32]", "selftrain.prior_kernel=8"])
    path = run_priors(cfg)
    out = tmp_path / "run" / "priors"
    assert path == out / "priors.npy" and (out / "DONE").is_file() and (out / "config.yaml").is_file()
    q = np.load(path)
    acc = PriorAccumulator(19, (16, 32))
    for lab in labels:
        acc.update(lab)
    np.testing.assert_array_equal(q, smooth_and_normalise(acc.counts, 8, (32, 64), (16, 32)))
    assert q[:5, :, 10].sum() > 0.9
    meta = json.loads((out / "priors.json").read_text())
    assert meta["num_images"] == 5 and meta["kernel_px_prior"] == [4.0, 4.0]
    assert meta["sigma_prior"] == [4 / 6, 4 / 6] and len(meta["classes"]) == 19
    heatmaps = sorted(p.name for p in (out / "heatmaps").iterdir())
    assert len(heatmaps) == 19 and "6_traffic_light.png" in heatmaps
    sky = cv2.imread(str(out / "heatmaps" / "10_sky.png"))
    assert sky.shape == (16, 32, 3)
    assert cv2.imread(str(out / "heatmaps_grid.png")).shape[1] == 4 * 32
    np.testing.assert_array_equal(load_priors(tmp_path / "run"), q)
    stamp = path.stat().st_mtime_ns
    assert run_priors(cfg) == path and path.stat().st_mtime_ns == stamp  # DONE: skipped
    path.write_bytes(b"garbage")
    with pytest.raises(CbstError, match="corrupt priors"):
        load_priors(path)
    with pytest.raises(CbstError, match="not found"):
        load_priors(tmp_path / "elsewhere")
