"""Tiny datasets written in the EXACT on-disk layouts and encodings of the real ones.

Every writer returns ``{source_id: expected train ids (H, W) uint8, or None if unlabelled}``
where ``source_id`` is the image path relative to ``root``. The images are random RGB so a
channel swap or a re-encode shows up; label files hold *raw* ids (Cityscapes label ids,
SYNTHIA ids in the red channel of a 16-bit PNG, palettised GTA5 indices, ...) including
ids outside the evaluated classes, so the expected train ids exercise every lookup table.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from cbst_tf.labels import CITYSCAPES_LUT, NTHU_LUT, SYNTHIA_LUT

Expected = dict[str, "np.ndarray | None"]


def _rng(seed: int) -> np.random.Generator:
    return np.random.default_rng(seed)


def _write_rgb(path: Path, rgb: np.ndarray, quality: int = 95) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    params = [cv2.IMWRITE_JPEG_QUALITY, quality] if path.suffix.lower() in (".jpg", ".jpeg") else []
    assert cv2.imwrite(str(path), np.ascontiguousarray(rgb[..., ::-1]), params)


def _write_gray(path: Path, values: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), values.astype(np.uint8))


def _image(rng: np.random.Generator, size: tuple[int, int]) -> np.ndarray:
    return rng.integers(0, 256, (*size, 3), dtype=np.uint8)


def _label_ids(rng: np.random.Generator, size: tuple[int, int], values: np.ndarray) -> np.ndarray:
    return rng.choice(values, size=size).astype(np.uint8)


def cityscapes_palette() -> list[int]:
    """Flat 768-entry palette colouring each Cityscapes label id like GTA5's label files."""
    from cityscapesscripts.helpers.labels import labels

    pal = np.zeros((256, 3), np.uint8)
    for lab in labels:
        if 0 <= lab.id < 256:
            pal[lab.id] = lab.color
    return pal.ravel().tolist()


def write_cityscapes(root: str | Path, split: str = "val", n: int = 3, size: tuple[int, int] = (12, 16),
                     seed: int = 0, labelled: bool = True, cities: tuple[str, ...] = ("aachen", "bremen")) -> Expected:
    root, rng, out = Path(root), _rng(seed), {}
    for i in range(n):
        city = cities[i % len(cities)]
        stem = f"{city}_{i:06d}_000019"
        img = root / "leftImg8bit" / split / city / f"{stem}_leftImg8bit.png"
        _write_rgb(img, _image(rng, size))
        expected = None
        if labelled:
            ids = _label_ids(rng, size, np.arange(34))
            _write_gray(root / "gtFine" / split / city / f"{stem}_gtFine_labelIds.png", ids)
            expected = CITYSCAPES_LUT[ids]
        out[img.relative_to(root).as_posix()] = expected
    return out


def write_gta5(root: str | Path, n: int = 3, size: tuple[int, int] = (12, 16), seed: int = 0) -> Expected:
    root, rng, out, palette = Path(root), _rng(seed), {}, cityscapes_palette()
    (root / "labels").mkdir(parents=True, exist_ok=True)
    for i in range(n):
        img = root / "images" / f"{i + 1:05d}.png"
        _write_rgb(img, _image(rng, size))
        ids = _label_ids(rng, size, np.arange(34))
        pim = Image.new("P", (size[1], size[0]))
        pim.frombytes(ids.tobytes())
        pim.putpalette(palette)
        pim.save(root / "labels" / img.name)
        out[img.relative_to(root).as_posix()] = CITYSCAPES_LUT[ids]
    return out


def write_synthia(root: str | Path, n: int = 3, size: tuple[int, int] = (12, 16), seed: int = 0) -> Expected:
    root, rng, out = Path(root), _rng(seed), {}
    (root / "GT" / "LABELS").mkdir(parents=True, exist_ok=True)
    for i in range(n):
        img = root / "RGB" / f"{i:07d}.png"
        _write_rgb(img, _image(rng, size))
        cls = rng.integers(0, 23, size).astype(np.uint16)
        inst = rng.integers(0, 3000, size).astype(np.uint16)
        bgr = np.stack([np.zeros_like(cls), inst, cls], axis=-1)  # red (last in BGR) = class id
        assert cv2.imwrite(str(root / "GT" / "LABELS" / img.name), bgr)
        out[img.relative_to(root).as_posix()] = SYNTHIA_LUT[cls]
    return out


def write_nthu(root: str | Path, city: str = "Rome", n_train: int = 2, n_test: int = 2,
               size: tuple[int, int] = (12, 16), seed: int = 0) -> Expected:
    root, rng, out = Path(root), _rng(seed), {}
    for i in range(n_train):
        img = root / city / "Images" / "Train" / f"pic_{i:03d}.jpg"
        _write_rgb(img, _image(rng, size))
        out[img.relative_to(root).as_posix()] = None
    for i in range(n_test):
        img = root / city / "Images" / "Test" / f"pic_{i:03d}.png"
        _write_rgb(img, _image(rng, size))
        ids = _label_ids(rng, size, np.arange(34))
        _write_gray(root / city / "Labels" / "Test" / f"pic_{i:03d}_eval.png", ids)
        out[img.relative_to(root).as_posix()] = NTHU_LUT[ids]
    return out


def _train_ids_with_junk(rng: np.random.Generator, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    raw = _label_ids(rng, size, np.array(list(range(19)) + [19, 25, 254, 255]))
    return raw, np.where(raw > 18, 255, raw).astype(np.uint8)


def write_bdd(root: str | Path, split: str = "val", n: int = 3, size: tuple[int, int] = (12, 16),
              seed: int = 0, labelled: bool = True) -> Expected:
    root, rng, out = Path(root), _rng(seed), {}
    for i in range(n):
        img = root / "images" / "10k" / split / f"7d{i:06x}-a0b1c2d3.jpg"
        _write_rgb(img, _image(rng, size))
        expected = None
        if labelled:
            raw, expected = _train_ids_with_junk(rng, size)
            _write_gray(root / "labels" / "sem_seg" / "masks" / split / (img.stem + ".png"), raw)
        out[img.relative_to(root).as_posix()] = expected
    return out


def write_folder(root: str | Path, n: int = 3, size: tuple[int, int] = (12, 16), seed: int = 0,
                 labelled: bool = False) -> Expected:
    """Mixed PNG/JPEG images, one in a sub-folder; optional ``labels/`` train-id PNGs."""
    root, rng, out = Path(root), _rng(seed), {}
    for i in range(n):
        rel = Path("sub" if i == n - 1 else ".") / f"img{i}.{'jpg' if i % 2 else 'png'}"
        _write_rgb(root / rel, _image(rng, size))
        expected = None
        if labelled:
            raw, expected = _train_ids_with_junk(rng, size)
            _write_gray((root / "labels" / rel).with_suffix(".png"), raw)
        out[(root / rel).relative_to(root).as_posix()] = expected
    return out


def truncate(path: str | Path, keep: float = 0.5) -> Path:
    """Corrupt a file the way an interrupted download does: keep only its first part."""
    path = Path(path)
    data = path.read_bytes()
    path.write_bytes(data[: max(8, int(len(data) * keep))])
    return path
