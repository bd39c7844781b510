"""What LRENT adds outside the training step, as ratios to CBST in one run (JSON).

Two parts of an LRENT round cost more than CBST's (issue 30; the step itself is measured by
``bench/crst_step.py``):

* ``label``: the label step's labeller per image, LRENT's selection
  (:class:`cbst_tf.selftrain.soft_labels.HardOfSoft`) against CBST's Eq. 5 / Eq. 8
  (:class:`cbst_tf.selftrain.device_ops.DeviceLabeller`), on one random probability map;
* ``input``: one batch of the finetuning input pipeline, augmenting the demo's crops with the soft
  labels rebuilt from two passes of stride-8 float16 logits
  (:meth:`cbst_tf.selftrain.soft_crop.CropSoftLabels.crop`) against the same augmentation
  without them (random images in memory: no disk, no decoding, so the ratio is an upper bound
  of what the real pipeline adds).

Variants interleave in rounds; each ratio is the median over rounds of the variant's time
divided by CBST's time in the same round. Process CPU time.

    python bench/lrent_pipeline.py [--rounds 9] [--image 128 256] [--crop 96 192] [--batch 8]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--image", type=int, nargs=2, default=[128, 256], help="target image height width (demo)")
    parser.add_argument("--crop", type=int, nargs=2, default=[96, 192], help="training crop (demo)")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--classes", type=int, default=19)
    parser.add_argument("--batches", type=int, default=10, help="batches per round (input)")
    args = parser.parse_args()

    import tensorflow as tf

    from cbst_tf.data.augment import augment
    from cbst_tf.selftrain.device_ops import DeviceLabeller
    from cbst_tf.selftrain.soft_crop import CropSoftLabels
    from cbst_tf.selftrain.soft_labels import HardOfSoft

    c, (h, w), crop = args.classes, args.image, tuple(args.crop)
    rng = np.random.default_rng(0)
    thresholds = np.exp(-rng.uniform(0.1, 1.6, c)).astype(np.float16).astype(np.float64)
    probs = tf.constant(rng.dirichlet(np.full(c, 0.2), size=(h, w)).astype(np.float32))
    labellers = {"cbst": DeviceLabeller(thresholds, "cbst", c), "lrent": HardOfSoft(thresholds, 0.25, c)}

    n = 4 * args.batch
    images = rng.uniform(0, 255, (n, h, w, 3)).astype(np.float32)
    labels = rng.integers(0, c, (n, h, w)).astype(np.uint8)
    labels[:, : h // 3] = 255
    logits = rng.normal(0, 2, (n, 2, -(-h // 8), -(-w // 8), c)).astype(np.float16)
    spec = CropSoftLabels(tuple(thresholds), 0.25, 2)
    kw = {"crop_hw": crop, "scale_range": (0.7, 1.3), "mean": (123.68, 116.78, 103.94), "flip": True}

    def hard(i, image, label, _):
        return augment(image, label, tf.stack([tf.constant(0, tf.int64), i]), **kw)

    def soft(i, image, label, z):
        fn = lambda size, offset: spec.crop([z[0], z[1]], size, offset, crop)  # noqa: E731
        return augment(image, label, tf.stack([tf.constant(0, tf.int64), i]), soft=fn, **kw)

    def batches(fn):
        ds = tf.data.Dataset.from_tensor_slices((images, labels, logits)).repeat().enumerate()
        return iter(ds.map(lambda i, x: fn(i, *x), num_parallel_calls=2).batch(args.batch).prefetch(2))

    inputs = {"cbst": batches(hard), "lrent": batches(soft)}
    for k in ("cbst", "lrent"):  # trace and warm up
        labellers[k](probs)
        next(inputs[k])

    times: dict[str, dict[str, list[float]]] = {"label": {"cbst": [], "lrent": []}, "input": {"cbst": [], "lrent": []}}
    for r in range(args.rounds):
        for k in (("cbst", "lrent") if r % 2 == 0 else ("lrent", "cbst")):
            start = time.process_time()
            for _ in range(5):
                labellers[k](probs)
            times["label"][k].append((time.process_time() - start) / 5)
            start = time.process_time()
            for _ in range(args.batches):
                next(inputs[k])
            times["input"][k].append((time.process_time() - start) / args.batches)

    def ratio(part: str) -> float:
        t = times[part]
        return round(statistics.median(a / b for a, b in zip(t["lrent"], t["cbst"], strict=True)), 3)

    print(json.dumps({
        "image": [h, w], "crop": list(crop), "batch": args.batch, "classes": c, "clock": "process CPU",
        "rounds": args.rounds,
        "label_ms_per_image": {k: round(1000 * statistics.median(v), 2) for k, v in times["label"].items()},
        "input_ms_per_batch": {k: round(1000 * statistics.median(v), 2) for k, v in times["input"].items()},
        "lrent_to_cbst": {"label": ratio("label"), "input": ratio("input")},
    }))


if __name__ == "__main__":
    main()
