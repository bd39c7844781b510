"""Domain appearance models: scene maps -> an RGB image, fully vectorised.

A :class:`Style` holds, per class, a base colour, an instance colour spread, grain and
blotch noise amplitudes and a perspective-correct surface pattern (stripes along the
surface's u / v metres and a lattice); per sub-part an override colour (or a palette
picked per instance: traffic-light lamps, sign faces); and the camera pipeline: white
balance, saturation, contrast, gamma, lighting per surface orientation, haze, blur,
vignetting and sensor noise. The concrete source/target/city styles live in
:mod:`cbst_tf.synth.domains`.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import cv2
import numpy as np

from cbst_tf.synth.canvas import NUM_PARTS, SKY, Scene

_TWO_PI = np.float32(2.0 * np.pi)
_PAD = 61  # noise-bank margin: number of distinct crop offsets per axis


@dataclass(frozen=True)
class Look:
    """How one class looks in one domain (colours 0..255, amplitudes in grey levels)."""

    colour: tuple[float, float, float]
    spread: float = 8.0  # std of the per-instance colour offset
    grain: float = 5.0  # per-pixel noise amplitude
    blotch: float = 4.0  # low-frequency noise amplitude
    stripe_u: tuple[float, float] = (0.0, 1.0)  # (amplitude, period in metres) along u
    stripe_v: tuple[float, float] = (0.0, 1.0)  # along v (height, or depth on the ground)
    lattice: tuple[float, float] = (0.0, 1.0)  # diagonal lattice (chain-link, tiles)


@dataclass(frozen=True)
class Style:
    """A complete appearance model; build it with :func:`make_style`."""

    name: str
    colour: np.ndarray  # (256, 3) float32 base colour by train id (255 = ego vehicle)
    spread: np.ndarray  # (256,) float32
    grain: np.ndarray  # (256,)
    blotch: np.ndarray  # (256,)
    pattern: np.ndarray  # (256, 6) amplitude/period of stripe_u, stripe_v, lattice
    part_colour: np.ndarray  # (NUM_PARTS, 3)
    part_mix: np.ndarray  # (NUM_PARTS,) blend weight of the part colour
    part_palette: dict  # part -> (K, 3) colours chosen per instance
    sky_top: np.ndarray  # (3,) sky colour at the top row (the sky's Look is its horizon colour)
    light: np.ndarray  # (5,) gain per surface kind (sky, ground, left facade, right facade, front)
    white_balance: np.ndarray  # (3,) RGB gains
    saturation: float
    contrast: float
    gamma: float
    haze: float  # extinction per metre
    haze_colour: np.ndarray  # (3,)
    blur: float  # Gaussian sigma in pixels at 512 px width
    vignette: float  # relative darkening of the corners
    noise: float  # sensor noise std (grey levels)
    jitter: float  # per-image std of log exposure (a third of it per white-balance channel)
    # Per-image variety of the conditions (weather, time of day): haze, blur and noise are
    # scaled by exp(U(-variety, variety)), saturation by a third and contrast and the
    # directional light by a quarter of that range.
    variety: float = 0.0


def make_style(name: str, looks: dict[int, Look], parts: dict[int, tuple[tuple[float, float, float], float]],
               palettes: dict[int, list[tuple[float, float, float]]], sky_top: tuple[float, float, float],
               light: tuple[float, ...], white_balance: tuple[float, float, float], saturation: float,
               contrast: float, gamma: float, haze: float, haze_colour: tuple[float, float, float],
               blur: float, vignette: float, noise: float, jitter: float, variety: float) -> Style:
    """Pack per-class :class:`Look` objects into look-up tables indexed by train id."""
    colour = np.zeros((256, 3), np.float32)
    spread, grain, blotch = (np.zeros(256, np.float32) for _ in range(3))
    pattern = np.tile(np.array([0, 1, 0, 1, 0, 1], np.float32), (256, 1))
    for c, look in looks.items():
        colour[c] = look.colour
        spread[c], grain[c], blotch[c] = look.spread, look.grain, look.blotch
        pattern[c] = (*look.stripe_u, *look.stripe_v, *look.lattice)
    part_colour = np.zeros((NUM_PARTS, 3), np.float32)
    part_mix = np.zeros(NUM_PARTS, np.float32)
    for p, (rgb, mix) in parts.items():
        part_colour[p], part_mix[p] = rgb, mix
    pal = {p: np.array(v, np.float32) for p, v in palettes.items()}
    f32 = lambda v: np.array(v, np.float32)  # noqa: E731
    return Style(name, colour, spread, grain, blotch, pattern, part_colour, part_mix, pal, f32(sky_top),
                 f32(light), f32(white_balance), saturation, contrast, gamma, haze, f32(haze_colour), blur,
                 vignette, noise, jitter, variety)


def _take(table: np.ndarray, index: np.ndarray) -> np.ndarray:
    return np.take(table, index, axis=0)  # several times faster than fancy indexing


@functools.lru_cache(maxsize=8)
def _noise_bank(h: int, w: int) -> np.ndarray:
    """A fixed standard-normal field larger than the image; each image crops it at random
    offsets (drawn from its own RNG), which is deterministic and ~10x cheaper than
    drawing fresh normals for every pixel of every image."""
    return np.random.default_rng(0x5EED).standard_normal((h + _PAD, w + _PAD), dtype=np.float32)


def _noise(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    oy, ox = (int(v) for v in rng.integers(0, _PAD, 2))
    return _noise_bank(h, w)[oy:oy + h, ox:ox + w]


def _wave(coord: np.ndarray, period: np.ndarray, fade: np.ndarray) -> np.ndarray:
    """A soft square wave of ``coord`` with ``period``, faded out where it would alias."""
    s = np.sin(coord * (_TWO_PI / period))
    keep = np.clip(period * fade - 0.5, 0.0, 1.0)  # period in pixels / 3 below ~1.5 px: drop
    return np.clip(2.5 * s, -1.0, 1.0) * keep


def _texture(scene: Scene, style: Style, rng: np.random.Generator) -> np.ndarray:
    """Grain + blotches + perspective-correct surface patterns as a luminance offset (H, W)."""
    lab = scene.labels
    h, w = lab.shape
    lum = _noise(rng, h, w) * _take(style.grain, lab)
    coarse = rng.standard_normal((h // 12 + 2, w // 12 + 2), dtype=np.float32)
    lum += cv2.resize(coarse, (w, h), interpolation=cv2.INTER_CUBIC) * _take(style.blotch, lab)
    patterned = np.nonzero(np.take(style.pattern[:, [0, 2, 4]].any(axis=1), lab).ravel())[0]
    if patterned.size:
        # Only patterned pixels: sidewalks, facades, walls, fences, some vehicles.
        pat = _take(style.pattern, lab.ravel()[patterned])
        u, v = scene.u.ravel()[patterned], scene.v.ravel()[patterned]
        fade = np.float32(scene.focal / 3.0) / np.maximum(scene.depth.ravel()[patterned], 0.1)
        val = pat[:, 0] * _wave(u, pat[:, 1], fade) + pat[:, 2] * _wave(v, pat[:, 3], fade)
        val += pat[:, 4] * _wave(u + v, pat[:, 5], fade) * _wave(u - v, pat[:, 5], fade)
        lum.ravel()[patterned] += val
    return lum


def render_image(scene: Scene, style: Style, rng: np.random.Generator) -> np.ndarray:
    """Colour a :class:`Scene` with ``style``; returns uint8 RGB (H, W, 3)."""
    lab, inst, part, kind = scene.labels, scene.inst, scene.part, scene.kind
    h = lab.shape[0]
    # Per-instance offsets: a colour shift shared by the whole object (car paint, clothes).
    offsets = rng.standard_normal((256, 3)).astype(np.float32)
    offsets[0] = 0.0  # instance 0 = stuff (road, sidewalk, sky...): no per-object shift
    img = _take(style.colour, lab) + _take(offsets, inst) * _take(style.spread, lab)[..., None]
    sky = kind == SKY
    t = np.clip(np.arange(h, dtype=np.float32) / max(scene.horizon, 1.0), 0.0, 1.0) ** 2
    sky_rows = style.sky_top[None] * (1 - t[:, None]) + style.colour[10][None] * t[:, None]
    np.copyto(img, np.broadcast_to(sky_rows[:, None, :], img.shape), where=sky[..., None])
    for p in range(1, NUM_PARTS):
        m = part == p
        if not m.any():
            continue
        col = style.part_palette[p][inst[m] % len(style.part_palette[p])] if p in style.part_palette \
            else style.part_colour[p]
        a = style.part_mix[p]
        img[m] = img[m] * (1.0 - a) + col * a
    img += _texture(scene, style, rng)[..., None]
    return _camera(img, scene, style, rng)


def _camera(img: np.ndarray, scene: Scene, style: Style, rng: np.random.Generator) -> np.ndarray:
    """Lighting, haze and the camera pipeline of one image (conditions drawn per image)."""
    h, w = img.shape[:2]
    kind, sky = scene.kind, scene.kind == SKY
    vary = np.exp(rng.uniform(-style.variety, style.variety, 6) * np.array([1, 1, 1, 1 / 3, 1 / 4, 1 / 4]))
    haze, blur, noise, saturation, contrast = (float(v) for v in vary[:5] * np.array(
        [style.haze, style.blur, style.noise, style.saturation, style.contrast]))
    light = (1.0 + (style.light - 1.0) * vary[5]).astype(np.float32)
    # Illumination: orientation-dependent light, exposure and vignetting as one spatial
    # gain, distance haze (not on the sky) folded into the same multiply-add.
    gx = np.linspace(-1.0, 1.0, w, dtype=np.float32) ** 2
    gy = np.linspace(-1.0, 1.0, h, dtype=np.float32) ** 2
    gain = (1.0 - style.vignette * np.clip((gx[None, :] + gy[:, None]) / 2.0, 0.0, 1.0)) * _take(light, kind)
    if haze > 0:
        a = 1.0 - np.exp(-scene.depth * np.float32(haze))
        a[sky] = 0.0
        img *= ((1.0 - a) * gain)[..., None]
        img += (a * gain)[..., None] * style.haze_colour
    else:
        img *= gain[..., None]
    # Camera colour pipeline (white balance jittered per image, saturation about the
    # luminance, contrast about mid-grey) is linear: one 3x4 matrix.
    wb = style.white_balance * np.exp(rng.normal(0.0, style.jitter / 3.0, 3) + rng.normal(0.0, style.jitter))
    luma = np.array([[0.299, 0.587, 0.114]] * 3)
    mix = contrast * (saturation * np.eye(3) + (1.0 - saturation) * luma) @ np.diag(wb)
    matrix = np.concatenate([mix, np.full((3, 1), 128.0 * (1.0 - contrast))], 1)
    img = cv2.transform(img, matrix.astype(np.float32))
    if blur > 0:
        img = cv2.GaussianBlur(img, (0, 0), blur * (w / 512.0))
    if noise > 0:
        img += cv2.merge([_noise(rng, h, w) for _ in range(3)]) * np.float32(noise)
    out = np.clip(img, 0.0, 255.0, out=img).astype(np.uint8)
    if style.gamma != 1.0:
        lut = (255.0 * (np.arange(256) / 255.0) ** (1.0 / style.gamma)).round().astype(np.uint8)
        out = cv2.LUT(out, lut)
    return out
