"""Throughput of the training input pipeline: decode + augment with 1 vs N parallel calls.

Prints JSON: examples/s for each setting and their ratio, measured in this one run on a
synthetic TFRecord directory of PNG images (default 24 images of 256x512, crop 200x200).
Usage: python bench/input_pipeline.py [--images 24] [--size 256x512] [--batches 30] [--calls 2]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

from cbst_tf.config import DataConfig
from cbst_tf.data.reader import train_dataset
from cbst_tf.data.writer import DatasetWriter


def _make(directory: Path, n: int, hw: tuple[int, int]) -> None:
    rng = np.random.default_rng(0)
    with DatasetWriter(directory, num_items=n, shards=4, name="bench", fmt="bench") as w:
        for i in range(n):
            # Smooth noise compresses like a photo more than white noise does.
            small = rng.integers(0, 256, (hw[0] // 8, hw[1] // 8, 3), dtype=np.uint8)
            rgb = cv2.resize(small, (hw[1], hw[0]), interpolation=cv2.INTER_LINEAR)
            png = cv2.imencode(".png", rgb)[1].tobytes()
            label = cv2.resize(rng.integers(0, 19, (hw[0] // 16, hw[1] // 16), dtype=np.uint8), (hw[1], hw[0]),
                               interpolation=cv2.INTER_NEAREST)
            w.add(i, png, "png", hw[0], hw[1], f"{i}.png", label)
        w.close()


def _rate(directory: Path, calls: int, batches: int, batch: int) -> float:
    cfg = DataConfig(crop_size=[200, 200], parallel_calls=calls, cycle_length=2, prefetch=2, shuffle_buffer=16)
    it = iter(train_dataset(directory, cfg, batch, seed=0))
    next(it)  # warm-up: graph tracing and first file opens
    start = time.perf_counter()
    for _ in range(batches):
        next(it)
    return batches * batch / (time.perf_counter() - start)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=24)
    ap.add_argument("--size", default="256x512")
    ap.add_argument("--batches", type=int, default=30)
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--calls", type=int, default=2)
    args = ap.parse_args()
    hw = tuple(int(v) for v in args.size.split("x"))
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp) / "bench"
        _make(d, args.images, hw)
        serial = _rate(d, 1, args.batches, args.batch)
        parallel = _rate(d, args.calls, args.batches, args.batch)
    print(json.dumps({"image_size": args.size, "crop": [200, 200], "examples_per_s_calls_1": round(serial, 2),
                      f"examples_per_s_calls_{args.calls}": round(parallel, 2),
                      "speedup": round(parallel / serial, 3)}))


if __name__ == "__main__":
    main()
