"""The TFRecord schema (TF Model Garden segmentation compatible) and the shard writer.

One ``tf.train.Example`` per image: the image bytes exactly as stored on disk (never
re-encoded, so conversion is lossless and fast), its format and size, a single-channel PNG
of train ids (255 = ignore; absent for unlabelled images) and ``image/source_id``, the
image's path relative to the dataset root (a stable key across rounds).
"""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np
import tensorflow as tf

from cbst_tf.errors import CbstError
from cbst_tf.io import temp_tag

KEY_ENCODED = "image/encoded"
KEY_FORMAT = "image/format"
KEY_HEIGHT = "image/height"
KEY_WIDTH = "image/width"
KEY_LABEL = "image/segmentation/class/encoded"
KEY_SOURCE_ID = "image/source_id"
# LRENT pseudo-labels only: the label step's stride-level float16 logits, one entry per test
# pass (raw little-endian bytes) and their shapes (h, w, C per pass), from which finetuning
# rebuilds the soft labels of each crop (cbst_tf/selftrain/soft_crop.py).
KEY_LOGITS = "image/logits"
KEY_LOGITS_SHAPE = "image/logits/shape"

_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_JPEG_MAGIC = b"\xff\xd8\xff"


def sniff_format(data: bytes) -> str | None:
    """'png' or 'jpeg' from the file's magic bytes (extensions lie), else None."""
    if data.startswith(_PNG_MAGIC):
        return "png"
    if data.startswith(_JPEG_MAGIC):
        return "jpeg"
    return None


def encode_label_png(label: np.ndarray) -> bytes:
    """A (H, W) uint8 train-id map as a single-channel 8-bit PNG (lossless)."""
    label = np.asarray(label)
    if label.ndim != 2 or label.dtype != np.uint8:
        raise ValueError(f"label must be a 2-D uint8 array, got {label.dtype} {label.shape}")
    ok, buf = cv2.imencode(".png", label)
    if not ok:
        raise ValueError("cv2 could not encode the label PNG")
    return buf.tobytes()


def _bytes(value: bytes) -> tf.train.Feature:
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))


def _int(value: int) -> tf.train.Feature:
    return tf.train.Feature(int64_list=tf.train.Int64List(value=[int(value)]))


def make_example(
    encoded: bytes,
    image_format: str,
    height: int,
    width: int,
    source_id: str,
    label: np.ndarray | bytes | None = None,
    logits: list[np.ndarray] | None = None,
) -> tf.train.Example:
    """Build one example; ``label`` is a (H, W) uint8 train-id array, PNG bytes or None;
    ``logits`` (LRENT pseudo-labels) the label step's float16 (h, w, C) stride logits per pass."""
    if image_format not in ("png", "jpeg"):
        raise ValueError(f"image format must be 'png' or 'jpeg', got {image_format!r}")
    feature = {
        KEY_ENCODED: _bytes(encoded),
        KEY_FORMAT: _bytes(image_format.encode()),
        KEY_HEIGHT: _int(height),
        KEY_WIDTH: _int(width),
        KEY_SOURCE_ID: _bytes(source_id.encode("utf-8")),
    }
    if label is not None:
        if not isinstance(label, bytes):
            label = np.asarray(label)
            if label.shape != (height, width):
                raise ValueError(f"{source_id}: label shape {label.shape} != image ({height}, {width})")
            label = encode_label_png(label)
        feature[KEY_LABEL] = _bytes(label)
    if logits:
        arrays = [np.ascontiguousarray(x, dtype="<f2") for x in logits]
        if any(a.ndim != 3 for a in arrays):
            raise ValueError(f"{source_id}: logits must be (h, w, C) arrays, got {[a.shape for a in arrays]}")
        feature[KEY_LOGITS] = tf.train.Feature(bytes_list=tf.train.BytesList(value=[a.tobytes() for a in arrays]))
        feature[KEY_LOGITS_SHAPE] = tf.train.Feature(
            int64_list=tf.train.Int64List(value=[int(v) for a in arrays for v in a.shape]))
    return tf.train.Example(features=tf.train.Features(feature=feature))


_FEATURES = {
    KEY_ENCODED: tf.io.FixedLenFeature([], tf.string),
    KEY_FORMAT: tf.io.FixedLenFeature([], tf.string, default_value="png"),
    KEY_HEIGHT: tf.io.FixedLenFeature([], tf.int64),
    KEY_WIDTH: tf.io.FixedLenFeature([], tf.int64),
    KEY_LABEL: tf.io.FixedLenFeature([], tf.string, default_value=""),
    KEY_SOURCE_ID: tf.io.FixedLenFeature([], tf.string, default_value=""),
}


