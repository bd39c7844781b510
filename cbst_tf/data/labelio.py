"""Reading label files in their original encodings (no TensorFlow, no Keras).

Two encodings occur: 8-bit single-channel PNGs, greyscale or *palettised* (GTA5 labels
are palettised: the pixel values are indices, i.e. Cityscapes label ids, while the
palette only colours them - OpenCV would return the colours, so Pillow reads the
indices), and SYNTHIA's 16-bit 3-channel PNGs whose RED channel holds the class id
(Pillow cannot read these; OpenCV returns them as BGR, so red is the last channel).
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from cbst_tf.errors import CbstError
from cbst_tf.io import require_regular


def read_index_png(path: str | Path) -> np.ndarray:
    """The (H, W) uint8 values of a greyscale or palettised 8-bit label image."""
    require_regular(path, "label file")
    try:
        with Image.open(path) as img:
            img.load()
            mode = img.mode
            if mode not in ("L", "P"):
                raise CbstError(f"{path}: expected an 8-bit single-channel or palettised label PNG, got mode {mode}")
            arr = np.array(img, dtype=np.uint8)
    except CbstError:
        raise
    except FileNotFoundError:
        raise CbstError(f"{path}: label file not found") from None
    except Exception as exc:  # Pillow raises many types for corrupt files
        raise CbstError(f"{path}: corrupt label image ({type(exc).__name__}: {exc})") from None
    return arr


def read_synthia_png(path: str | Path) -> np.ndarray:
    """The (H, W) class ids (red channel) of a SYNTHIA GT/LABELS 16-bit 3-channel PNG."""
    path = Path(path)
    require_regular(path, "label file")
    data = np.frombuffer(path.read_bytes(), dtype=np.uint8)
    arr = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data.size else None
    if arr is None:
        raise CbstError(f"{path}: corrupt label image (OpenCV could not decode it)")
    if arr.ndim != 3 or arr.shape[2] < 3:
        raise CbstError(f"{path}: expected a 3-channel SYNTHIA label PNG, got shape {arr.shape}")
    return arr[..., 2]


def map_ids(values: np.ndarray, lut: np.ndarray) -> np.ndarray:
    """Apply a label-id -> train-id lookup table (unknown ids -> 255)."""
    return lut[values]
