"""Records of a converted dataset whose image or label cannot be decoded.

``data convert`` decodes every image once, so a converted dataset starts out clean; bit rot,
a copy cut short inside a record, or a hand-made TFRecord can still hold an image TensorFlow
cannot decode (or whose header claims 60000x60000 pixels). Inside a tf.data pipeline that is an
``InvalidArgumentError`` naming neither the shard nor the image. :func:`bad_records` finds them:
first a cheap pass over the bytes (PNG signature, chunk CRCs and size, JPEG markers), then, if
that finds nothing, TensorFlow's own decoders on every record. Used by the fault handler
(:mod:`cbst_tf.faults`, to name the shard and ``source_id``) and by ``data.skip_bad`` (the
readers then leave the records out, counted in one warning).
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

from cbst_tf.bounds import quote
from cbst_tf.data.manifest import read_manifest

#: Largest image a record may claim (pixels): far above Cityscapes' 2 megapixels, far below
#: what a decoder would need gigabytes for.
MAX_PIXELS = 1 << 27
_PNG = b"\x89PNG\r\n\x1a\n"


@dataclass(frozen=True)
class BadRecord:
    """One record that cannot be decoded: its shard, ``image/source_id`` and why."""

    shard: Path
    source_id: str
    reason: str

    def describe(self) -> str:
        return f"{self.shard}: record {quote(self.source_id)}: {self.reason}"


def _png_problem(data: bytes, what: str) -> str | None:
    if not data.startswith(_PNG):
        return f"{what} is not a PNG (bad signature)"
    pos, first = len(_PNG), True
    while pos + 12 <= len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        end = pos + 12 + length
        if end > len(data):
            return f"{what} PNG is truncated ({kind.decode('latin-1')} chunk)"
        body = data[pos + 4:pos + 8 + length]
        if struct.unpack(">I", data[pos + 8 + length:end])[0] != zlib.crc32(body) & 0xFFFFFFFF:
            return f"{what} PNG is damaged (CRC mismatch in its {kind.decode('latin-1')} chunk)"
        if first:
            if kind != b"IHDR" or length < 8:
                return f"{what} PNG has no header"
            w, h = struct.unpack(">II", data[pos + 8:pos + 16])
            if w * h > MAX_PIXELS:
                return f"{what} PNG claims {h}x{w} pixels (at most {MAX_PIXELS})"
            first = False
        if kind == b"IEND":
            return None
        pos = end
    return f"{what} PNG is truncated (no IEND chunk)"


def _jpeg_problem(data: bytes, what: str) -> str | None:
    if not data.startswith(b"\xff\xd8"):
        return f"{what} is not a JPEG (no SOI marker)"
    if b"\xff\xd9" not in data[-16:]:
        return f"{what} JPEG is truncated (no EOI marker)"
    pos = 2
    while pos + 9 <= len(data) and data[pos] == 0xFF:
        marker, length = data[pos + 1], struct.unpack(">H", data[pos + 2:pos + 4])[0]
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            h, w = struct.unpack(">HH", data[pos + 5:pos + 9])
            if w * h > MAX_PIXELS:
                return f"{what} JPEG claims {h}x{w} pixels (at most {MAX_PIXELS})"
            return None
        pos += 2 + length
    return None


def _structure(example: dict) -> str | None:
    image = example["encoded"]
    problem = _png_problem(image, "image") if image[:4] == _PNG[:4] else _jpeg_problem(image, "image")
    if problem is None and example["label"]:
        problem = _png_problem(example["label"], "label")
    return problem


def _decodes(example: dict) -> str | None:
    import tensorflow as tf

    from cbst_tf.faults import tf_message

    try:
        tf.io.decode_image(example["encoded"], channels=3, expand_animations=False)
        if example["label"]:
            tf.io.decode_png(example["label"], channels=1)
    except (tf.errors.OpError, ValueError) as exc:
        return f"undecodable ({tf_message(exc)})"
    return None


def _examples(directory: Path):
    import tensorflow as tf

    from cbst_tf.data.tfrecord import parse_example

    for shard in read_manifest(directory)["shards"]:
        path = Path(directory) / shard
        for raw in tf.data.TFRecordDataset(str(path)):
            ex = parse_example(raw)
            yield path, {"encoded": ex["encoded"].numpy(), "label": ex["label"].numpy(),
                         "source_id": ex["source_id"].numpy().decode("utf-8", "replace")}


def bad_records(directory: str | Path, first_only: bool = False) -> list[BadRecord]:
    """Every record of ``directory`` whose image or label cannot be decoded (only the first one
    with ``first_only``): the cheap byte checks first, TensorFlow's decoders if they find nothing."""
    found: list[BadRecord] = []
    for check in (_structure, _decodes):
        seen = {(b.shard, b.source_id) for b in found}
        for shard, ex in _examples(Path(directory)):
            if (shard, ex["source_id"]) in seen:
                continue
            problem = check(ex)
            if problem:
                found.append(BadRecord(shard, ex["source_id"], problem))
                if first_only:
                    return found
    return found


_SKIPPED: dict[tuple[str, int], list[BadRecord]] = {}


def records_to_skip(directory: str | Path) -> list[BadRecord]:
    """``data.skip_bad``: the bad records of ``directory``, found once per process (this decodes
    every image of the dataset once) and reported in one warning."""
    from cbst_tf.progress import log

    manifest = Path(directory) / "manifest.json"
    key = (str(Path(directory).resolve()), manifest.stat().st_mtime_ns)
    if key not in _SKIPPED:
        bad = bad_records(directory)
        _SKIPPED[key] = bad
        if bad:
            log(f"warning: {directory}: skipping {len(bad)} record(s) that cannot be decoded (data.skip_bad); "
                f"first: {bad[0].describe()}")
    return _SKIPPED[key]