def parse_example(serialized: tf.Tensor) -> dict[str, tf.Tensor]:
    """Parse one serialized example (graph-safe) into raw tensors.

    Returns ``encoded, format, height, width, label`` ('' when unlabelled) and ``source_id``.
    """
    f = tf.io.parse_single_example(serialized, _FEATURES)
    return {
        "encoded": f[KEY_ENCODED],
        "format": f[KEY_FORMAT],
        "height": f[KEY_HEIGHT],
        "width": f[KEY_WIDTH],
        "label": f[KEY_LABEL],
        "source_id": f[KEY_SOURCE_ID],
    }


def parse_logits(serialized: tf.Tensor, num_passes: int) -> list[tf.Tensor]:
    """The ``num_passes`` float16 (h, w, C) stride-logit tensors of an LRENT pseudo-label record
    (graph-safe; a record without them fails the parse, naming the feature)."""
    f = tf.io.parse_single_example(serialized, {
        KEY_LOGITS: tf.io.FixedLenFeature([num_passes], tf.string),
        KEY_LOGITS_SHAPE: tf.io.FixedLenFeature([3 * num_passes], tf.int64)})
    shapes = tf.reshape(tf.cast(f[KEY_LOGITS_SHAPE], tf.int32), [num_passes, 3])
    return [tf.reshape(tf.io.decode_raw(f[KEY_LOGITS][i], tf.float16, little_endian=True), shapes[i])
            for i in range(num_passes)]


def parse_source_id(serialized: tf.Tensor) -> tf.Tensor:
    """Only the source id (cheap: used to filter records before shuffling)."""
    return tf.io.parse_single_example(serialized, {KEY_SOURCE_ID: _FEATURES[KEY_SOURCE_ID]})[KEY_SOURCE_ID]


def shard_name(index: int, count: int, prefix: str = "data") -> str:
    return f"{prefix}-{index:05d}-of-{count:05d}.tfrecord"


class ShardWriter:
    """Write ``num_items`` serialized examples into ``num_shards`` contiguous shards.

    Item ``i`` goes to shard ``i * num_shards // num_items``, so reading the shards in order
    gives the items back in order. Each shard is written under a hidden temporary name and
    renamed when it is complete; :meth:`abort` (or leaving the ``with`` block by an
    exception) deletes the shard in progress. Items must arrive in increasing index order.
    """

    def __init__(self, directory: str | Path, num_shards: int, num_items: int, prefix: str = "data"):
        if num_items < 1 or num_shards < 1:
            raise CbstError(f"{directory}: need at least one item and one shard, got {num_items}, {num_shards}")
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.num_items = num_items
        self.num_shards = min(num_shards, num_items)
        self.names = [shard_name(s, self.num_shards, prefix) for s in range(self.num_shards)]
        self.counts = [0] * self.num_shards
        self._shard = -1
        self._last = -1
        self._writer: tf.io.TFRecordWriter | None = None
        self._tmp: Path | None = None

    def shard_of(self, index: int) -> int:
        return index * self.num_shards // self.num_items

    def _finish_shard(self) -> None:
        if self._writer is None:
            return
        self._writer.close()
        self._writer = None
        os.replace(self._tmp, self.directory / self.names[self._shard])
        self._tmp = None

    def _open_until(self, shard: int) -> None:
        # Shards whose items were all skipped still exist (empty), so the names are stable.
        while self._shard < shard:
            self._finish_shard()
            self._shard += 1
            self._tmp = self.directory / f".{self.names[self._shard]}.tmp-{temp_tag()}"
            self._writer = tf.io.TFRecordWriter(str(self._tmp))

    def write(self, index: int, serialized: bytes) -> None:
        if not self._last < index < self.num_items:
            raise ValueError(f"item index {index} out of order (last {self._last}, of {self.num_items})")
        self._last = index
        shard = self.shard_of(index)
        self._open_until(shard)
        self._writer.write(serialized)
        self.counts[shard] += 1

    def close(self) -> list[str]:
        """Finish every shard (including trailing empty ones); return the shard file names."""
        self._open_until(self.num_shards - 1)
        self._finish_shard()
        return list(self.names)

    def abort(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        if self._tmp is not None and self._tmp.exists():
            self._tmp.unlink()
        self._tmp = None

    def __enter__(self) -> ShardWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()
