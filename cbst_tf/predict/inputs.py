"""What ``cbst-tf predict`` reads: one image, a folder of images, or a converted TFRecord split.

Every image becomes an :class:`ImageRef` whose ``rel`` (the path relative to the input,
POSIX, with its extension; the ``source_id`` of a TFRecord example) names its outputs.
Images are decoded by the decoder ``evaluate`` uses (``tf.io.decode_image`` with 3
channels: grayscale is replicated, alpha dropped, 16-bit scaled to 8), so a folder and its
converted split give the same pixels. :func:`ordered_map` decodes ahead in a thread with a
bounded number of images in flight, so memory does not grow with the number of images.
"""

from __future__ import annotations

import io
import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TypeVar

import numpy as np

from cbst_tf.data.formats.base import IMAGE_EXTENSIONS
from cbst_tf.errors import CbstError, ConfigError

T = TypeVar("T")
R = TypeVar("R")

#: Larger images are refused before decoding (a 100000 x 100000 PNG of a few kB would need 30 GB).
MAX_PIXELS = 8192 * 8192


@dataclass(frozen=True)
class ImageRef:
    """One input image: ``rel`` names its outputs, ``where`` names it in messages."""

    rel: str
    where: str
    path: Path | None = None  # a file on disk, or
    data: bytes | None = None  # the bytes stored in a TFRecord example

    def read(self) -> bytes:
        if self.data is not None:
            return self.data
        try:
            return Path(self.path).read_bytes()
        except OSError as exc:
            raise CbstError(f"{self.where}: cannot read image ({exc.strerror})") from None


@dataclass
class InputSet:
    """The images of this shard (an iterator, read lazily) and how many there are."""

    refs: Iterable[ImageRef]
    total: int
    kind: str  # "file" | "folder" | "tfrecord"


def safe_rel(rel: str, where: str) -> str:
    """``rel`` if it is a relative path that stays inside the output directory."""
    p = PurePosixPath(rel)
    if not rel or p.is_absolute() or any(part in ("", ".", "..") for part in p.parts) or "\\" in rel:
        raise CbstError(f"{where}: image name {rel!r} is not a relative path inside the dataset")
    return p.as_posix()


def list_images(root: Path) -> list[Path]:
    """PNG/JPEG files under ``root`` (recursive, sorted; hidden files and folders skipped)."""
    found = []
    for parent, dirs, files in os.walk(root):  # symlinked folders are not followed (no loops)
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        found.extend(Path(parent) / f for f in files
                     if not f.startswith(".") and Path(f).suffix.lower() in IMAGE_EXTENSIONS)
    return sorted(found)


def check_unique(seen: dict[str, str], ref: ImageRef) -> None:
    """Two inputs that would write the same files (``a/x.png`` and ``a/x.jpg``) are an error."""
    from cbst_tf.predict.outputs import output_rel

    other = seen.setdefault(output_rel(ref.rel, "trainids"), ref.where)
    if other != ref.where:
        raise CbstError(f"{ref.where}: its outputs would overwrite those of {other} (same folder and stem); "
                        "rename one of them")


def open_input(path: str | Path, shard: tuple[int, int] = (0, 1)) -> InputSet:
    """The images of ``--input`` for slice ``shard = (i, n)`` (images i, i+n, ...)."""
    path = Path(path)
    i, n = shard
    if path.is_dir() and (path / "manifest.json").is_file():
        return _tfrecord_input(path, shard)
    if path.is_dir():
        files = list_images(path)
        if not files:
            raise CbstError(f"{path}: no PNG or JPEG images found (nor a converted dataset's manifest.json)")
        refs = [ImageRef(f.relative_to(path).as_posix(), str(f), path=f) for f in files]
        seen: dict[str, str] = {}
        for ref in refs:  # all of them, before slicing: every shard refuses the same inputs
            check_unique(seen, ref)
        return InputSet(refs[i::n], len(range(i, len(refs), n)), "folder")
    if path.is_file():
        if path.suffix.lower() not in IMAGE_EXTENSIONS:
            raise ConfigError(f"--input {path}: not a .png, .jpg or .jpeg image, a folder of images or a "
                              "converted dataset directory")
        refs = [ImageRef(path.name, str(path), path=path)] if i == 0 else []
        return InputSet(refs, len(refs), "file")
    raise CbstError(f"{path}: input not found")


def _tfrecord_input(directory: Path, shard: tuple[int, int]) -> InputSet:
    from cbst_tf.config import DataConfig
    from cbst_tf.data.reader import eval_dataset, read_manifest

    total = int(read_manifest(directory)["num_examples"])
    count = len(range(shard[0], total, shard[1]))

    def refs() -> Iterator[ImageRef]:
        import tensorflow as tf

        data_cfg = DataConfig(parallel_calls=1, prefetch=2)
        try:
            for ex in eval_dataset(directory, data_cfg, shard=shard, decode=False).as_numpy_iterator():
                rel = ex["source_id"].decode("utf-8", "replace")
                yield ImageRef(rel, f"{directory} ({rel})", data=bytes(ex["encoded"]))
        except tf.errors.DataLossError as exc:
            from cbst_tf.faults import translate

            raise translate(exc, [directory]) from None

    return InputSet(refs(), count, "tfrecord")


def decode(ref: ImageRef) -> np.ndarray:
    """RGB uint8 ``(H, W, 3)`` of one image, or a one-line :class:`CbstError` naming it."""
    import tensorflow as tf

    from cbst_tf.data.tfrecord import sniff_format

    data = ref.read()
    if sniff_format(data) is None:
        raise CbstError(f"{ref.where}: not a PNG or JPEG image")
    size = _header_size(data)
    if size is None or size[0] * size[1] > MAX_PIXELS:
        shown = f"{size[1]}x{size[0]}" if size else "more than 178 million"
        raise CbstError(f"{ref.where}: image of {shown} pixels is larger than the "
                        f"{MAX_PIXELS // 2**20} megapixels predict accepts")
    try:
        image = tf.io.decode_image(data, channels=3, expand_animations=False)
    except (tf.errors.InvalidArgumentError, tf.errors.UnknownError) as exc:
        first = (exc.message or "decode failed").strip().splitlines()[0]
        raise CbstError(f"{ref.where}: corrupt image ({first})") from None
    return image.numpy()


def _header_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from the image header alone; None for a decompression bomb that PIL
    refuses to open; (0, 0) when PIL cannot read the header (the decoder then says why)."""
    import warnings

    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as img:
                return img.size
    except Image.DecompressionBombError:
        return None
    except Exception:  # noqa: BLE001 - the decoder then reports what is wrong
        return 0, 0


def ordered_map(fn: Callable[[T], R], items: Iterable[T], depth: int = 2) -> Iterator[tuple[T, R | CbstError]]:
    """``(item, fn(item))`` in order, computed one thread ahead with at most ``depth`` results
    waiting (so decoded images cannot pile up); a :class:`CbstError` is returned, not raised."""

    def safe(x: T) -> R | CbstError:
        try:
            return fn(x)
        except CbstError as exc:
            return exc

    with ThreadPoolExecutor(max_workers=1) as pool:
        pending: deque = deque()
        for x in items:
            pending.append((x, pool.submit(safe, x)))
            if len(pending) >= depth:
                item, future = pending.popleft()
                yield item, future.result()
        while pending:
            item, future = pending.popleft()
            yield item, future.result()
