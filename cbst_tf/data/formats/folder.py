"""A user's own target domain: every ``.png/.jpg/.jpeg`` image under the root (recursively),
optionally with ``labels/<same relative path and stem>.png`` train-id PNGs (values above 18
other than 255 are ignored). If a ``labels/`` folder exists, every image needs a label.
"""

from __future__ import annotations

from pathlib import Path

from cbst_tf.data.formats.base import IMAGE_EXTENSIONS, Item, Layout, item, no_split
from cbst_tf.data.formats.bdd import TRAIN_ID_LUT, read_train_ids
from cbst_tf.data.labelio import read_index_png
from cbst_tf.errors import CbstError
from cbst_tf.labels import NUM_CLASSES


def list_items(root: Path, split: str | None) -> list[Item]:
    no_split("folder", split)
    if not root.is_dir():
        raise CbstError(f"{root}: image folder not found")
    labels = root / "labels"
    labelled = labels.is_dir()
    images = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS
                    and labels not in p.parents and not any(part.startswith(".") for part in p.relative_to(root).parts))
    out = []
    for image in images:
        rel = image.relative_to(root)
        out.append(item(root, image, (labels / rel).with_suffix(".png") if labelled else None))
    return out


LAYOUT = Layout("folder", "cityscapes19", list_items, read_train_ids, read_index_png, TRAIN_ID_LUT, NUM_CLASSES - 1)
