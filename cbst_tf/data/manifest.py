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

from cbst_tf.bounds import quote
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


def _int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_types(manifest: dict[str, Any], path: Path) -> None:
    """Types of the keys and the counts that must agree (a hand-edited manifest is caught here)."""
    def bad(key: str, expected: str) -> CbstError:
        return CbstError(f"{path}: key '{key}' must be {expected}, got {quote(manifest[key])}")

    for key in ("name", "format", "label_space", "command"):
        if not isinstance(manifest[key], str):
            raise bad(key, "a string")
    n_classes, n = manifest["num_classes"], manifest["num_examples"]
    if not _int(n_classes) or not 2 <= n_classes <= 254:
        raise bad("num_classes", "an integer in [2, 254]")
    if not _int(n) or n < 0:
        raise bad("num_examples", "a non-negative integer")
    if not isinstance(manifest["labelled"], bool):
        raise bad("labelled", "true or false")
    if not all(isinstance(s, str) and s and Path(s).name == s and s not in (".", "..") for s in manifest["shards"]):
        raise bad("shards", "a list of file names inside the directory")
    names, counts = manifest["class_names"], manifest["class_pixel_counts"]
    if not isinstance(names, list) or len(names) != n_classes or not all(isinstance(c, str) for c in names):
        raise bad("class_names", f"a list of num_classes = {n_classes} names")
    if not isinstance(counts, list) or len(counts) != n_classes or not all(_int(c) and c >= 0 for c in counts):
        raise bad("class_pixel_counts", f"a list of num_classes = {n_classes} non-negative integers")
    sizes = manifest["image_sizes"]
    if not isinstance(sizes, dict) or not all(_int(c) for c in sizes.values()):
        raise bad("image_sizes", 'a mapping {"HxW": count}')
    if sizes and sum(sizes.values()) != n:
        raise CbstError(f"{path}: num_examples = {n} but image_sizes counts {sum(sizes.values())} images")
    shard_counts = manifest.get("shard_counts")
    if shard_counts is not None:
        if (not isinstance(shard_counts, list) or len(shard_counts) != len(manifest["shards"])
                or not all(_int(c) for c in shard_counts)):
            raise bad("shard_counts", "one integer per shard")
        if sum(shard_counts) != n:
            raise CbstError(f"{path}: num_examples = {n} but the shards hold {sum(shard_counts)} examples "
                            "(shard_counts)")
    if not isinstance(manifest["skipped"], list):
        raise bad("skipped", "a list")


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
    _check_types(manifest, path)
    for shard in manifest["shards"]:
        if not (Path(directory) / shard).is_file():
            raise CbstError(f"{Path(directory) / shard}: shard listed in {path} is missing")
    return manifest


def dataset_digest(directory: str | Path) -> str:
    """What a converted dataset holds, for keying results made from it ("" when it has no
    manifest): its ``manifest.json`` and the names and sizes of its shards."""
    import hashlib
    import os

    from cbst_tf.io import file_digest

    path = Path(directory) / MANIFEST
    manifest = file_digest(path)
    if not manifest:
        return ""
    h = hashlib.sha256(manifest.encode())
    try:
        shards = read_json(path).get("shards", [])
    except CbstError:
        shards = []
    for shard in shards if isinstance(shards, list) else []:
        try:
            h.update(f"{shard} {os.stat(Path(directory) / str(shard)).st_size}\n".encode())
        except (OSError, ValueError):
            h.update(f"{shard} missing\n".encode())
    return h.hexdigest()


def check_training_data(directory: str | Path, num_classes: int, key: str) -> dict[str, Any]:
    """The manifest of a directory that a training step learns from: labelled, with the
    configured class count (a mismatch would otherwise surface as a TF index error mid-run)."""
    manifest = read_manifest(directory)
    path = Path(directory) / MANIFEST
    if not manifest["labelled"]:
        raise CbstError(f"{path}: {key} is unlabelled (labelled: false) and cannot be trained on; "
                        "convert it with its labels")
    check_class_count(manifest, path, num_classes)
    return manifest


def check_class_count(manifest: dict[str, Any], path: Path, num_classes: int) -> None:
    """Labels of a class id >= ``data.num_classes`` would crash the loss/metrics mid-run."""
    counts = manifest["class_pixel_counts"]
    present = [c for c, n in enumerate(counts) if n > 0 and c >= num_classes]
    if present:
        c = present[-1]
        name = str(manifest["class_names"][c])[:60]
        raise CbstError(f"{path}: labels of class {c} ({name}) but data.num_classes = {num_classes} "
                        f"(the data has {manifest['num_classes']} classes: set data.num_classes="
                        f"{manifest['num_classes']})")
