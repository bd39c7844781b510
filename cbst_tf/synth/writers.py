"""The real on-disk layouts the data converters read: GTA5, Cityscapes and NTHU.

* GTA5: ``images/00001.png`` + ``labels/00001.png``, labels PALETTISED (mode "P") with
  Cityscapes *label ids* as indices and the Cityscapes colours as palette;
* Cityscapes: ``leftImg8bit/<split>/<city>/<city>_000000_000123_leftImg8bit.png`` +
  ``gtFine/<split>/<city>/<city>_000000_000123_gtFine_labelIds.png`` (uint8 label ids;
  the ego-vehicle bonnet is id 1, which the evaluation ignores like Cityscapes does);
* NTHU: ``<City>/Images/Train/pic_0001.jpg`` (unlabelled), ``<City>/Images/Test/pic_001.png``
  + ``<City>/Labels/Test/pic_001_eval.png`` (label ids of the 13 NTHU classes, others 0).

Encoders return bytes; :func:`write` puts them under a directory that the caller builds
atomically (``cbst_tf.io.atomic_dir``), so no partial dataset ever appears.
"""

from __future__ import annotations

import io
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from cbst_tf.errors import CbstError
from cbst_tf.labels import NTHU_LABEL_IDS, PALETTE, TRAIN_ID_TO_LABEL_ID

EGO_VEHICLE_ID = 1  # Cityscapes label id of the ego vehicle (ignored in evaluation)
#: Real Cityscapes city names the synthetic target images are filed under (round-robin).
CITYSCAPES_TRAIN_CITIES = ("aachen", "bremen", "hamburg", "zurich")
CITYSCAPES_VAL_CITIES = ("frankfurt", "lindau", "munster")


def _train_to_label_lut() -> np.ndarray:
    lut = np.zeros(256, np.uint8)
    for train_id, label_id in TRAIN_ID_TO_LABEL_ID.items():
        lut[train_id] = label_id
    lut[255] = EGO_VEHICLE_ID
    return lut


LABEL_ID_LUT = _train_to_label_lut()
NTHU_ID_LUT = np.where(np.isin(LABEL_ID_LUT, NTHU_LABEL_IDS), LABEL_ID_LUT, 0).astype(np.uint8)


def _palette() -> list[int]:
    pal = np.zeros((256, 3), np.uint8)
    for train_id, label_id in TRAIN_ID_TO_LABEL_ID.items():
        pal[label_id] = PALETTE[train_id]
    return pal.ravel().tolist()


GTA5_PALETTE = _palette()


def label_ids(train_ids: np.ndarray, nthu: bool = False) -> np.ndarray:
    """Train ids (255 = ego vehicle) -> uint8 Cityscapes label ids (NTHU: its 13 or 0)."""
    return (NTHU_ID_LUT if nthu else LABEL_ID_LUT)[train_ids]


def _encode(ext: str, image: np.ndarray, params: list[int] | None = None) -> bytes:
    ok, buf = cv2.imencode(ext, image, params or [])
    if not ok:
        raise CbstError(f"cv2.imencode({ext!r}): could not encode a {image.shape} {image.dtype} image")
    return buf.tobytes()


# Noisy photographs gain nothing from LZ matching: Huffman-only deflate with libpng's fast
# filters is much faster than the default and the files are smaller (README, "Performance").
_PNG_PHOTO = [cv2.IMWRITE_PNG_COMPRESSION, 1, cv2.IMWRITE_PNG_STRATEGY, cv2.IMWRITE_PNG_STRATEGY_HUFFMAN_ONLY,
              cv2.IMWRITE_PNG_FILTER, cv2.IMWRITE_PNG_FAST_FILTERS]


def png_rgb(rgb: np.ndarray) -> bytes:
    return _encode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), _PNG_PHOTO)


def jpg_rgb(rgb: np.ndarray, quality: int = 92) -> bytes:
    return _encode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])


def png_gray(ids: np.ndarray) -> bytes:
    return _encode(".png", ids)


def png_palette(ids: np.ndarray) -> bytes:
    """A mode "P" PNG whose indices are ``ids`` (GTA5 label files)."""
    im = Image.fromarray(np.ascontiguousarray(ids, dtype=np.uint8))
    im.putpalette(GTA5_PALETTE)  # turns the "L" image into "P" with the same indices
    buf = io.BytesIO()
    im.save(buf, format="PNG", compress_level=1)  # flat label maps compress well even at 1
    return buf.getvalue()


def write(root: Path, rel: str, data: bytes) -> None:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def gta5_files(index: int, rgb: np.ndarray, train_ids: np.ndarray) -> dict[str, bytes]:
    name = f"{index + 1:05d}.png"
    return {f"images/{name}": png_rgb(rgb), f"labels/{name}": png_palette(label_ids(train_ids))}


def cityscapes_files(split: str, index: int, rgb: np.ndarray, train_ids: np.ndarray) -> dict[str, bytes]:
    cities = CITYSCAPES_TRAIN_CITIES if split == "train" else CITYSCAPES_VAL_CITIES
    city = cities[index % len(cities)]
    stem = f"{city}_000000_{index:06d}"
    return {f"leftImg8bit/{split}/{city}/{stem}_leftImg8bit.png": png_rgb(rgb),
            f"gtFine/{split}/{city}/{stem}_gtFine_labelIds.png": png_gray(label_ids(train_ids))}


def nthu_files(city: str, split: str, index: int, rgb: np.ndarray, train_ids: np.ndarray) -> dict[str, bytes]:
    if split == "train":
        return {f"{city}/Images/Train/pic_{index + 1:04d}.jpg": jpg_rgb(rgb)}
    stem = f"pic_{index + 1:03d}"
    return {f"{city}/Images/Test/{stem}.png": png_rgb(rgb),
            f"{city}/Labels/Test/{stem}_eval.png": png_gray(label_ids(train_ids, nthu=True))}
