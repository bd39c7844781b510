"""Write a whole TFRecord dataset directory: shards plus ``manifest.json``.

Used by the converters and by the pseudo-label step, so every dataset directory has the
same schema and manifest. Wrap it in :func:`cbst_tf.io.atomic_dir` so that a failed or
killed run leaves nothing under the final name.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from cbst_tf.data.manifest import MANIFEST, ManifestStats
from cbst_tf.data.tfrecord import ShardWriter, make_example
from cbst_tf.io import atomic_write_json
from cbst_tf.labels import CLASS_NAMES


class DatasetWriter:
    """Stream ``num_items`` examples (in index order; skipped indices allowed) into a directory."""

    def __init__(self, directory: str | Path, *, num_items: int, shards: int, name: str, fmt: str,
                 label_space: str = "cityscapes19", class_names: tuple[str, ...] = CLASS_NAMES,
                 command: str = ""):
        self.directory = Path(directory)
        self.shards = ShardWriter(self.directory, shards, num_items)
        self.stats = ManifestStats(len(class_names))
        self.meta = dict(name=name, fmt=fmt, label_space=label_space, class_names=class_names, command=command)
        self.skipped: list[dict] = []

    def add(self, index: int, encoded: bytes, image_format: str, height: int, width: int,
            source_id: str, label: np.ndarray | None = None) -> None:
        """Append item ``index``: image bytes as on disk, (H, W) uint8 train ids or None."""
        example = make_example(encoded, image_format, height, width, source_id, label)
        self.shards.write(index, example.SerializeToString())
        self.stats.add(height, width, label)

    def skip(self, source_id: str, reason: str) -> None:
        self.skipped.append({"source_id": source_id, "error": reason})

    def close(self) -> dict[str, Any]:
        """Finish the shards and write ``manifest.json`` last; return the manifest."""
        names = self.shards.close()
        manifest = self.stats.manifest(shards=names, shard_counts=self.shards.counts,
                                       skipped=self.skipped, **self.meta)
        atomic_write_json(self.directory / MANIFEST, manifest)
        return manifest

    def abort(self) -> None:
        self.shards.abort()

    def __enter__(self) -> DatasetWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self.abort()
