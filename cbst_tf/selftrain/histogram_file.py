"""The label step's confidence-histogram files: one ``.npz`` per target slice (phase ``stats``).

The histogram itself (:class:`cbst_tf.algos.ConfidenceHistogram`) is pure numpy; this
module only moves it to and from disk: compressed (the counts are mostly zeros) and
written atomically, so a killed slice leaves no half-written file behind.
"""

from __future__ import annotations

import math
import zipfile
from pathlib import Path

import numpy as np

from cbst_tf.algos.histogram import BINS, ConfidenceHistogram
from cbst_tf.errors import CbstError
from cbst_tf.io import atomic_path

_FORMAT_VERSION = 1


def save_histogram(hist: ConfidenceHistogram, path: str | Path, key: str = "") -> Path:
    """Save ``hist`` to ``path`` atomically, with the ``key`` of what it was made from; returns the path."""
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.savez_compressed(
            fh, version=np.int64(_FORMAT_VERSION), counts=hist.counts, predicted=hist.predicted_pixels,
            num_images=np.int64(hist.num_images),
            scale=np.float64(np.nan if hist.scale is None else hist.scale), key=np.array(key))
    return Path(path)


def histogram_key(path: str | Path) -> str | None:
    """The key a histogram file was saved with ("" for files of older versions, None if unreadable)."""
    try:
        with np.load(path, allow_pickle=False) as data:
            return str(data["key"]) if "key" in data.files else ""
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
        return None


def load_histogram(path: str | Path) -> ConfidenceHistogram:
    """The histogram saved by :func:`save_histogram`; a one-line error when missing or corrupt."""
    path = Path(path)
    if not path.is_file():
        raise CbstError(f"{path}: confidence histogram not found")
    try:
        with np.load(path, allow_pickle=False) as data:
            version = int(data["version"])
            counts = np.asarray(data["counts"])
            predicted = np.asarray(data["predicted"])
            num_images = int(data["num_images"])
            scale = float(data["scale"])
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
        raise CbstError(f"{path}: corrupt confidence histogram ({type(exc).__name__})") from None
    if (version != _FORMAT_VERSION or counts.ndim != 2 or counts.shape[1] != BINS
            or counts.dtype != np.int64 or predicted.shape != (counts.shape[0],)
            or counts.min(initial=0) < 0 or num_images < 0):
        raise CbstError(f"{path}: corrupt confidence histogram (unexpected contents)")
    out = ConfidenceHistogram(counts.shape[0])
    out.add_counts(counts, predicted.astype(np.int64), num_images)
    out.scale = None if math.isnan(scale) else scale
    return out
