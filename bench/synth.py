"""Benchmark of the embedded street-scene generator; prints one JSON object.

Measures, on one core (cv2 limited to one thread), images/s at 256x512 for rendering
alone (scene rasterisation + styling) and end to end through ``synthesize`` (rendering,
PNG/JPEG encoding, atomic directory writes), plus the colour-alone probe mIoU
(nearest-class-mean RGB fitted on source pixels) source->source, source->target and
target->target, all from this one run.

    python bench/synth.py [--n 100] [--size 256x512]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time

import cv2
import numpy as np

from cbst_tf.labels import CLASS_NAMES
from cbst_tf.synth import probe
from cbst_tf.synth.domains import SOURCE_STYLE, TARGET_STYLE
from cbst_tf.synth.generate import render, synthesize
from cbst_tf.synth.geometry import SOURCE_GEOMETRY, TARGET_GEOMETRY


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=100, help="images per measurement")
    ap.add_argument("--size", default="256x512")
    args = ap.parse_args()
    h, w = (int(v) for v in args.size.split("x"))
    cv2.setNumThreads(1)

    timings = {}
    pairs = {}
    for name, style, geo in (("source", SOURCE_STYLE, SOURCE_GEOMETRY), ("target", TARGET_STYLE, TARGET_GEOMETRY)):
        render(0, name, 0, (h, w), style, geo)  # warm-up (noise bank, imports)
        start = time.perf_counter()
        pairs[name] = [render(0, name, i, (h, w), style, geo) for i in range(args.n)]
        timings[name] = args.n / (time.perf_counter() - start)

    with tempfile.TemporaryDirectory() as tmp:
        n = args.n // 2
        start = time.perf_counter()
        synthesize(tmp, seed=0, size=(h, w), n_source=n, n_target=n // 2, n_val=n - n // 2, cities=[], n_city=1)
        end_to_end = 2 * n / (time.perf_counter() - start)

    # Colour probe on a subsample of pixels (every 4th row/column) to stay cheap.
    sub = {k: [(rgb[::4, ::4], ids[::4, ::4]) for rgb, ids in v] for k, v in pairs.items()}
    half = len(sub["source"]) // 2
    src_src, _ = probe.colour_probe_miou(sub["source"][:half], sub["source"][half:])
    src_tgt, iou = probe.colour_probe_miou(sub["source"][:half], sub["target"])
    tgt_tgt, _ = probe.colour_probe_miou(sub["target"][:half], sub["target"][half:])
    counts = {k: np.bincount(np.concatenate([t.ravel() for _, t in v]), minlength=256)[:19] for k, v in pairs.items()}
    print(json.dumps({
        "size": f"{h}x{w}", "images": args.n, "threads": 1,
        "images_per_s": round(min(timings.values()), 1),
        "render_images_per_s": {k: round(v, 1) for k, v in timings.items()},
        "end_to_end_images_per_s": round(end_to_end, 1),
        "encode_write_overhead_ratio": round(min(timings.values()) / end_to_end, 2),
        "colour_probe_miou": {"source_to_source": round(src_src, 1), "source_to_target": round(src_tgt, 1),
                              "target_to_target": round(tgt_tgt, 1)},
        "colour_probe_source_to_target_iou": {CLASS_NAMES[c]: round(float(np.nan_to_num(iou[c])), 1)
                                              for c in range(19)},
        "class_pixel_percent": {k: [round(float(x), 2) for x in 100 * v / v.sum()] for k, v in counts.items()},
    }, indent=1))


if __name__ == "__main__":
    main()
