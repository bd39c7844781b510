"""Cityscapes: ``leftImg8bit/<split>/<city>/*_leftImg8bit.png`` with
``gtFine/<split>/<city>/*_gtFine_labelIds.png`` (label ids -> 19 train ids).

A split without a ``gtFine/<split>`` folder (e.g. ``test``, or ``train`` downloaded
without annotations to be used as the unlabelled target) converts unlabelled.
"""

from __future__ import annotations

from pathlib import Path

from cbst_tf.data.formats.base import Item, Layout, images_in, item, require_dir
from cbst_tf.data.labelio import map_ids, read_index_png
from cbst_tf.errors import ConfigError
from cbst_tf.labels import CITYSCAPES_LUT

_IMG = "_leftImg8bit"
_LBL = "_gtFine_labelIds.png"


def list_items(root: Path, split: str | None) -> list[Item]:
    if not split:
        raise ConfigError("--split: the cityscapes layout needs a split (train, val or test)")
    images = require_dir(root / "leftImg8bit" / split, "Cityscapes image")
    labels = root / "gtFine" / split
    labelled = labels.is_dir()
    items = []
    for city in sorted(p for p in images.iterdir() if p.is_dir()):
        for image in images_in(city, (".png",), _IMG):
            label = labels / city.name / (image.stem[: -len(_IMG)] + _LBL) if labelled else None
            items.append(item(root, image, label))
    return items


def read_train_ids(path: Path):
    return map_ids(read_index_png(path), CITYSCAPES_LUT)


LAYOUT = Layout("cityscapes", "cityscapes19", list_items, read_train_ids, read_index_png, CITYSCAPES_LUT, 33)
