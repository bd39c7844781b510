"""``cbst-tf predict`` throughput next to the bare forward pass with the same test passes.

Bare: :func:`cbst_tf.inference.protocol_probs` (network, resizes and softmax of every
configured pass) on images already decoded in memory. Predict: :meth:`Predictor.run` on the
same images as PNG files in a folder (listing, decoding, the passes, arg-max, PNG encoding and
atomic, fsynced writes of ``--formats``). Both share one model, built once and warmed up. The
machine is shared, so a sample is one pass over the ``--images`` images, the two alternate for
``--repeats`` samples each, and the fastest sample of each (the least disturbed) gives the
throughput; the ratio of the medians is printed too. Prints one JSON object; the issue's bar:
``ratio`` (predict / bare images per second) >= 0.9 at width 1.0, 512x1024. About 30 s on 2
idle CPU cores.

    python bench/predict.py [--net fcn8s_vgg16] [--width 1.0] [--size 512x1024] [--images 3]
                            [--repeats 3] [--formats labelids,color] [--scales 1.0] [--flip]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from cbst_tf import progress  # noqa: E402
from cbst_tf.config import load_config  # noqa: E402
from cbst_tf.inference import protocol_probs  # noqa: E402
from cbst_tf.models import build_from_config  # noqa: E402
from cbst_tf.predict.inputs import open_input  # noqa: E402
from cbst_tf.predict.outputs import parse_formats  # noqa: E402
from cbst_tf.predict.run import Predictor  # noqa: E402


def _hw(text: str) -> tuple[int, int]:
    h, w = (int(v) for v in text.lower().split("x"))
    return h, w


def street_like(rng: np.random.Generator, hw: tuple[int, int]) -> np.ndarray:
    """Smooth noise with edges (compresses like a photo, not like white noise)."""
    small = rng.integers(0, 256, (hw[0] // 16 + 1, hw[1] // 16 + 1, 3), dtype=np.uint8)
    img = cv2.resize(small, (hw[1], hw[0]), interpolation=cv2.INTER_LINEAR)
    return np.clip(img.astype(np.int16) + rng.integers(-8, 9, img.shape), 0, 255).astype(np.uint8)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--net", default="fcn8s_vgg16")
    p.add_argument("--width", type=float, default=1.0)
    p.add_argument("--size", type=_hw, default=(512, 1024))
    p.add_argument("--images", type=int, default=3)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--formats", default="labelids,color")
    p.add_argument("--scales", default="1.0")
    p.add_argument("--flip", action="store_true")
    args = p.parse_args()

    progress.configure(enabled=False, log_every=10**9)
    cfg = load_config(None, [f"model.name={args.net}", f"model.width={args.width}", "model.dropout=0.0",
                             f"eval.scales=[{args.scales}]", f"eval.flip={str(args.flip).lower()}"])
    formats = parse_formats(args.formats)
    model = build_from_config(cfg, init=False)  # random weights: the speed does not depend on them
    predictor = Predictor(cfg, model)
    e = cfg.eval
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        rng = np.random.default_rng(0)
        images = [street_like(rng, args.size) for _ in range(args.images)]
        (tmp / "in").mkdir()
        for i, img in enumerate(images):
            cv2.imwrite(str(tmp / "in" / f"city_{i:06d}_000019_leftImg8bit.png"), img[..., ::-1])
        decoded = [img.astype(np.float32) for img in images]
        runs = iter(range(10**6))

        def bare() -> float:
            t = time.perf_counter()
            for img in decoded:
                protocol_probs(model, img, e.scales, e.flip, upsample=e.upsample, long_side=e.long_side)
            return time.perf_counter() - t

        def predict() -> float:
            t = time.perf_counter()
            stats = predictor.run(open_input(tmp / "in"), tmp / f"out{next(runs)}", formats)
            assert stats["predicted"] == len(images), stats
            return time.perf_counter() - t

        bare(), predict()  # warm-up: tracing, first allocations
        samples: dict[str, list[float]] = {"bare": [], "predict": []}
        for r in range(args.repeats):  # alternate, and alternate who goes first
            for name, fn in ((("bare", bare), ("predict", predict)) if r % 2 == 0 else
                             (("predict", predict), ("bare", bare))):
                samples[name].append(fn())
    best = {k: min(v) / len(images) for k, v in samples.items()}  # seconds per image
    median = {k: float(np.median(v)) / len(images) for k, v in samples.items()}
    print(json.dumps({
        "net": args.net, "width": args.width, "input": list(args.size), "formats": list(formats),
        "scales": list(e.scales), "flip": e.flip, "images_per_sample": len(images),
        "samples_each": len(samples["bare"]),
        "bare_images_per_s": round(1 / best["bare"], 3), "predict_images_per_s": round(1 / best["predict"], 3),
        "ratio": round(best["bare"] / best["predict"], 4),
        "ratio_of_medians": round(median["bare"] / median["predict"], 4),
        "target_ratio": 0.9, "meets_target": best["bare"] / best["predict"] >= 0.9,
        "sample_seconds": {k: [round(x, 3) for x in v] for k, v in samples.items()},
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "load_average": os.getloadavg()},
    }, indent=2))


if __name__ == "__main__":
    main()
