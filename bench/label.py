"""Label-step throughput and its overhead over pure inference, measured in one run (JSON).

    python bench/label.py [--images 120] [--size 128x256] [--width 0.125] [--method cbst]

Pure inference = the same network over the same target TFRecords, softmax at full
resolution and an argmax (what any pseudo-labeller must do). The label step adds the
float16 stride-logit cache, the exact streaming histograms (phase 1) and the Eq. 8
solver plus TFRecord writing (phase 2). Both run in this process on the same data, so
the ratio is meaningful on a shared, noisy machine.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=120)
    ap.add_argument("--size", default="128x256")
    ap.add_argument("--width", type=float, default=0.125)
    ap.add_argument("--method", default="cbst", choices=["st", "cbst", "cbst_sp"])
    args = ap.parse_args()
    h, w = (int(v) for v in args.size.split("x"))

    import numpy as np

    from cbst_tf import progress
    from cbst_tf.config import load_config
    from cbst_tf.data.convert import convert_dataset
    from cbst_tf.data.reader import eval_dataset
    from cbst_tf.inference import predict_probs
    from cbst_tf.models import build_model
    from cbst_tf.runs import pretrained_weights
    from cbst_tf.selftrain.label_step import run_label
    from cbst_tf.synth.generate import synthesize

    progress.configure(enabled=False, log_every=10**9)
    tmp = Path(tempfile.mkdtemp(prefix="bench-label-"))
    synthesize(out=tmp / "raw", seed=0, size=(h, w), n_source=1, n_target=args.images, n_val=1,
               cities=[], n_city=1)
    convert_dataset(fmt="cityscapes", root=tmp / "raw" / "cityscapes", out=tmp / "target", split="train",
                    shards=2, skip_bad=False, workers=2, command="bench")
    cfg = load_config(None, [f"runtime.workdir={tmp / 'run'}", f"data.target={tmp / 'target'}",
                             f"model.width={args.width}", f"selftrain.method={args.method}"])
    model = build_model(cfg.model.name, 19, width=args.width)
    rng = np.random.default_rng(0)
    for v in model.trainable_variables:  # distinct confidences, as after training
        fan_in = int(np.prod(v.shape[:-1])) if len(v.shape) > 1 else 1
        v.assign(rng.normal(0, 1 / np.sqrt(fan_in), v.shape).astype("float32"))
    weights = pretrained_weights(cfg)
    weights.parent.mkdir(parents=True, exist_ok=True)
    model.save_weights(str(weights))
    if args.method == "cbst_sp":
        priors = rng.uniform(0.1, 1, (h // 2, w // 2, 19)).astype("float32")
        (tmp / "run" / "priors").mkdir(parents=True, exist_ok=True)
        np.save(tmp / "run" / "priors" / "priors.npy", priors / priors.sum((0, 1)))

    def pure_inference() -> float:
        t = time.perf_counter()
        for ex in eval_dataset(cfg.data.target, cfg.data).as_numpy_iterator():
            predict_probs(model, ex["image"]).argmax(-1)
        return time.perf_counter() - t

    pure_inference()  # warm-up: traces the forward function
    t_inf = pure_inference()
    t = time.perf_counter()
    run_label(cfg, 1, phase="stats")
    t_stats = time.perf_counter() - t
    t = time.perf_counter()
    run_label(cfg, 1, phase="write")
    t_write = time.perf_counter() - t
    t_label = t_stats + t_write
    print(json.dumps({
        "images": args.images, "size": [h, w], "width": args.width, "method": args.method,
        "inference_images_per_s": round(args.images / t_inf, 2),
        "label_step_images_per_s": round(args.images / t_label, 2),
        "phase_stats_s": round(t_stats, 2), "phase_write_s": round(t_write, 2),
        "overhead_over_inference": round(t_label / t_inf - 1.0, 3),
        "goal_overhead": 0.10,
    }, indent=2))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
