"""GTA5 (Richter et al.): ``images/*.png`` with ``labels/*.png``.

The labels are PALETTISED PNGs whose indices are Cityscapes label ids (the palette only
colours them), mapped to the 19 train ids. GTA5 has no splits: everything is converted.
"""

from __future__ import annotations

from pathlib import Path

from cbst_tf.data.formats.base import Item, Layout, images_in, item, no_split, require_dir
from cbst_tf.data.labelio import map_ids, read_index_png
from cbst_tf.labels import CITYSCAPES_LUT


def list_items(root: Path, split: str | None) -> list[Item]:
    no_split("gta5", split)
    images = require_dir(root / "images", "GTA5 image")
    labels = require_dir(root / "labels", "GTA5 label")
    return [item(root, image, labels / (image.stem + ".png")) for image in images_in(images, (".png",))]


def read_train_ids(path: Path):
    return map_ids(read_index_png(path), CITYSCAPES_LUT)


LAYOUT = Layout("gta5", "cityscapes19", list_items, read_train_ids, read_index_png, CITYSCAPES_LUT, 33)
