"""Orchestration of the embedded benchmark: ``cbst-tf data synth``.

Renders the source domain ("the game", GTA5 layout), the target domain (Cityscapes
layout, train + val, both with gtFine so a target-supervised oracle can be trained) and
NTHU-style cities, then writes ``synth.json``. Every image has its own RNG derived from
``(seed, domain tag, index)``, so any subset regenerates byte-identically; each dataset
directory is built under a temporary name and renamed into place when complete, and
``synth.json`` (written last) lets a rerun with the same arguments skip everything.
"""

from __future__ import annotations

import functools
import re
import shutil
import time
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from cbst_tf import progress
from cbst_tf.bounds import quote
from cbst_tf.errors import CbstError
from cbst_tf.io import atomic_dir, atomic_write_json, read_json
from cbst_tf.synth import writers
from cbst_tf.synth.domains import SOURCE_STYLE, TARGET_STYLE, city_domain
from cbst_tf.synth.geometry import SOURCE_GEOMETRY, TARGET_GEOMETRY, Geometry
from cbst_tf.synth.scene import render_scene
from cbst_tf.synth.style import Style, render_image

VERSION = "6"
MAX_SIDE = 2048
_CITY_NAME = re.compile(r"^[A-Za-z0-9_-]+$")


def image_rng(seed: int, tag: str, index: int) -> np.random.Generator:
    """The RNG of one image: independent of every other image and of the counts asked for."""
    return np.random.default_rng([seed, zlib.crc32(tag.encode()), index])


StyleOf = Style | Callable[[np.random.Generator], Style]


def render(seed: int, tag: str, index: int, size: tuple[int, int], style: StyleOf,
           geometry: Geometry) -> tuple[np.ndarray, np.ndarray]:
    """One (RGB uint8 (H, W, 3), train ids uint8 (H, W); 255 = ego vehicle) pair.

    ``style`` is a domain's fixed appearance, or a function that draws one per image from the
    image's RNG after its scene (the style-randomised init corpus, :mod:`.stylized`)."""
    rng = image_rng(seed, tag, index)
    scene = render_scene(rng, size[0], size[1], geometry)
    return render_image(scene, style if isinstance(style, Style) else style(rng), rng), scene.labels


def _check(seed: int, size: Sequence[int], counts: dict[str, int], cities: Sequence[str]) -> None:
    if not isinstance(seed, int) or seed < 0:
        raise CbstError(f"--seed: expected a non-negative integer, got {seed!r}")
    if len(size) != 2 or min(size) < 16:
        raise CbstError(f"--size: expected HxW with both sides >= 16 pixels, got {tuple(size)!r}")
    if max(size) > MAX_SIDE:  # rendering holds several float copies of an image in memory
        raise CbstError(f"--size: at most {MAX_SIDE} pixels per side (Cityscapes is 1024x2048), got "
                        f"{size[0]}x{size[1]}")
    for key, n in counts.items():
        if not isinstance(n, int) or n < 1:
            raise CbstError(f"--{key}: expected a positive integer, got {n!r}")
    for city in cities:
        if not _CITY_NAME.match(city):
            raise CbstError(f"--cities: city name {quote(city)} must be letters, digits, '_' or '-'")
    if len(set(cities)) != len(cities):
        raise CbstError(f"--cities: duplicate city names in {quote(list(cities))}")


def read_marker(path: Path) -> dict:
    """A completion marker's contents; {} when it is missing or damaged (then the output is rebuilt)."""
    try:
        return read_json(path) if path.is_file() else {}
    except CbstError:
        return {}


Job = tuple[str, int, StyleOf, Geometry, Callable[..., dict[str, bytes]]]


