"""What every dataset layout is made of: :class:`Item`, :class:`Layout` and file-listing helpers.

The layout modules (``cityscapes.py``, ``gta5.py``, ...) build on this module; the registry
in ``cbst_tf.data.formats`` imports them, so no layout module imports the package back.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cbst_tf.bounds import quote
from cbst_tf.errors import CbstError, ConfigError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg")


@dataclass(frozen=True)
class Item:
    """One image to convert; ``label`` is None for unlabelled images."""

    image: Path
    label: Path | None
    source_id: str  # image path relative to the dataset root


@dataclass(frozen=True)
class Layout:
    name: str
    label_space: str
    list_items: Callable[[Path, str | None], list[Item]]  # (root, split) -> items, sorted
    read_train_ids: Callable[[Path], np.ndarray]  # label file -> (H, W) uint8 train ids
    # Optional: the raw ids of a label file, their lookup table to train ids and the largest id
    # the format defines (255 is always "void"); larger ids are counted by the converter.
    read_raw_ids: Callable[[Path], np.ndarray] | None = None
    lut: np.ndarray | None = None
    max_id: int = 254


def item(root: Path, image: Path, label: Path | None) -> Item:
    return Item(image=image, label=label, source_id=image.relative_to(root).as_posix())


def images_in(directory: Path, extensions: tuple[str, ...] = IMAGE_EXTENSIONS, suffix: str = "") -> list[Path]:
    """Sorted image files directly in ``directory`` whose name ends with ``suffix + ext``."""
    return sorted(p for p in directory.iterdir()
                  if p.is_file() and p.suffix.lower() in extensions and p.stem.endswith(suffix))


def require_dir(path: Path, what: str) -> Path:
    if not path.is_dir():
        raise CbstError(f"{path}: {what} folder not found")
    return path


def check_split(split: str | None) -> None:
    """A split is a name inside the dataset root (``val``, ``Rome/train``), never a path: an
    absolute one or ``..`` would list files outside ``--root``."""
    if split in (None, ""):
        return
    parts = split.split("/")
    if len(split) > 255 or split.startswith("/") or "\\" in split or any(p in ("", ".", "..") for p in parts):
        raise ConfigError(f"--split {quote(split)}: expected a split name inside --root (e.g. train, val, test or "
                          "Rome/train), not a path")


def no_split(fmt: str, split: str | None) -> None:
    """Layouts without splits accept no --split (or 'all')."""
    if split not in (None, "", "all"):
        raise ConfigError(f"--split {quote(split)}: the {fmt} layout has no splits (omit --split or use 'all')")
