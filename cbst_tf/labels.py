"""Label spaces: Cityscapes label ids, the 19 train ids, and each dataset's mapping.

Every dataset is stored in the 19 Cityscapes *train id* positions (255 = ignore), so a
single 19-class model serves GTA5, SYNTHIA (16 of them), NTHU (13) and BDD alike.
"""

from __future__ import annotations

import numpy as np

IGNORE = 255

#: The 19 Cityscapes evaluation classes, indexed by train id.
CLASS_NAMES: tuple[str, ...] = (
    "road", "sidewalk", "building", "wall", "fence", "pole", "traffic light",
    "traffic sign", "vegetation", "terrain", "sky", "person", "rider", "car",
    "truck", "bus", "train", "motorcycle", "bicycle",
)
NUM_CLASSES = len(CLASS_NAMES)

#: Cityscapes label id -> train id for the 19 evaluated classes (all others ignored).
LABEL_ID_TO_TRAIN_ID: dict[int, int] = {
    7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9,
    23: 10, 24: 11, 25: 12, 26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18,
}
TRAIN_ID_TO_LABEL_ID: dict[int, int] = {v: k for k, v in LABEL_ID_TO_TRAIN_ID.items()}

#: Cityscapes colours (RGB) by train id.
PALETTE: np.ndarray = np.array(
    [
        (128, 64, 128), (244, 35, 232), (70, 70, 70), (102, 102, 156), (190, 153, 153),
        (153, 153, 153), (250, 170, 30), (220, 220, 0), (107, 142, 35), (152, 251, 152),
        (70, 130, 180), (220, 20, 60), (255, 0, 0), (0, 0, 142), (0, 0, 70),
        (0, 60, 100), (0, 80, 100), (0, 0, 230), (119, 11, 32),
    ],
    dtype=np.uint8,
)

#: SYNTHIA-RAND-CITYSCAPES class id (red channel of GT/LABELS) -> Cityscapes train id.
#: The paper's 16 classes; terrain, truck and train do not exist in SYNTHIA.
SYNTHIA_ID_TO_TRAIN_ID: dict[int, int] = {
    3: 0, 4: 1, 2: 2, 21: 3, 5: 4, 7: 5, 15: 6, 9: 7, 6: 8, 1: 10,
    10: 11, 17: 12, 8: 13, 19: 15, 12: 17, 11: 18,
}
SYNTHIA16_TRAIN_IDS: tuple[int, ...] = (0, 1, 2, 3, 4, 5, 6, 7, 8, 10, 11, 12, 13, 15, 17, 18)
#: The 13-class protocol (mIoU*) drops wall, fence and pole.
SYNTHIA13_TRAIN_IDS: tuple[int, ...] = tuple(c for c in SYNTHIA16_TRAIN_IDS if c not in (3, 4, 5))

#: NTHU cross-city: label ids of the 13 evaluated classes in `<name>_eval.png`.
NTHU_LABEL_IDS: tuple[int, ...] = (7, 8, 11, 19, 20, 21, 23, 24, 25, 26, 28, 32, 33)
NTHU13_TRAIN_IDS: tuple[int, ...] = tuple(LABEL_ID_TO_TRAIN_ID[i] for i in NTHU_LABEL_IDS)
#: How a 19-class prediction is read under the NTHU protocol (paper section 5.1):
#: pole, fence, wall -> building; truck -> car; terrain -> vegetation.
NTHU_PREDICTION_MERGE: dict[int, int] = {5: 2, 4: 2, 3: 2, 14: 13, 9: 8}


def lookup_table(mapping: dict[int, int], size: int = 256) -> np.ndarray:
    """A uint8 lookup table sending every key of ``mapping`` to its value, the rest to 255."""
    lut = np.full(size, IGNORE, dtype=np.uint8)
    for src, dst in mapping.items():
        lut[src] = dst
    return lut


CITYSCAPES_LUT = lookup_table(LABEL_ID_TO_TRAIN_ID)
NTHU_LUT = lookup_table({i: LABEL_ID_TO_TRAIN_ID[i] for i in NTHU_LABEL_IDS})
SYNTHIA_LUT = lookup_table(SYNTHIA_ID_TO_TRAIN_ID, size=65536)


def colorize(train_ids: np.ndarray) -> np.ndarray:
    """Train-id map (H, W) -> RGB image with the Cityscapes palette (ignore = black)."""
    lut = np.zeros((256, 3), dtype=np.uint8)
    lut[: len(PALETTE)] = PALETTE
    return lut[np.asarray(train_ids, dtype=np.uint8)]