def build(out: Path, name: str, jobs: list[Job], size: tuple[int, int], seed: int) -> np.ndarray:
    """Render ``jobs`` = (tag, count, style, geometry, files(index, rgb, train_ids)) into
    ``out/name`` atomically; returns the per-class pixel counts (19 train ids) written."""
    pixels = np.zeros(19, np.int64)
    total = sum(job[1] for job in jobs)
    with atomic_dir(out / name) as tmp:
        items = ((job, i) for job in jobs for i in range(job[1]))
        for (tag, _, style, geometry, files), i in progress.track(items, total=total,
                                                                   description=f"synth {name}"):
            rgb, train_ids = render(seed, tag, i, size, style, geometry)
            pixels += np.bincount(train_ids.ravel(), minlength=256)[:19]
            for rel, data in files(i, rgb, train_ids).items():
                writers.write(tmp, rel, data)
    return pixels


def synthesize(out: str | Path, seed: int = 0, size: Sequence[int] = (128, 256), n_source: int = 400,
               n_target: int = 200, n_val: int = 100,
               cities: Sequence[str] = ("Rome", "Rio", "Tokyo", "Taipei"), n_city: int = 100) -> str:
    """Render the benchmark under ``out``; returns a one-line summary.

    ``out/gta5`` (n_source labelled source images), ``out/cityscapes`` (n_target train +
    n_val val target images, all with gtFine), ``out/nthu/<City>`` (n_city unlabelled
    Train + n_city labelled Test images per city) and ``out/synth.json``.
    """
    out = Path(out)
    size = (int(size[0]), int(size[1]))
    cities = list(cities)
    _check(seed, size, {"n-source": n_source, "n-target": n_target, "n-val": n_val, "n-city": n_city}, cities)
    params = {"seed": seed, "size": list(size), "n_source": n_source, "n_target": n_target, "n_val": n_val,
              "cities": cities, "n_city": n_city}
    marker = out / "synth.json"
    if marker.is_file():
        old = read_marker(marker)
        if old.get("version") == VERSION and old.get("params") == params and all(
                (out / d).is_dir() for d in old.get("class_pixels", {})):
            return f"already complete ({old.get('summary', '')})"
        marker.unlink()  # the old output no longer describes what is on disk
    start = time.monotonic()
    tgt = (TARGET_STYLE, TARGET_GEOMETRY)
    pixels = {
        "gta5": build(out, "gta5", [("gta5", n_source, SOURCE_STYLE, SOURCE_GEOMETRY, writers.gta5_files)],
                       size, seed),
        "cityscapes": build(out, "cityscapes", [
            (f"cityscapes/{split}", n, *tgt, functools.partial(writers.cityscapes_files, split))
            for split, n in (("train", n_target), ("val", n_val))], size, seed),
    }
    if cities:
        jobs: list[Job] = [(f"nthu/{city}/{split}", n_city, *city_domain(city),
                            functools.partial(writers.nthu_files, city, split))
                           for city in cities for split in ("train", "test")]
        pixels["nthu"] = build(out, "nthu", jobs, size, seed)
    elif (out / "nthu").is_dir():
        shutil.rmtree(out / "nthu")  # left over from an earlier run with cities
    n_images = n_source + n_target + n_val + 2 * n_city * len(cities)
    seconds = time.monotonic() - start
    summary = (f"gta5 {n_source}, cityscapes {n_target} train + {n_val} val, "
               f"nthu {len(cities)} cities x {n_city} train + {n_city} test, {size[0]}x{size[1]}, "
               f"{n_images} images in {seconds:.1f} s ({n_images / max(seconds, 1e-9):.0f}/s)")
    atomic_write_json(marker, {
        "generator": "cbst_tf.synth", "version": VERSION, "params": params, "seed": seed, "size": list(size),
        "counts": {"gta5": n_source, "cityscapes/train": n_target, "cityscapes/val": n_val,
                   **{f"nthu/{c}/{s}": n_city for c in cities for s in ("train", "test")}},
        "class_pixels": {k: v.tolist() for k, v in pixels.items()}, "summary": summary,
    })
    return summary
