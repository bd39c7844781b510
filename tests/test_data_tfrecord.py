"""TFRecord schema round trip (pixel-exact), shard writer atomicity and contiguity."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import tensorflow as tf

from cbst_tf.data.reader import decode_example
from cbst_tf.data.tfrecord import ShardWriter, encode_label_png, make_example, parse_example, sniff_format


def _png(rgb: np.ndarray) -> bytes:
    return cv2.imencode(".png", rgb[..., ::-1])[1].tobytes()


def _jpeg(rgb: np.ndarray) -> bytes:
    return cv2.imencode(".jpg", rgb[..., ::-1])[1].tobytes()


def test_round_trip_png_with_label_is_pixel_exact():
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (7, 9, 3), dtype=np.uint8)
    label = rng.choice(np.r_[np.arange(19), 255], (7, 9)).astype(np.uint8)
    data = _png(rgb)
    ex = make_example(data, "png", 7, 9, "a/b.png", label).SerializeToString()
    raw = parse_example(tf.constant(ex))
    assert raw["encoded"].numpy() == data  # stored as on disk, never re-encoded
    assert raw["source_id"].numpy() == b"a/b.png"
    assert (int(raw["height"]), int(raw["width"])) == (7, 9)
    dec = decode_example(tf.constant(ex))
    np.testing.assert_array_equal(dec["image"].numpy(), rgb.astype(np.float32))
    np.testing.assert_array_equal(dec["label"].numpy(), label)
    assert dec["format"].numpy() == b"png"


def test_unlabelled_jpeg_has_no_label_feature_and_reads_as_ignore():
    rgb = np.random.default_rng(1).integers(0, 256, (6, 5, 3), dtype=np.uint8)
    data = _jpeg(rgb)
    ex = make_example(data, "jpeg", 6, 5, "x.jpg")
    assert "image/segmentation/class/encoded" not in ex.features.feature
    dec = decode_example(tf.constant(ex.SerializeToString()))
    np.testing.assert_array_equal(dec["image"].numpy(), tf.io.decode_jpeg(data).numpy().astype(np.float32))
    np.testing.assert_array_equal(dec["label"].numpy(), np.full((6, 5), 255, np.uint8))


def test_label_png_is_single_channel_and_checked():
    label = np.arange(12, dtype=np.uint8).reshape(3, 4)
    png = encode_label_png(label)
    assert sniff_format(png) == "png"
    assert cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_UNCHANGED).ndim == 2
    with pytest.raises(ValueError):
        encode_label_png(label.astype(np.int32))
    with pytest.raises(ValueError):
        make_example(png, "png", 4, 4, "x", label)  # label shape differs from the image


def _records(path) -> list[bytes]:
    return [r.numpy() for r in tf.data.TFRecordDataset(str(path))]


def test_shard_writer_is_contiguous_and_keeps_empty_shards(tmp_path):
    with ShardWriter(tmp_path, 3, 7) as w:
        for i in (0, 1, 2, 4, 5, 6):  # item 3 skipped; shard 1 holds items 3 and 4 -> only 4
            w.write(i, str(i).encode())
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["data-00000-of-00003.tfrecord", "data-00001-of-00003.tfrecord", "data-00002-of-00003.tfrecord"]
    got = [_records(tmp_path / n) for n in names]
    assert got == [[b"0", b"1", b"2"], [b"4"], [b"5", b"6"]]
    assert w.counts == [3, 1, 2]
    other = ShardWriter(tmp_path / "other", 2, 4)
    other.write(2, b"")
    for bad in (2, 1, 4):  # repeated, out of order, beyond num_items
        with pytest.raises(ValueError):
            other.write(bad, b"")
    other.abort()


def test_shard_writer_failure_leaves_only_completed_shards(tmp_path):
    with pytest.raises(RuntimeError):
        with ShardWriter(tmp_path, 2, 4) as w:
            for i in range(3):
                w.write(i, b"r")  # item 2 opens shard 1 (under a temporary name)
            assert any(p.name.startswith(".data-00001") for p in tmp_path.iterdir())
            raise RuntimeError("boom")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data-00000-of-00002.tfrecord"]


def test_more_shards_than_items_are_capped(tmp_path):
    with ShardWriter(tmp_path, 8, 2) as w:
        w.write(0, b"a")
        w.write(1, b"b")
    assert w.names == ["data-00000-of-00002.tfrecord", "data-00001-of-00002.tfrecord"]
