"""``--save-predictions``: train-id PNGs and colourised panels of the first N predictions.

For each image ``<source_id stem>_trainIds.png`` (single-channel train ids, 255 = ignore,
as scored by the protocol) and ``<stem>_panel.png`` (image | ground truth | prediction in
the Cityscapes palette, ignore = black). The caller writes into a directory that is
renamed into place only when the evaluation finishes (:func:`cbst_tf.io.atomic_dir`).
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath

import cv2
import numpy as np

from cbst_tf.errors import CbstError
from cbst_tf.labels import colorize


def _text(value) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def panel(image: np.ndarray, label: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """RGB uint8 side by side: image (resized to the label size if needed), ground truth, prediction."""
    h, w = label.shape
    img = np.clip(np.asarray(image, dtype=np.float32), 0, 255).round().astype(np.uint8)
    if img.shape[:2] != (h, w):
        img = cv2.resize(img, (w, h), interpolation=cv2.INTER_LINEAR)
    return np.concatenate([img, colorize(label), colorize(pred)], axis=1)


class PredictionSaver:
    """Callable ``(example, label, pred)`` hook for ``evaluate_model``; keeps the first ``limit``
    (all when ``limit < 0``)."""

    def __init__(self, directory: str | Path, limit: int):
        self.directory = Path(directory)
        self.limit = int(limit)
        self.saved: list[str] = []
        self._stems: set[str] = set()

    def _stem(self, example: dict) -> str:
        stem = PurePosixPath(_text(example.get("source_id", b""))).stem or f"{len(self.saved):06d}"
        base, k = stem, 1
        while stem in self._stems:  # two folders may hold the same file name
            stem, k = f"{base}_{k}", k + 1
        self._stems.add(stem)
        return stem

    def __call__(self, example: dict, label: np.ndarray, pred: np.ndarray) -> None:
        if 0 <= self.limit <= len(self.saved):
            return
        stem = self._stem(example)
        outputs = {
            f"{stem}_trainIds.png": np.asarray(pred, dtype=np.uint8),
            f"{stem}_panel.png": cv2.cvtColor(panel(example["image"], label, pred), cv2.COLOR_RGB2BGR),
        }
        for name, array in outputs.items():
            if not cv2.imwrite(str(self.directory / name), array):
                raise CbstError(f"{self.directory / name}: could not write the PNG")
        self.saved.append(stem)
