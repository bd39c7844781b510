"""``manifest.json``: what a converted TFRecord directory holds.

Keys (docs/ARCHITECTURE.md): ``name, format, label_space, class_names, num_classes,
num_examples, labelled, shards, class_pixel_counts, image_sizes, skipped, command``; plus
``shard_counts`` (examples per shard). Readers trust nothing else about a directory.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from cbst_tf.errors import CbstError
from cbst_tf.io import read_json

MANIFEST = "manifest.json"
REQUIRED_KEYS = (
    "name", "format", "label_space", "class_names", "num_classes", "num_examples", "labelled",
    "shards", "class_pixel_counts", "image_sizes", "skipped", "command",
)


class ManifestStats:
    """Running per-class pixel counts and the image-size histogram of a dataset."""

    def __init__(self, num_classes: int):
        self.num_classes = num_classes
        self.pixels = np.zeros(256, dtype=np.int64)
        self.sizes: Counter[str] = Counter()
        self.labelled = 0
        self.count = 0

    def add(self, height: int, width: int, label: np.ndarray | None) -> None:
        self.count += 1
        self.sizes[f"{height}x{width}"] += 1
        if label is not None:
            self.labelled += 1
            self.pixels += np.bincount(np.asarray(label, np.uint8).ravel(), minlength=256)

    def manifest(self, *, name: str, fmt: str, label_space: str, class_names: list[str] | tuple[str, ...],
                 shards: list[str], shard_counts: list[int], skipped: list[dict], command: str) -> dict[str, Any]:
        return {
            "name": name,
            "format": fmt,
            "label_space": label_space,
            "class_names": list(class_names),
            "num_classes": self.num_classes,
            "num_examples": self.count,
            # A dataset is labelled only if every example is: readers then never meet a missing label.
            "labelled": self.count > 0 and self.labelled == self.count,
            "shards": list(shards),
            "shard_counts": list(shard_counts),
            "class_pixel_counts": [int(v) for v in self.pixels[: self.num_classes]],
            "ignored_pixels": int(self.pixels[255]),
            "image_sizes": dict(sorted(self.sizes.items())),
            "skipped": list(skipped),
            "command": command,
        }


def read_manifest(directory: str | Path) -> dict[str, Any]:
    """Load and check ``<directory>/manifest.json`` (one-line CbstError naming the file)."""
    path = Path(directory) / MANIFEST
    manifest = read_json(path)
    if not isinstance(manifest, dict):
        raise CbstError(f"{path}: expected a JSON object")
    missing = [k for k in REQUIRED_KEYS if k not in manifest]
    if missing:
        raise CbstError(f"{path}: missing key(s) {', '.join(missing)}")
    if not isinstance(manifest["shards"], list) or not manifest["shards"]:
        raise CbstError(f"{path}: key 'shards' must be a non-empty list")
    for shard in manifest["shards"]:
        if not (Path(directory) / shard).is_file():
            raise CbstError(f"{Path(directory) / shard}: shard listed in {path} is missing")
    return manifest
