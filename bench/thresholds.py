"""Benchmark: streaming float16-histogram thresholds vs the sort of Algorithms 1/2.

Simulates the Cityscapes train set (2,975 images x 1024 x 2048 pixels, 19 classes) by
streaming random softmax maps (a small pool of distinct maps, generated before timing and
reused cyclically), then extrapolates honestly, per image, to the full set. The sort
baseline is the official code's approach (keep every pixel's max confidence per predicted
class, sort descending, index) run on as many images as fit comfortably in memory. Both
paths are measured in the same run; prints one JSON object.

    python bench/thresholds.py                      # 16 images at 1024x2048, < 1 min
    python bench/thresholds.py --images 40 --size 512x1024 --sort-images 8
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import time
import tracemalloc

import numpy as np

from cbst_tf.algos import ConfidenceHistogram, assign_pseudo_labels, thresholds_from_histogram

CITYSCAPES_IMAGES = 2975


def softmax_pool(count: int, size: tuple[int, int], classes: int, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    pool = []
    for _ in range(count):
        logits = rng.standard_normal((*size, classes), dtype=np.float32) * 3.0
        np.exp(logits, out=logits)
        logits /= logits.sum(axis=-1, keepdims=True)
        pool.append(logits)
    return pool


def run_histogram(pool, images, portion):
    hist = ConfidenceHistogram(pool[0].shape[-1])
    tracemalloc.start()
    start = time.perf_counter()
    for i in range(images):
        hist.update(pool[i % len(pool)])
    thresholds = thresholds_from_histogram(hist, portion, "cbst")
    seconds = time.perf_counter() - start
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return thresholds, seconds, peak


def run_sort(pool, images, portion):
    """Algorithm 2 literally: collect per-class confidences, sort descending, index floor(p N_c) - 1."""
    classes = pool[0].shape[-1]
    tracemalloc.start()
    start = time.perf_counter()
    per_class: list[list[np.ndarray]] = [[] for _ in range(classes)]
    for i in range(images):
        flat = pool[i % len(pool)].reshape(-1, classes)
        pred = flat.argmax(axis=1)
        top = np.take_along_axis(flat, pred[:, None], axis=1)[:, 0]
        order = np.argsort(pred, kind="stable")
        bounds = np.searchsorted(pred[order], np.arange(classes + 1))
        grouped = top[order]
        for c in range(classes):
            per_class[c].append(grouped[bounds[c]:bounds[c + 1]])
    thresholds = np.full(classes, np.inf)
    for c in range(classes):
        vals = np.sort(np.concatenate(per_class[c]))[::-1]
        m = int(math.floor(len(vals) * portion))
        if m:
            thresholds[c] = vals[m - 1]
    seconds = time.perf_counter() - start
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return thresholds, seconds, peak


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=16, help="maps streamed through the histogram")
    parser.add_argument("--sort-images", type=int, default=8, help="maps in the sort baseline")
    parser.add_argument("--size", default="1024x2048", help="HxW of every map")
    parser.add_argument("--classes", type=int, default=19)
    parser.add_argument("--pool", type=int, default=2, help="distinct random maps (reused cyclically)")
    parser.add_argument("--portion", type=float, default=0.2)
    args = parser.parse_args()
    h, w = (int(v) for v in args.size.lower().split("x"))
    pool = softmax_pool(args.pool, (h, w), args.classes, seed=0)
    pixels = h * w

    hist_t, hist_s, hist_peak = run_histogram(pool, args.images, args.portion)
    sort_t, sort_s, sort_peak = run_sort(pool, args.sort_images, args.portion)
    same_t, _, _ = run_histogram(pool, args.sort_images, args.portion)  # same images as the sort
    finite = np.isfinite(same_t) & np.isfinite(sort_t)
    rel_err = float(np.max(np.abs(same_t[finite] - sort_t[finite]) / sort_t[finite])) if finite.any() else 0.0

    start = time.perf_counter()
    selected = [float((assign_pseudo_labels(m, hist_t, "cbst") != 255).mean()) for m in pool]
    assign_s = (time.perf_counter() - start) / len(pool)

    hist_per_image = hist_s / args.images
    sort_per_image = sort_s / args.sort_images
    # A full sort of N values costs ~ N log N: scale the measured per-image cost by the log ratio.
    n_sort, n_full = args.sort_images * pixels, CITYSCAPES_IMAGES * 1024 * 2048
    full_scale = (1024 * 2048) / pixels
    print(json.dumps({
        "map_size": [h, w, args.classes],
        "histogram": {
            "images": args.images,
            "seconds": round(hist_s, 3),
            "seconds_per_image": round(hist_per_image, 4),
            "megapixels_per_second": round(args.images * pixels / hist_s / 1e6, 2),
            "peak_traced_mb": round(hist_peak / 2**20, 1),
            "counter_mb": round(args.classes * 65536 * 8 / 2**20, 1),
        },
        "assign_pseudo_labels_cbst": {"seconds_per_image": round(assign_s, 4),
                                      "selected_fraction": round(float(np.mean(selected)), 4)},
        "sort_baseline": {
            "images": args.sort_images,
            "seconds": round(sort_s, 3),
            "seconds_per_image": round(sort_per_image, 4),
            "peak_traced_mb": round(sort_peak / 2**20, 1),
        },
        "ratios_same_run": {
            "sort_over_histogram_time_per_image": round(sort_per_image / hist_per_image, 2),
            "sort_over_histogram_peak_memory": round(sort_peak / max(hist_peak, 1), 2),
        },
        "agreement": {
            "max_relative_threshold_difference": rel_err,
            "float16_half_ulp": 2.0 ** -11,
        },
        "extrapolated_cityscapes_2975x1024x2048": {
            "histogram_minutes": round(hist_per_image * full_scale * CITYSCAPES_IMAGES / 60, 1),
            "histogram_memory_mb": "constant: one map + counters, as measured above at 1024x2048",
            "sort_minutes": round(sort_per_image * full_scale * CITYSCAPES_IMAGES
                                  * math.log2(n_full) / math.log2(n_sort) / 60, 1),
            "sort_memory_gb": round(CITYSCAPES_IMAGES * 1024 * 2048 * 4 / 2**30, 1),
            "note": "per-image costs x 2975 (sort also x log N ratio); sort memory = one float32 per pixel",
        },
        "max_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }, indent=2))


if __name__ == "__main__":
    main()
