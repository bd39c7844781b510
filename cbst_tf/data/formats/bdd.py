"""BDD100K semantic segmentation: ``images/10k/<split>/*.jpg`` with
``labels/sem_seg/masks/<split>/*.png`` (already train ids; values above 18 other than
255 are ignored). A split without masks (``test``) converts unlabelled.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cbst_tf.data.formats.base import Item, Layout, images_in, item, require_dir
from cbst_tf.data.labelio import map_ids, read_index_png
from cbst_tf.errors import ConfigError
from cbst_tf.labels import NUM_CLASSES, lookup_table

#: Identity map of the 19 train ids (values above 18 other than 255 become ignore); shared with the folder format.
TRAIN_ID_LUT = lookup_table({i: i for i in range(NUM_CLASSES)})


def list_items(root: Path, split: str | None) -> list[Item]:
    if not split:
        raise ConfigError("--split: the bdd layout needs a split (train, val or test)")
    images = require_dir(root / "images" / "10k" / split, "BDD image")
    masks = root / "labels" / "sem_seg" / "masks" / split
    labelled = masks.is_dir()
    return [item(root, image, masks / (image.stem + ".png") if labelled else None) for image in images_in(images)]


def read_train_ids(path: Path) -> np.ndarray:
    return map_ids(read_index_png(path), TRAIN_ID_LUT)


LAYOUT = Layout("bdd", "cityscapes19", list_items, read_train_ids, read_index_png, TRAIN_ID_LUT, NUM_CLASSES - 1)
