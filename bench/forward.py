"""Forward-pass throughput of the two networks next to the machine's matmul rate.

Prints one JSON object: the float32 ``tf.matmul`` GFLOP/s of this machine (large square
matrices) and, per network and configuration, images/s and achieved GFLOP/s (analytic
FLOPs of :mod:`cbst_tf.models.summary` x images/s), plus their ratio to the matmul rate,
all measured in the same run. Defaults: width 1.0 (the published networks) at 512x1024
(the issue's goal: >= 85% of the matmul rate there) and the CPU-demo width 0.125 at
128x256; about 1.5 minutes on 2 CPU cores.

    python bench/forward.py [--size 512x1024] [--demo-size 128x256] [--repeats 3]
                            [--batch 1] [--nets fcn8s_vgg16,resnet38] [--matmul 4096]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from cbst_tf.models import build_model  # noqa: E402
from cbst_tf.models.summary import model_flops  # noqa: E402


def _hw(text: str) -> tuple[int, int]:
    h, w = (int(v) for v in text.lower().split("x"))
    return h, w


def matmul_gflops(n: int, repeats: int) -> float:
    """Best-of-``repeats`` float32 ``n x n @ n x n`` rate (2 n^3 FLOPs per product)."""
    a = tf.random.normal((n, n), dtype=tf.float32)
    b = tf.random.normal((n, n), dtype=tf.float32)
    mm = tf.function(lambda x, y: tf.matmul(x, y))
    mm(a, b).numpy()
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        mm(a, b).numpy()
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best / 1e9


def forward(name: str, width: float, hw: tuple[int, int], batch: int, repeats: int) -> dict:
    """Images/s (best of ``repeats`` after one warm-up) of a compiled inference forward pass."""
    flops = model_flops(build_model(name, 19, width, input_hw=hw))  # analytic, per image
    model = build_model(name, 19, width)
    fn = tf.function(lambda x: model(x, training=False))
    x = tf.constant(np.random.default_rng(0).uniform(0, 255, (batch, *hw, 3)).astype(np.float32))
    fn(x).numpy()
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        fn(x).numpy()
        best = min(best, time.perf_counter() - t)
    ips = batch / best
    return {"net": name, "width": width, "input": list(hw), "batch": batch, "params": model.count_params(),
            "gflops_per_image": round(flops / 1e9, 3), "seconds_per_batch": round(best, 4),
            "images_per_s": round(ips, 3), "achieved_gflops_per_s": round(flops * ips / 1e9, 2)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", type=_hw, default=(512, 1024), help="HxW for width 1.0")
    p.add_argument("--demo-size", type=_hw, default=(128, 256), help="HxW for the demo width")
    p.add_argument("--demo-width", type=float, default=0.125)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--nets", default="fcn8s_vgg16,resnet38")
    p.add_argument("--matmul", type=int, default=4096, help="matrix size for the matmul reference")
    args = p.parse_args()

    peak = matmul_gflops(args.matmul, max(3, args.repeats))
    runs = []
    for name in args.nets.split(","):
        for width, hw in ((1.0, args.size), (args.demo_width, args.demo_size)):
            r = forward(name, width, hw, args.batch, args.repeats)
            r["fraction_of_matmul"] = round(r["achieved_gflops_per_s"] / peak, 3)
            runs.append(r)
    print(json.dumps({
        "device": tf.config.list_physical_devices("GPU")[0].name if tf.config.list_physical_devices("GPU")
        else f"cpu ({os.cpu_count()} cores, {platform.machine()})",
        "matmul": {"n": args.matmul, "gflops_per_s": round(peak, 2)},
        "forward": runs,
    }, indent=2))


if __name__ == "__main__":
    main()
