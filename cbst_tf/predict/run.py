"""``cbst-tf predict``: segment new images with trained weights.

Reads one image, a folder (recursive) or a converted TFRecord split (:mod:`.inputs`),
predicts each image at its original size under the configured test protocol
(:func:`cbst_tf.inference.protocol_probs`, the function ``evaluate`` uses, read by
:class:`.classes.ClassReader` like ``evaluate``'s protocol) and writes the ``--format``
files (:mod:`.outputs`). Built for large inputs: one image decoded ahead in a thread and
at most two images' outputs being written behind (memory does not grow with the number of
images); atomic files, so a rerun skips the images whose files all exist; ``--shard i/n``
splits the images over machines like ``label``. ``--out`` is claimed with
:func:`cbst_tf.outdir.claim_marked_out`: new, empty, or an earlier ``predict`` output of the
same weights and protocol (the marker's ``key``); predict never deletes or overwrites a file.
"""

from __future__ import annotations

import hashlib
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from cbst_tf.config import Config
from cbst_tf.errors import CbstError
from cbst_tf.predict.classes import ClassReader
from cbst_tf.predict.inputs import ImageRef, InputSet, check_unique, decode, open_input, ordered_map, safe_rel
from cbst_tf.predict.outputs import DEFAULT_FORMATS, missing, write_outputs
from cbst_tf.progress import log, track

_SHOWN_SKIPS = 5


def file_digest(path: str | Path) -> str:
    """sha256 of a file (the weights' identity in the ``--out`` marker; ~1 s per 500 MB)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def prediction_key(cfg: Config, weights_digest: str) -> dict[str, Any]:
    """Everything that determines the predicted classes (a rerun into the same --out must match)."""
    return {"weights": weights_digest, "model.name": cfg.model.name, "model.width": cfg.model.width,
            "data.num_classes": cfg.data.num_classes, "data.image_mean": list(cfg.data.image_mean),
            "data.input_scale": cfg.data.input_scale, "eval.protocol": cfg.eval.protocol,
            "eval.scales": list(cfg.eval.scales), "eval.flip": cfg.eval.flip, "eval.upsample": cfg.eval.upsample,
            "eval.long_side": cfg.eval.long_side}


class Predictor:
    """A loaded model and how to read its outputs; :meth:`run` predicts a set of images."""

    def __init__(self, cfg: Config, model: Any):
        self.cfg = cfg
        self.model = model
        self.reader = ClassReader.of(cfg.data.num_classes, cfg.eval.protocol)

    def train_ids(self, image: np.ndarray, confidence: bool = True) -> tuple[np.ndarray, np.ndarray | None]:
        """Train ids and (if ``confidence``) confidence of one RGB image ``(H, W, 3)`` at its own size."""
        from cbst_tf.inference import protocol_probs

        e = self.cfg.eval
        probs = protocol_probs(self.model, np.asarray(image, np.float32), e.scales, e.flip, upsample=e.upsample,
                               long_side=e.long_side, input_scale=self.cfg.data.input_scale)
        return self.reader.train_ids(probs, confidence)

    def run(self, images: InputSet, out: Path, formats: tuple[str, ...] = DEFAULT_FORMATS,
            skip_bad: bool = False) -> dict[str, Any]:
        """Predict ``images`` into ``out``; returns the counts and the seconds it took."""
        out = Path(out)
        seen: dict[str, str] = {}

        def load(ref: ImageRef) -> tuple[tuple[str, ...], np.ndarray | None]:
            todo = missing(out, safe_rel(ref.rel, ref.where), formats)
            return todo, (decode(ref) if todo else None)

        stats: dict[str, Any] = {"images": images.total, "predicted": 0, "already_done": 0, "skipped": 0,
                                 "skipped_first": []}
        start = time.monotonic()
        with ThreadPoolExecutor(max_workers=1) as writer:
            pending: deque = deque()
            for ref, result in track(ordered_map(load, images.refs), total=images.total, description="predict"):
                if images.kind == "tfrecord":  # a folder's names were checked when it was listed
                    check_unique(seen, ref)
                if isinstance(result, CbstError):
                    if not skip_bad:
                        raise result
                    log(f"skipped: {result}")
                    stats["skipped"] += 1
                    if len(stats["skipped_first"]) < _SHOWN_SKIPS:
                        stats["skipped_first"].append(str(result))
                    continue
                todo, image = result
                if image is None:
                    stats["already_done"] += 1
                    continue
                ids, confidence = self.train_ids(image, "confidence" in todo)
                pending.append(writer.submit(write_outputs, out, ref.rel, todo, image, ids, confidence))
                while len(pending) > 2:
                    pending.popleft().result()
                stats["predicted"] += 1
            while pending:
                pending.popleft().result()
        stats["seconds"] = round(time.monotonic() - start, 3)
        return stats


def run_predict(cfg: Config, input: str | Path, out: str | Path, weights: str | Path | None = None,
                formats: tuple[str, ...] = DEFAULT_FORMATS, shard: tuple[int, int] = (0, 1), skip_bad: bool = False,
                command: str = "") -> dict[str, Any]:
    """``cbst-tf predict``: checks, claims ``out``, loads the model, predicts; returns the counts."""
    from cbst_tf import runtime
    from cbst_tf.evaluate.configured import load_model
    from cbst_tf.evaluate.run import latest_weights
    from cbst_tf.io import remove_stale_temps
    from cbst_tf.layout import require
    from cbst_tf.outdir import claim_marked_out

    weights = require(Path(weights), "weights file", "check --weights") if weights else latest_weights(cfg)
    ClassReader.of(cfg.data.num_classes, cfg.eval.protocol)  # a bad class count fails before any output
    images = open_input(input, shard)
    key = prediction_key(cfg, file_digest(weights))
    claim_marked_out(out, "predict", {"command": command, "key": key, "written": list(formats)},
                     inputs=(Path(input),), same=("key",))
    for stale in remove_stale_temps(out):
        log(f"removed {stale} left by a killed run")
    runtime.setup(cfg)
    predictor = Predictor(cfg, load_model(cfg, weights))
    log(f"predict: {weights} on {input} ({images.total} images"
        + (f", shard {shard[0]}/{shard[1]}" if shard[1] > 1 else "") + f") -> {out} ({', '.join(formats)})")
    stats = predictor.run(images, Path(out), formats, skip_bad)
    if stats["skipped"] and stats["skipped"] == stats["images"]:
        raise CbstError(f"{input}: all {stats['images']} images are unreadable (first: {stats['skipped_first'][0]})")
    n = stats["predicted"]
    log(f"predict: wrote {n} image{'' if n == 1 else 's'} to {out}"
        + (f"; {stats['already_done']} already done" if stats["already_done"] else "")
        + (f"; skipped {stats['skipped']} unreadable" if stats["skipped"] else ""))
    return {**stats, "weights": str(weights), "out": str(out), "formats": list(formats)}
