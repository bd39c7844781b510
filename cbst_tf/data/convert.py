"""``cbst-tf data convert``: a dataset in its original layout -> sharded TFRecords + manifest.

The image bytes are stored exactly as on disk (decoded once only to validate them and read
their size); labels are mapped to the 19 Cityscapes train ids (255 = ignore) by the
layout (``cbst_tf.data.formats``). The whole output directory is built under a temporary
name and renamed into place at the end, so a failed or killed conversion leaves no
partial dataset; temporary directories of killed conversions are removed by the next one.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from cbst_tf.bounds import check_paths
from cbst_tf.data.formats import Item, Layout, get_layout
from cbst_tf.data.formats.base import check_split
from cbst_tf.data.tfrecord import sniff_format
from cbst_tf.data.writer import DatasetWriter
from cbst_tf.errors import CbstError, ConfigError
from cbst_tf.faults import tf_message
from cbst_tf.io import atomic_dir, remove_stale_temps, require_regular
from cbst_tf.outdir import check_out, seal_dir
from cbst_tf.progress import log, track

T = TypeVar("T")
R = TypeVar("R")


def _decode_image(path: Path) -> tuple[bytes, str, int, int]:
    """Read an image file; validate it with the decoder the reader will use; return its size."""
    import tensorflow as tf

    require_regular(path, "image")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise CbstError(f"{path}: cannot read image ({exc.strerror})") from None
    fmt = sniff_format(data)
    if fmt is None:
        raise CbstError(f"{path}: not a PNG or JPEG image")
    try:
        shape = tf.io.decode_image(data, channels=3, expand_animations=False).shape
    except (tf.errors.InvalidArgumentError, tf.errors.UnknownError, tf.errors.ResourceExhaustedError) as exc:
        raise CbstError(f"{path}: corrupt image ({tf_message(exc) or 'decode failed'})") from None
    return data, fmt, int(shape[0]), int(shape[1])


def _load(layout: Layout, item: Item) -> tuple[bytes, str, int, int, np.ndarray | None, tuple[int, int]]:
    """Image bytes, format, size, train ids and (pixels, largest id) of unknown raw label ids."""
    data, fmt, h, w = _decode_image(item.image)
    label, unknown = None, (0, 0)
    if item.label is not None:
        require_regular(item.label, "label file")
    if item.label is not None and layout.read_raw_ids is not None:
        raw = layout.read_raw_ids(item.label)
        bad = (raw > layout.max_id) & (raw != 255)
        if bad.any():
            unknown = (int(bad.sum()), int(raw[bad].max()))
        label = layout.lut[raw]
    elif item.label is not None:
        label = layout.read_train_ids(item.label)
    if label is not None and label.shape != (h, w):
        raise CbstError(f"{item.image} is {h}x{w} but its label {item.label} is "
                        f"{label.shape[0]}x{label.shape[1]}")
    return data, fmt, h, w, label, unknown


def _ordered_map(fn: Callable[[T], R], items: Iterable[T], workers: int) -> Iterator[R | CbstError]:
    """``fn`` over ``items`` in a thread pool, in order, at most ``2 * workers`` in flight
    (so decoded Cityscapes-size images cannot pile up in memory); CbstErrors are returned."""

    def safe(x: T) -> R | CbstError:
        try:
            return fn(x)
        except CbstError as exc:
            return exc

    with ThreadPoolExecutor(max_workers=workers) as pool:
        pending: deque = deque()
        for x in items:
            pending.append(pool.submit(safe, x))
            if len(pending) >= 2 * workers:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


def convert_dataset(fmt: str, root: str | Path, out: str | Path, split: str | None = None, shards: int = 4,
                    skip_bad: bool = False, workers: int = 2, command: str = "", strict: bool = False) -> dict[str, Any]:
    """Convert the dataset at ``root`` (layout ``fmt``) into ``out``; return the manifest.

    ``split``: Cityscapes/BDD ``train|val|test``; NTHU ``<City>/train|<City>/test``; GTA5,
    SYNTHIA and folder have none. A corrupt image or label raises a one-line CbstError naming
    the file, unless ``skip_bad``, which skips it and lists it in the manifest. Label ids the
    format does not define become "ignore" (255); they are counted and reported in one warning,
    or are an error naming the first file with ``strict``.
    """
    layout = get_layout(fmt)
    if shards < 1:
        raise ConfigError(f"--shards {shards}: must be at least 1")
    if not 1 <= workers <= 64:
        raise ConfigError(f"--workers {workers}: must be between 1 and 64")
    root, out = Path(root), Path(out)
    check_paths([("--root", root), ("--out", out)])
    check_split(split)
    if not root.is_dir():
        raise CbstError(f"{root}: dataset root not found")
    check_out(out, "data convert", {"--root": root})
    items = layout.list_items(root, split)
    if not items:
        raise CbstError(f"{root}: no images found for format {fmt}" + (f" split {split}" if split else ""))
    # A killed conversion's temporary directory beside --out (the parent is the user's: not walked).
    for stale in remove_stale_temps(out.parent, max_age_s=3600.0, prefix=f".{out.name}.", recursive=False):
        log(f"removed {stale} left by a killed conversion")
    unknown: list[tuple[Path, int, int]] = []
    with atomic_dir(out) as tmp:
        with DatasetWriter(tmp, num_items=len(items), shards=shards, name=out.name, fmt=fmt,
                           label_space=layout.label_space, command=command) as writer:
            results = _ordered_map(lambda it: _load(layout, it), items, workers)
            for index, result in enumerate(track(results, total=len(items), description=f"convert {fmt}")):
                if isinstance(result, CbstError):
                    if not skip_bad:
                        raise result
                    log(f"skipped: {result}")
                    writer.skip(items[index].source_id, str(result))
                    continue
                n_bad, top = result[5]
                if n_bad:
                    if strict:
                        raise CbstError(f"{items[index].label}: {n_bad} pixels with label id {top} (or other ids "
                                        f"above {layout.max_id}) that the {fmt} format does not define (--strict)")
                    unknown.append((items[index].label, n_bad, top))
                writer.add(index, *result[:4], source_id=items[index].source_id, label=result[4])
            if len(writer.skipped) == len(items):
                raise CbstError(f"{root}: all {len(items)} images are corrupt (see --skip-bad)")
            manifest = writer.close()
        seal_dir(tmp, "data convert")  # proves a later conversion may replace it
    if unknown:
        first, n_bad, top = unknown[0]
        log(f"warning: {len(unknown)} label file(s) hold {sum(u[1] for u in unknown)} pixels with ids the {fmt} "
            f"format does not define (above {layout.max_id}), converted as ignore (255); first: {first} "
            f"({n_bad} pixels, id {top}); use --strict to make this an error")
    return manifest
