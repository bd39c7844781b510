"""The style-randomised corpus behind the demo's stand-in for ImageNet initialisation.

The paper's networks start from ImageNet features; self-training relies on them carrying
over from confident target pixels to less confident pixels of the same class (issue 13,
fact 3). A network trained from nothing on the embedded source learns its colours instead.
This corpus has the source's scene layout, but every image draws a random appearance: a
random colour, instance spread, grain, blotch noise and stripes per class, random part
colours and camera pipeline. Colour says nothing about the class here (a per-class colour
classifier scores 0.4 mIoU, against 21.6 on the source), so a network pretrained on it
must rely on shape, texture and layout, and it never sees a source or target appearance.
The corpus uses its own image tag, so none of its scenes is a source or target scene.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from cbst_tf.errors import CbstError
from cbst_tf.io import atomic_write_json
from cbst_tf.synth import objects as ob
from cbst_tf.synth import writers
from cbst_tf.synth.canvas import NUM_PARTS, PART_FACE, PART_LAMP
from cbst_tf.synth.generate import VERSION, build, read_marker, render
from cbst_tf.synth.geometry import SOURCE_GEOMETRY
from cbst_tf.synth.style import Look, Style, make_style

TAG = "stylized"


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
    return make_style(TAG, looks, parts, palettes, sky_top=colour(),
                      light=tuple(u(0.8, 1.2) for _ in range(5)),
                      white_balance=(u(0.85, 1.15), u(0.85, 1.15), u(0.85, 1.15)), saturation=u(0.6, 1.2),
                      contrast=u(0.8, 1.15), gamma=1.0, haze=u(0.0, 0.01), haze_colour=colour(),
                      blur=u(0.3, 0.8), vignette=u(0.0, 0.2), noise=u(1.0, 5.0), jitter=0.1, variety=0.0)


def render_stylized(seed: int, index: int, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """One corpus image: (RGB uint8 (H, W, 3), train ids (H, W)), its style drawn after its scene."""
    return render(seed, TAG, index, size, random_style, SOURCE_GEOMETRY)


def synthesize_stylized(out: str | Path, seed: int, size: Sequence[int], n: int) -> Path:
    """``n`` corpus images in the GTA5 layout under ``out/gta5`` (built atomically; a rerun
    with the same arguments skips it); returns that directory."""
    out, size = Path(out), (int(size[0]), int(size[1]))
    if not isinstance(n, int) or n < 1:
        raise CbstError(f"synth.init_images: expected a positive integer, got {n!r}")
    params = {"version": VERSION, "seed": seed, "size": list(size), "n": n}
    marker, root = out / "stylized.json", out / "gta5"
    if read_marker(marker) == params and root.is_dir():
        return root
    marker.unlink(missing_ok=True)
    build(out, "gta5", [(TAG, n, random_style, SOURCE_GEOMETRY, writers.gta5_files)], size, seed)
    atomic_write_json(marker, params)
    return root
