"""tf.data reader: augmentation alignment, mining crops, seeding, mixing, subsets, eval slicing."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from cbst_tf.config import DataConfig
from cbst_tf.data.reader import eval_dataset, read_manifest, train_dataset
from cbst_tf.data.writer import DatasetWriter
from cbst_tf.errors import CbstError

MEAN = [123.68, 116.78, 103.94]


def write_dir(path, images, labels=None, ids=None, shards=2):
    """A TFRecord directory from RGB uint8 arrays (PNG) and optional train-id labels."""
    ids = ids or [f"img{i:03d}.png" for i in range(len(images))]
    with DatasetWriter(path, num_items=len(images), shards=shards, name=path.name, fmt="test") as w:
        for i, rgb in enumerate(images):
            png = cv2.imencode(".png", np.ascontiguousarray(rgb[..., ::-1]))[1].tobytes()
            w.add(i, png, "png", rgb.shape[0], rgb.shape[1], ids[i], None if labels is None else labels[i])
        w.close()
    return path


def cfg(**kw) -> DataConfig:
    base = dict(crop_size=[48, 64], scale_range=[0.7, 1.3], shuffle_buffer=8, parallel_calls=2, cycle_length=2,
                prefetch=1)
    base.update(kw)
    return DataConfig(**base)


def coordinate_example(h=40, w=56):
    """R = 6y, G = 4x, B = 128; label = block id of 5x7 blocks: both encode the position."""
    yy, xx = np.mgrid[0:h, 0:w]
    rgb = np.stack([6 * yy, 4 * xx, np.full_like(yy, 128)], -1).astype(np.uint8)
    label = ((yy // 5) * 8 + xx // 7).astype(np.uint8)
    return rgb, label


def test_augmentation_keeps_image_and_label_aligned(tmp_path):
    rgb, label = coordinate_example()
    d = write_dir(tmp_path / "coords", [rgb] * 2, [label] * 2, shards=1)
    images, labels = next(iter(train_dataset(d, cfg(), 24, seed=5)))
    images, labels = images.numpy(), labels.numpy()
    assert images.shape == (24, 48, 64, 3) and labels.shape == (24, 48, 64)
    flips, scales, exact, total = set(), [], 0, 0
    for img, lab in zip(images, labels, strict=True):
        pad = lab == 255
        # Padding: exactly the mean colour in the image, ignore in the label, nowhere else.
        np.testing.assert_array_equal(img[pad], np.broadcast_to(np.float32(MEAN), img[pad].shape))
        np.testing.assert_allclose(img[~pad][:, 2], 128.0, atol=1e-3)
        y, x = img[..., 0] / 6.0, img[..., 1] / 4.0  # source coordinates carried by the bilinear image
        by, bx = lab // 8, lab % 8  # source block carried by the nearest-neighbour label
        valid = ~pad
        # Within one source pixel of the block (nearest vs bilinear at block edges, border clamping).
        assert np.all((y[valid] >= 5 * by[valid] - 1) & (y[valid] <= 5 * by[valid] + 5)), "rows misaligned"
        assert np.all((x[valid] >= 7 * bx[valid] - 1) & (x[valid] <= 7 * bx[valid] + 7)), "columns misaligned"
        # Interior pixels: the label is the block of the rounded bilinear coordinate, exactly.
        ry, rx = np.round(y).astype(int), np.round(x).astype(int)
        exact += int(np.sum(((ry // 5) * 8 + rx // 7)[valid] == lab[valid]))
        total += int(valid.sum())
        pair_x, pair_y = valid[:, 1:] & valid[:, :-1], valid[1:] & valid[:-1]
        flips.add(bool(np.median(np.diff(x, axis=1)[pair_x]) < 0))
        scales.append(1.0 / np.median(np.diff(y, axis=0)[pair_y]))  # source rows per output row = 1/s
    assert exact / total > 0.97
    assert flips == {True, False}
    assert 0.68 < min(scales) < 0.9 and 1.1 < max(scales) < 1.32


def blob_example(h=40, w=56, rare_at=(30, 45), big_class=12):
    label = np.zeros((h, w), np.uint8)
    label[rare_at[0]:rare_at[0] + 3, rare_at[1]:rare_at[1] + 3] = 7  # 9 pixels of a rare class
    label[0:12, 0:16] = big_class  # 192 pixels of a larger mined class
    rgb = np.random.default_rng(0).integers(0, 256, (h, w, 3), dtype=np.uint8)
    return rgb, label


def test_mining_crop_contains_a_mined_class(tmp_path):
    rgb, label = blob_example()
    plain = label.copy()
    plain[label == 7] = 0
    plain[label == 12] = 0
    d = write_dir(tmp_path / "m", [rgb, rgb], [label, plain], ids=["rare.png", "none.png"], shards=1)
    c = cfg(crop_size=[8, 8])

    def batch(prob, classes):
        return next(iter(train_dataset(d, c, 64, seed=1, mine_classes=classes, mine_prob=prob,
                                       subsets=[["rare.png"]])))[1].numpy()

    mined = batch(1.0, [7])
    assert all((lab == 7).any() for lab in mined)
    assert np.mean([(lab == 7).any() for lab in batch(0.0, [7])]) < 0.5  # random crops mostly miss it
    # A class is drawn uniformly among the present mined classes (official code), not a pixel.
    both = batch(1.0, [7, 12])
    assert all(((lab == 7) | (lab == 12)).any() for lab in both)
    assert 0.25 < np.mean([(lab == 7).any() for lab in both]) < 0.75
    # An image without any mined class still yields normal crops.
    none = next(iter(train_dataset(d, c, 4, seed=1, mine_classes=[7], mine_prob=1.0, subsets=[["none.png"]])))
    assert not np.isin(none[1].numpy(), [7, 12]).any()


def flat_images(values, size=(8, 8)):
    return [np.full((*size, 3), v, np.uint8) for v in values]


def test_same_seed_same_batches_and_different_seed_differs(tmp_path):
    rng = np.random.default_rng(3)
    imgs = [rng.integers(0, 256, (20, 24, 3), dtype=np.uint8) for _ in range(6)]
    d = write_dir(tmp_path / "r", imgs, [rng.integers(0, 19, (20, 24), dtype=np.uint8) for _ in imgs], shards=3)
    c = cfg(crop_size=[16, 16])

    def take(seed):
        return [(x.numpy(), y.numpy()) for x, y in train_dataset(d, c, 2, seed=seed).take(4)]

    a, b, other = take(7), take(7), take(8)
    for (xa, ya), (xb, yb) in zip(a, b, strict=True):
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(ya, yb)
    assert any(not np.array_equal(xa, xo) for (xa, _), (xo, _) in zip(a, other, strict=True))


def _values(ds, n_batches):
    out = []
    for x, _ in ds.take(n_batches):
        out.extend(int(v) for v in x.numpy()[:, 0, 0, 0])
    return out


def test_directory_mixing_weights_and_subsets(tmp_path):
    a = write_dir(tmp_path / "a", flat_images([10, 20, 30, 40, 50, 60]))
    b = write_dir(tmp_path / "b", flat_images([200, 210]))
    c = cfg(crop_size=[8, 8], scale_range=[1.0, 1.0], flip=False)
    vals = _values(train_dataset([a, b], c, 20, seed=0), 12)
    frac_a = np.mean([v < 100 for v in vals])
    assert 0.65 < frac_a < 0.85  # weights=None: every example equally likely -> 6/8 from a
    assert set(vals) == {10, 20, 30, 40, 50, 60, 200, 210}
    vals = _values(train_dataset([a, b], c, 20, seed=0, weights=[0.0, 1.0]), 3)
    assert set(vals) == {200, 210}
    vals = _values(train_dataset([a, b], c, 20, seed=0, subsets=[{"img001.png", "img004.png"}, None]), 12)
    assert set(vals) == {20, 50, 200, 210}
    assert 0.4 < np.mean([v < 100 for v in vals]) < 0.6  # the subset's size (2) sets its share
    with pytest.raises(CbstError, match="no examples"):
        train_dataset([a, b], c, 2, seed=0, weights=[1.0, 1.0], subsets=[set(), None])
    with pytest.raises(CbstError, match="subsets"):
        train_dataset([a, b], c, 2, seed=0, subsets=[None])


def test_one_epoch_sees_every_example_once(tmp_path):
    d = write_dir(tmp_path / "e", flat_images(range(0, 90, 10)), shards=3)
    c = cfg(crop_size=[8, 8], scale_range=[1.0, 1.0], flip=False, shuffle_buffer=16)
    vals = _values(train_dataset(d, c, 9, seed=2), 2)
    assert sorted(vals[:9]) == list(range(0, 90, 10)) and sorted(vals[9:]) == list(range(0, 90, 10))
    assert vals[:9] != list(range(0, 90, 10))  # shuffled


def test_eval_dataset_order_and_shards(tmp_path):
    d = write_dir(tmp_path / "ev", flat_images(range(0, 70, 10), size=(5, 6)), shards=3)
    c = cfg()
    full = [(ex["source_id"].numpy().decode(), int(ex["image"].numpy()[0, 0, 0])) for ex in eval_dataset(d, c)]
    assert full == [(f"img{i:03d}.png", 10 * i) for i in range(7)]
    ex = next(iter(eval_dataset(d, c)))
    assert ex["label"].dtype.name == "uint8" and ex["label"].shape == (5, 6) and (ex["label"].numpy() == 255).all()
    parts = [[e["source_id"].numpy().decode() for e in eval_dataset(d, c, shard=(i, 3))] for i in range(3)]
    assert parts == [[full[j][0] for j in range(i, 7, 3)] for i in range(3)]
    with pytest.raises(CbstError):
        eval_dataset(d, c, shard=(3, 3))


def test_read_manifest_errors_name_the_file(tmp_path):
    with pytest.raises(CbstError, match="manifest.json: file not found"):
        read_manifest(tmp_path)
    d = write_dir(tmp_path / "x", flat_images([1]), shards=1)
    (d / "data-00000-of-00001.tfrecord").unlink()
    with pytest.raises(CbstError, match="data-00000-of-00001.tfrecord: shard listed"):
        read_manifest(d)
    (d / "manifest.json").write_text("{")
    with pytest.raises(CbstError, match="corrupt JSON"):
        read_manifest(d)
