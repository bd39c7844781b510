"""The files ``cbst-tf predict`` writes for one image, one folder per ``--format``.

``<out>/<format>/<relative folder>/<name>_<suffix>.png``, where ``<name>`` is the input's
stem without a trailing ``_leftImg8bit`` (Cityscapes: ``berlin_000000_000019_labelIds.png``,
found by the benchmark server and ``cityscapesscripts`` through its ``city_seq_frame``
prefix). All at the image's original size, all PNG:

* ``trainids``: uint8 train ids (0-18);
* ``labelids``: uint8 Cityscapes label ids (7 road ... 33 bicycle), what the server scores;
* ``color``: the Cityscapes palette;
* ``overlay``: the palette blended 50/50 over the image;
* ``confidence``: the probability of the chosen class, times 255, rounded.

Each file is written atomically (temporary name, then rename), so a file under its final
name is complete and a rerun skips it.
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath

import cv2
import numpy as np

from cbst_tf.errors import CbstError, ConfigError
from cbst_tf.io import atomic_write_bytes
from cbst_tf.labels import colorize
from cbst_tf.predict.classes import label_ids

FORMATS = ("trainids", "labelids", "color", "overlay", "confidence")
SUFFIX = {"trainids": "trainIds", "labelids": "labelIds", "color": "color", "overlay": "overlay",
          "confidence": "confidence"}
DEFAULT_FORMATS = ("labelids", "color")
_CITYSCAPES_SUFFIX = "_leftImg8bit"


def parse_formats(text: str | None) -> tuple[str, ...]:
    """``"labelids,color"`` -> ``("labelids", "color")`` (known names, no repeats)."""
    if text is None:
        return DEFAULT_FORMATS
    names = [t.strip().lower() for t in text.split(",") if t.strip()]
    bad = [n for n in names if n not in FORMATS]
    if not names or bad:
        raise ConfigError(f"--format {text!r}: expected a comma-separated list of {', '.join(FORMATS)}")
    return tuple(dict.fromkeys(names))


def output_rel(rel: str, fmt: str) -> str:
    """The output path (relative to ``--out``) of input ``rel`` in format ``fmt``."""
    p = PurePosixPath(rel)
    stem = p.stem
    if stem.endswith(_CITYSCAPES_SUFFIX) and len(stem) > len(_CITYSCAPES_SUFFIX):
        stem = stem[: -len(_CITYSCAPES_SUFFIX)]
    return (PurePosixPath(fmt) / p.parent / f"{stem}_{SUFFIX[fmt]}.png").as_posix()


def missing(out: Path, rel: str, formats: tuple[str, ...]) -> tuple[str, ...]:
    """The formats whose file for ``rel`` does not exist yet."""
    return tuple(f for f in formats if not (out / output_rel(rel, f)).is_file())


def render(fmt: str, image: np.ndarray, train_ids: np.ndarray, confidence: np.ndarray | None) -> np.ndarray:
    """The array ``cv2.imencode`` writes for ``fmt`` (colour images in OpenCV's BGR order)."""
    if fmt == "trainids":
        return train_ids
    if fmt == "labelids":
        return label_ids(train_ids)
    if fmt == "confidence":
        return np.clip(np.rint(confidence * 255.0), 0, 255).astype(np.uint8)
    color = colorize(train_ids)
    if fmt == "overlay":
        color = cv2.addWeighted(np.asarray(image, np.uint8), 0.5, color, 0.5, 0.0)
    return np.ascontiguousarray(color[..., ::-1])


def write_outputs(out: Path, rel: str, formats: tuple[str, ...], image: np.ndarray, train_ids: np.ndarray,
                  confidence: np.ndarray | None) -> None:
    """Write the files of ``formats`` for one image, each atomically."""
    for fmt in formats:
        path = out / output_rel(rel, fmt)
        ok, buf = cv2.imencode(".png", render(fmt, image, train_ids, confidence))
        if not ok:
            raise CbstError(f"{path}: could not encode the PNG")
        atomic_write_bytes(path, buf.tobytes())
