"""One inference pass per image: stride-level logits cached for the label step's two phases.

Phase 1 (thresholds) and phase 2 (pseudo-labels) need the same probabilities. Storing
full-resolution float32 probability maps, as the official code did, costs 160 MB per
Cityscapes image (official issues #2, #25). We cache the network's logits at its output
stride (1/8) in float16 instead - 1.2 MB per 1024x2048 image and scale - and BOTH phases
derive the probabilities from the cached float16 logits with the same function
(:func:`probs_from_logits`, ONE traced function: the same graph in both phases, so
the thresholds of phase 1 and the selection of phase 2 see bit-identical confidences -
two differently fused graphs may round differently in the last bit).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf

from cbst_tf.errors import CbstError
from cbst_tf.inference import inference_passes, scaled_size, traced_forward
from cbst_tf.io import atomic_path


class StrideLogits:
    """``image -> [float16 logits at the output stride, one tensor per test pass]`` for a
    model without its final upsampling (``build_model(..., upsample=False)``); the tensors
    stay on the device. The passes and the traced forward are evaluation's
    (:func:`~cbst_tf.inference.inference_passes`, :func:`~cbst_tf.inference.traced_forward`)."""

    def __init__(self, model, scales: Sequence[float], flip: bool, input_scale: float = 1.0):
        self.model = model
        self.passes = inference_passes(scales, flip)
        self.input_scale = float(input_scale)
        self._forward = traced_forward(model)

    def __call__(self, image: np.ndarray | tf.Tensor) -> list[tf.Tensor]:
        image = tf.convert_to_tensor(image, tf.float32)[tf.newaxis]
        hw = (int(image.shape[1]), int(image.shape[2]))
        at_stride = tf.constant((0, 0), tf.int32)
        out = []
        for scale, flip in self.passes:
            in_hw = scaled_size(hw, scale * self.input_scale)
            logits = self._forward(image, tf.constant(in_hw, tf.int32), at_stride, tf.constant(flip))
            out.append(tf.cast(logits[0], tf.float16))
        return out


def _mean_probs(size, *logits):
    total = None
    for item in logits:
        up = tf.image.resize(tf.cast(item, tf.float32)[tf.newaxis], size, method="bilinear")[0]
        p = tf.nn.softmax(up, axis=-1)
        total = p if total is None else total + p
    if len(logits) > 1:
        total = total / float(len(logits))
    return total


_MEAN_PROBS: dict[int, object] = {}  # one traced graph per number of passes, any image size


def probs_from_logits(logits: Sequence[np.ndarray | tf.Tensor], size: tuple[int, int]) -> tf.Tensor:
    """Mean softmax of every cached pass, upsampled (bilinear) to ``size``: (H, W, C) float32 tensor."""
    n = len(logits)
    if n not in _MEAN_PROBS:
        spec = [tf.TensorSpec([2], tf.int32)] + [tf.TensorSpec([None, None, None], tf.float16)] * n
        _MEAN_PROBS[n] = tf.function(_mean_probs, input_signature=spec, autograph=False)
    return _MEAN_PROBS[n](tf.constant(size, tf.int32), *(tf.convert_to_tensor(x, tf.float16) for x in logits))


def cache_path(cache_dir: Path, index: int) -> Path:
    return Path(cache_dir) / f"{index:07d}.npz"


_KEY = "KEY"


def cache_key(cache_dir: Path) -> str:
    """The key a cache directory was made under ("" when unknown: a cache of an older version)."""
    try:
        return (Path(cache_dir) / _KEY).read_bytes()[:200].decode("ascii", "replace").strip()
    except OSError:
        return ""


def claim_cache(cache_dir: Path, key: str) -> None:
    """Record that ``cache_dir`` holds (only) logits made under ``key``."""
    from cbst_tf.io import atomic_write_text

    if cache_key(cache_dir) != key:
        atomic_write_text(Path(cache_dir) / _KEY, key + "\n")


def save_logits(path: Path, source_id: str, logits: Sequence[np.ndarray | tf.Tensor], key: str = "") -> None:
    """Write one image's cached passes atomically, with the key of what made them."""
    logits = [np.asarray(x) for x in logits]
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, source_id=np.array(source_id), key=np.array(key),
                     **{f"pass{i}": a for i, a in enumerate(logits)})


def load_logits(path: Path, source_id: str, num_passes: int, key: str = "") -> list[np.ndarray] | None:
    """The cached passes of one image, or None when absent or made for another image, model,
    data or setting (another ``key``)."""
    if not Path(path).is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as data:
            names = [f for f in data.files if f.startswith("pass")]
            stored = str(data["key"]) if "key" in data.files else ""
            if str(data["source_id"]) != source_id or len(names) != num_passes or stored != key:
                return None
            return [data[f"pass{i}"] for i in range(num_passes)]
    except (OSError, ValueError, KeyError, EOFError) as exc:
        raise CbstError(f"{path}: corrupt logit cache ({type(exc).__name__}); delete it to recompute") from None


class BackgroundWriter:
    """Saves cache files on one worker thread so disk writes overlap the next forward pass.

    At most ``depth`` saves are in flight; errors surface on the next ``save`` or on exit.
    """

    def __init__(self, key: str = "", depth: int = 4):
        self.key = key
        self.depth = depth
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="cache-writer")
        self._pending: deque[Future] = deque()

    def save(self, path: Path, source_id: str, logits: Sequence[np.ndarray | tf.Tensor]) -> None:
        host = [np.asarray(x) for x in logits]  # copy off the device on this thread
        self._pending.append(self._pool.submit(save_logits, path, source_id, host, self.key))
        while len(self._pending) > self.depth:
            self._pending.popleft().result()

    def __enter__(self) -> BackgroundWriter:
        return self

    def __exit__(self, *exc) -> None:
        try:
            while self._pending:
                self._pending.popleft().result()
        finally:
            self._pool.shutdown(wait=True)


def prefetch_logits(items: Iterable[tuple[Path, str, Any]], num_passes: int, key: str = "",
                    depth: int = 4) -> Iterator[tuple[Any, list[np.ndarray] | None]]:
    """``(payload, cached logits or None)`` for ``(path, source_id, payload)`` items, in order,
    reading up to ``depth`` files ahead on a worker thread (files of another ``key``: None)."""
    with ThreadPoolExecutor(1, thread_name_prefix="cache-reader") as pool:
        ahead: deque[tuple[Any, Future]] = deque()
        for path, source_id, payload in items:
            ahead.append((payload, pool.submit(load_logits, path, source_id, num_passes, key)))
            if len(ahead) > depth:
                first, future = ahead.popleft()
                yield first, future.result()
        while ahead:
            first, future = ahead.popleft()
            yield first, future.result()
