"""The paper's evaluation protocols (``eval.protocol``): which classes count, how labels
and predictions are read, and how the paper's tables name the columns.

All datasets are stored in the 19 Cityscapes train-id positions (``cbst_tf.labels``), and a
single 19-class confusion matrix is accumulated; a protocol decides

* ``label_classes``: ground-truth classes that are evaluated at all (others become 255);
* ``predictable``: the classes the arg-max may choose (a 16-class SYNTHIA model cannot
  predict terrain, truck or train; restricting the arg-max of a 19-class model to the 16
  trained classes makes it read exactly like one);
* ``merge``: train id -> train id applied to predictions AND ground truth (NTHU rule);
* ``means``: the mean columns of the paper's table, each over its classes; ``primary``
  names the one reported as ``miou``.

Protocols:

* ``cityscapes19`` - GTA5 -> Cityscapes (Table 3) and GTA5 -> BDD (Table 4): all 19 classes.
* ``synthia16`` / ``synthia13`` - SYNTHIA -> Cityscapes (Table 2, section 5.2): the 16 shared
  classes; mIoU over 16 and mIoU* over 13 (without wall, fence, pole) from the same
  predictions. ``synthia16`` reports mIoU, ``synthia13`` mIoU*.
* ``nthu13`` - Cityscapes -> NTHU (Table 1, section 5.1): the 13 NTHU classes; "pole, fence,
  wall as buildings, truck as car and terrain as vegetation". The real NTHU labels only hold
  the 13 classes, so merging the ground truth as well is a no-op there; it makes 19-class
  labels (e.g. the synthetic cities) follow the same rule.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from cbst_tf.errors import CbstError
from cbst_tf.labels import (
    CLASS_NAMES,
    IGNORE,
    NTHU13_TRAIN_IDS,
    NTHU_PREDICTION_MERGE,
    NUM_CLASSES,
    SYNTHIA13_TRAIN_IDS,
    SYNTHIA16_TRAIN_IDS,
)

#: Column headings of the paper's tables (Tables 1-3), by train id.
ABBREVIATIONS: dict[int, str] = {
    0: "Road", 1: "SW", 2: "Build", 3: "Wall", 4: "Fence", 5: "Pole", 6: "TL", 7: "TS",
    8: "Veg.", 9: "Terrain", 10: "Sky", 11: "PR", 12: "Rider", 13: "Car", 14: "Truck",
    15: "Bus", 16: "Train", 17: "Motor", 18: "Bike",
}


@dataclass(frozen=True)
class Protocol:
    """How one of the paper's tables evaluates a 19-class segmentation."""

    name: str
    table: str  # where the paper uses it
    columns: tuple[int, ...]  # train ids in the paper's column order
    headings: tuple[str, ...]  # the paper's abbreviations for ``columns``
    means: tuple[tuple[str, tuple[int, ...]], ...]  # (heading, classes) per mean column
    primary: str  # heading of the mean reported as ``miou``
    label_classes: tuple[int, ...]
    predictable: tuple[int, ...]
    merge: dict[int, int] = field(default_factory=dict)
    num_classes: int = NUM_CLASSES

    @property
    def classes(self) -> tuple[int, ...]:
        """The train ids averaged into the protocol's mIoU."""
        return dict(self.means)[self.primary]

    @property
    def class_names(self) -> tuple[str, ...]:
        """Full class names of ``classes`` (the keys of ``metrics.json``'s ``iou``)."""
        return tuple(CLASS_NAMES[c] for c in self.classes)

    def merge_table(self) -> np.ndarray:
        """uint8 lookup: train id -> merged train id (identity without a merge; 255 kept)."""
        lut = np.arange(256, dtype=np.uint8)
        for src, dst in self.merge.items():
            lut[src] = dst
        return lut

    def remap_label(self, label: np.ndarray) -> np.ndarray:
        """Ground truth as this protocol evaluates it: merged, non-evaluated classes -> 255."""
        keep = np.full(256, IGNORE, dtype=np.uint8)
        keep[list(self.label_classes)] = list(self.label_classes)
        return keep[self.merge_table()[np.asarray(label, dtype=np.uint8)]]

    def remap_prediction(self, pred: np.ndarray) -> np.ndarray:
        """A 19-class arg-max map as this protocol reads it (the merge; 255 stays 255)."""
        return self.merge_table()[np.asarray(pred, dtype=np.uint8)]

    def predict(self, probs: np.ndarray) -> np.ndarray:
        """Class map (uint8) from (..., C) scores: arg-max over ``predictable``, then the merge."""
        probs = np.asarray(probs)
        if probs.shape[-1] != self.num_classes:
            raise CbstError(f"eval.protocol {self.name}: model has {probs.shape[-1]} classes, "
                            f"the protocol needs {self.num_classes}")
        allowed = np.asarray(self.predictable)
        if len(allowed) == self.num_classes:
            pred = np.argmax(probs, axis=-1)
        else:
            pred = allowed[np.argmax(probs[..., allowed], axis=-1)]
        return self.remap_prediction(pred.astype(np.uint8))


def _protocol(name: str, table: str, columns: tuple[int, ...], means, primary: str,
              label_classes: tuple[int, ...], predictable: tuple[int, ...],
              merge: dict[int, int] | None = None, starred: tuple[int, ...] = ()) -> Protocol:
    headings = tuple(ABBREVIATIONS[c] + ("*" if c in starred else "") for c in columns)
    return Protocol(name, table, columns, headings, tuple(means), primary, label_classes,
                    predictable, dict(merge or {}))


ALL19 = tuple(range(NUM_CLASSES))
_SYNTHIA_MEANS = (("mIoU", SYNTHIA16_TRAIN_IDS), ("mIoU*", SYNTHIA13_TRAIN_IDS))

PROTOCOLS: dict[str, Protocol] = {
    "cityscapes19": _protocol("cityscapes19", "Table 3 (GTA5 -> Cityscapes)", ALL19,
                              (("mIoU", ALL19),), "mIoU", ALL19, ALL19),
    "synthia16": _protocol("synthia16", "Table 2 (SYNTHIA -> Cityscapes), mIoU", SYNTHIA16_TRAIN_IDS,
                           _SYNTHIA_MEANS, "mIoU", SYNTHIA16_TRAIN_IDS, SYNTHIA16_TRAIN_IDS,
                           starred=(3, 4, 5)),
    "synthia13": _protocol("synthia13", "Table 2 (SYNTHIA -> Cityscapes), mIoU*", SYNTHIA16_TRAIN_IDS,
                           _SYNTHIA_MEANS, "mIoU*", SYNTHIA16_TRAIN_IDS, SYNTHIA16_TRAIN_IDS,
                           starred=(3, 4, 5)),
    "nthu13": _protocol("nthu13", "Table 1 (Cityscapes -> NTHU)", NTHU13_TRAIN_IDS,
                        (("Mean", NTHU13_TRAIN_IDS),), "Mean", NTHU13_TRAIN_IDS, ALL19,
                        merge=NTHU_PREDICTION_MERGE),
}


def get_protocol(name: str) -> Protocol:
    """The protocol called ``name`` (``eval.protocol``); one-line error otherwise."""
    try:
        return PROTOCOLS[name]
    except KeyError:
        raise CbstError(f"eval.protocol: unknown protocol {name!r} "
                        f"(choose from {', '.join(PROTOCOLS)})") from None
