"""SYNTHIA-RAND-CITYSCAPES: ``RGB/*.png`` with ``GT/LABELS/*.png``.

Labels are 16-bit 3-channel PNGs with the class id in the RED channel (the green one
holds instance ids), mapped to train ids with ``SYNTHIA_LUT`` (the paper's 16 classes).
"""

from __future__ import annotations

from pathlib import Path

from cbst_tf.data.formats.base import Item, Layout, images_in, item, no_split, require_dir
from cbst_tf.data.labelio import map_ids, read_synthia_png
from cbst_tf.labels import SYNTHIA_LUT


def list_items(root: Path, split: str | None) -> list[Item]:
    no_split("synthia", split)
    images = require_dir(root / "RGB", "SYNTHIA RGB")
    labels = require_dir(root / "GT" / "LABELS", "SYNTHIA GT/LABELS")
    return [item(root, image, labels / (image.stem + ".png")) for image in images_in(images, (".png",))]


def read_train_ids(path: Path):
    return map_ids(read_synthia_png(path), SYNTHIA_LUT)


LAYOUT = Layout("synthia", "synthia16", list_items, read_train_ids, read_synthia_png, SYNTHIA_LUT, 22)
