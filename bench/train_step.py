"""Images/s of the training step and of the input pipeline alone, measured in one run (JSON).

The input pipeline must outrun the step (target: >= 3x), or the accelerator waits on data.
Uses the demo preset (FCN-8s/VGG16 at width 0.125, 96x192 crops, global batch 8) on a
temporary TFRecord directory of random 128x256 PNG images (noise: a worst case for decoding).

    python bench/train_step.py [--steps 8] [--images 48]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from importlib import resources
from pathlib import Path

import cv2
import numpy as np


def _write_dataset(directory: Path, n: int, hw: tuple[int, int]) -> None:
    from cbst_tf.data.writer import DatasetWriter

    rng = np.random.default_rng(0)
    with DatasetWriter(directory, num_items=n, shards=4, name="bench", fmt="bench") as w:
        for i in range(n):
            image = rng.integers(0, 256, (*hw, 3), dtype=np.uint8)
            label = rng.integers(0, 19, hw, dtype=np.uint8)
            w.add(i, cv2.imencode(".png", image)[1].tobytes(), "png", hw[0], hw[1], f"b/{i}.png", label)
        w.close()


def _rate(fn, n: int, images_per_call: int) -> float:
    fn()  # warm-up: tracing, first shuffle-buffer fill
    start = time.perf_counter()
    for _ in range(n):
        fn()
    return n * images_per_call / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--images", type=int, default=48)
    args = parser.parse_args()

    from cbst_tf import runtime
    from cbst_tf.config import load_config
    from cbst_tf.data.reader import train_dataset
    from cbst_tf.models import build_from_config
    from cbst_tf.train.loop import make_train_step
    from cbst_tf.train.optimizer import build_optimizer

    preset = Path(str(resources.files("cbst_tf") / "presets" / "demo.yaml"))
    with tempfile.TemporaryDirectory() as tmp:
        cfg = load_config(preset, [f"runtime.workdir={tmp}/run", f"data.source={tmp}/src"])
        _write_dataset(Path(cfg.data.source), args.images, (128, 256))
        rt = runtime.setup(cfg)
        batch = cfg.train.global_batch_size

        it = iter(train_dataset(cfg.data.source, cfg.data, batch, seed=0))
        pipeline = _rate(lambda: next(it)[0].numpy(), args.steps * 4, batch)

        with rt.strategy.scope():
            model = build_from_config(cfg)
            opt = build_optimizer(cfg, model, total_steps=1000)
        step = make_train_step(model, opt, rt.strategy, xla=cfg.runtime.xla)
        fixed = next(iter(rt.strategy.experimental_distribute_dataset(
            train_dataset(cfg.data.source, cfg.data, batch, seed=1).take(1))))
        step_rate = _rate(lambda: float(step(fixed)[0]), args.steps, batch)

    print(json.dumps({
        "model": f"{cfg.model.name} width {cfg.model.width}", "crop": cfg.data.crop_size,
        "global_batch": batch, "replicas": rt.num_replicas,
        "pipeline_images_per_s": round(pipeline, 2), "train_step_images_per_s": round(step_rate, 2),
        "pipeline_over_step": round(pipeline / step_rate, 2),
    }))


if __name__ == "__main__":
    main()
