"""NTHU cross-city (Chen et al. 2017): one folder per city.

``--split`` is ``<City>/train`` (``<City>/Images/Train/*.jpg``, unlabelled) or
``<City>/test`` (``<City>/Images/Test/*.png`` with ``<City>/Labels/Test/<name>_eval.png``,
Cityscapes label ids of the 13 NTHU classes; every other id is ignored).
"""

from __future__ import annotations

from pathlib import Path

from cbst_tf.bounds import quote
from cbst_tf.data.formats.base import Item, Layout, images_in, item, require_dir
from cbst_tf.data.labelio import map_ids, read_index_png
from cbst_tf.errors import ConfigError
from cbst_tf.labels import NTHU_LUT


def list_items(root: Path, split: str | None) -> list[Item]:
    city, _, part = (split or "").partition("/")
    if not city or part.lower() not in ("train", "test"):
        raise ConfigError(f"--split {quote(split)}: the nthu layout needs <City>/train or <City>/test, e.g. Rome/test")
    base = require_dir(root / city, "NTHU city")
    if part.lower() == "train":
        images = require_dir(base / "Images" / "Train", "NTHU train image")
        return [item(root, image, None) for image in images_in(images)]
    images = require_dir(base / "Images" / "Test", "NTHU test image")
    labels = base / "Labels" / "Test"
    return [item(root, image, labels / f"{image.stem}_eval.png") for image in images_in(images)]


def read_train_ids(path: Path):
    return map_ids(read_index_png(path), NTHU_LUT)


LAYOUT = Layout("nthu", "nthu13", list_items, read_train_ids, read_index_png, NTHU_LUT, 33)
