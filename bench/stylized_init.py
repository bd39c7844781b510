"""Fact 3 of issue 13: a stand-in for ImageNet initialisation; prints one JSON object.

The paper's networks start from ImageNet features, ours from nothing. This renders a
separate, style-randomised corpus (the embedded benchmark's source scenes, but every image
draws a random appearance: a random colour, instance spread, grain, blotch noise and
stripes per class, random part colours and camera pipeline), so colour says nothing
about the class and a network trained on it must rely on shape, texture and layout. It
then pretrains the demo preset's network on it with the demo's pretraining budget. Pass
the weights to a demo to start both the source model and the oracle from them:

    python bench/stylized_init.py --out init_out [--images 1200] [--seed 100]
    cbst-tf demo --out demo_out --set model.weights=init_out/runs/init/pretrain/final.weights.h5

The corpus uses its own image tag, so none of its scenes is a source or target scene.
Measured results are in README, "What we found" (fact 3).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from cbst_tf import progress
from cbst_tf.io import atomic_dir
from cbst_tf.synth import objects as ob
from cbst_tf.synth import writers
from cbst_tf.synth.canvas import NUM_PARTS, PART_FACE, PART_LAMP
from cbst_tf.synth.generate import image_rng
from cbst_tf.synth.geometry import SOURCE_GEOMETRY
from cbst_tf.synth.scene import render_scene
from cbst_tf.synth.style import Look, Style, make_style, render_image


def random_style(rng: np.random.Generator) -> Style:
    """One image's appearance, every parameter drawn independently of the class."""

    def u(a: float, b: float) -> float:
        return float(rng.uniform(a, b))

    def colour() -> tuple[float, float, float]:
        r, g, b = (float(v) for v in rng.uniform(20, 240, 3))
        return r, g, b

    looks = {}
    for c in [*range(19), ob.EGO]:
        stripes = [(u(0, 14), u(0.2, 1.5)) if rng.random() < 0.3 else (0.0, 1.0) for _ in range(3)]
        looks[c] = Look(colour(), u(0, 40), u(1, 14), u(1, 16), *stripes)
    parts = {p: (colour(), u(0.5, 1.0)) for p in range(1, NUM_PARTS)}
    parts[PART_LAMP] = parts[PART_FACE] = ((0, 0, 0), 1.0)  # these two come from the palettes
    palettes = {PART_LAMP: [colour() for _ in range(3)], PART_FACE: [colour() for _ in range(3)]}
    return make_style("stylized", looks, parts, palettes, sky_top=colour(),
                      light=tuple(u(0.8, 1.2) for _ in range(5)),
                      white_balance=(u(0.85, 1.15), u(0.85, 1.15), u(0.85, 1.15)), saturation=u(0.6, 1.2),
                      contrast=u(0.8, 1.15), gamma=1.0, haze=u(0.0, 0.01), haze_colour=colour(),
                      blur=u(0.3, 0.8), vignette=u(0.0, 0.2), noise=u(1.0, 5.0), jitter=0.1, variety=0.0)


def render_stylized(seed: int, index: int, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """One corpus image: (RGB uint8 (H, W, 3), train ids (H, W)); like ``generate.render``,
    but the style is drawn from the image's own RNG after its scene."""
    rng = image_rng(seed, "stylized", index)
    scene = render_scene(rng, size[0], size[1], SOURCE_GEOMETRY)
    return render_image(scene, random_style(rng), rng), scene.labels


def render_corpus(out: Path, n: int, seed: int, size: tuple[int, int]) -> None:
    """``n`` style-randomised source scenes in the GTA5 layout under ``out`` (atomically)."""
    with atomic_dir(out) as tmp:
        for i in progress.track(range(n), total=n, description="stylized corpus"):
            rgb, train_ids = render_stylized(seed, i, size)
            for rel, data in writers.gta5_files(i, rgb, train_ids).items():
                writers.write(tmp, rel, data)


def main() -> None:
    from cbst_tf.config import save_resolved
    from cbst_tf.data.convert import convert_dataset
    from cbst_tf.demo import demo_config
    from cbst_tf.train.steps import run_pretrain

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--images", type=int, default=1200)
    ap.add_argument("--seed", type=int, default=100)
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                    help="demo preset overrides, e.g. train.steps=300")
    args = ap.parse_args()
    start = time.monotonic()
    raw, records = args.out / "raw" / "gta5", args.out / "data" / "stylized"
    cfg = demo_config(None, [f"data.source={records}", f"runtime.workdir={args.out / 'runs' / 'init'}",
                             *args.overrides], args.out, args.seed, False)
    if not raw.is_dir():
        render_corpus(raw, args.images, args.seed, tuple(cfg.synth.size))
    if not (records / "manifest.json").is_file():
        convert_dataset(fmt="gta5", root=raw, out=records, split=None, shards=2, skip_bad=False, workers=2,
                        command="bench/stylized_init.py")
    save_resolved(cfg, args.out, "init_config.yaml")
    weights = run_pretrain(cfg)
    print(json.dumps({"weights": str(weights), "images": args.images, "seed": args.seed,
                      "steps": cfg.train.steps, "seconds": round(time.monotonic() - start, 1)}))


if __name__ == "__main__":
    main()
