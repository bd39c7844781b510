"""Street objects as fronto-parallel sprites in metric object coordinates.

Each sprite is a handful of polygons/ellipses (lateral offset, height in metres) drawn at
one depth, so its image size follows perspective. Shapes carry the class evidence a
network can transfer across domains (car = body + cabin + window + wheels, person =
head + torso + legs, ...), while colours are left to the domain style.
"""

from __future__ import annotations

import numpy as np

from cbst_tf.synth.canvas import (
    PART_DARK,
    PART_FACE,
    PART_LAMP,
    PART_NONE,
    PART_SKIN,
    PART_TRUNK,
    PART_WINDOW,
    Canvas,
)

# Cityscapes train ids.
(ROAD, SIDEWALK, BUILDING, WALL, FENCE, POLE, LIGHT, SIGN, VEGETATION, TERRAIN, SKY, PERSON, RIDER,
 CAR, TRUCK, BUS, TRAIN, MOTORCYCLE, BICYCLE) = range(19)
EGO = 255  # ego-vehicle bonnet: ignored in evaluation

# Thin things drawn thicker than life (v4): at 128x256 a real 0.13 m pole is 1-3 px wide and a
# pedestrian 20 m away 6 px tall, far below FCN8s' stride of 8, so no network (not even one trained on
# target labels) could learn pole, light, sign, person, rider or two-wheelers, and class-balanced
# selection had nothing to grow on them. Cityscapes at 1024x2048 shows them 8x larger.
THICK = 3.0  # pole widths and the arms' thickness
PLATE = 2.0  # traffic-light boxes and sign faces
FIGURE = 1.5  # pedestrians, riders, bicycles and motorcycles


def _rect(a0: float, a1: float, b0: float, b1: float) -> list[tuple[float, float]]:
    return [(a0, b0), (a1, b0), (a1, b1), (a0, b1)]


def car(c: Canvas, X: float, z: float, s: float, rng: np.random.Generator) -> None:
    """A car seen from behind (or, crossing, from the side)."""
    inst = c.new_inst()
    body, glass, tyre = (c.front_id(X, z, CAR, p, inst) for p in (PART_NONE, PART_WINDOW, PART_DARK))
    h = rng.uniform(1.35, 1.6) * s
    if rng.random() < 0.25:  # side view
        L = rng.uniform(3.8, 4.7) * s
        c.front_poly(X, z, _rect(-L / 2, L / 2, 0.22 * h, 0.62 * h), body)
        c.front_poly(X, z, [(-0.32 * L, 0.6 * h), (0.28 * L, 0.6 * h), (0.16 * L, h), (-0.2 * L, h)], body)
        c.front_poly(X, z, [(-0.28 * L, 0.64 * h), (0.24 * L, 0.64 * h), (0.14 * L, 0.94 * h),
                            (-0.18 * L, 0.94 * h)], glass)
        for a in (-0.3 * L, 0.3 * L):
            c.front_circle(X, z, a, 0.2 * h, 0.2 * h, tyre)
        return
    w = rng.uniform(1.7, 1.95) * s
    c.front_poly(X, z, _rect(-w / 2, w / 2, 0.18 * h, 0.64 * h), body)
    c.front_poly(X, z, [(-0.46 * w, 0.62 * h), (0.46 * w, 0.62 * h), (0.36 * w, h), (-0.36 * w, h)], body)
    c.front_poly(X, z, [(-0.38 * w, 0.68 * h), (0.38 * w, 0.68 * h), (0.31 * w, 0.95 * h),
                        (-0.31 * w, 0.95 * h)], glass)
    c.front_poly(X, z, _rect(-w / 2, -0.3 * w, 0.0, 0.24 * h), tyre)
    c.front_poly(X, z, _rect(0.3 * w, w / 2, 0.0, 0.24 * h), tyre)


def big_vehicle(c: Canvas, X: float, z: float, s: float, label: int, rng: np.random.Generator) -> None:
    """Truck, bus or tram: a tall box with a window band and dark wheels."""
    inst = c.new_inst()
    body, glass, tyre = (c.front_id(X, z, label, p, inst) for p in (PART_NONE, PART_WINDOW, PART_DARK))
    w = {TRUCK: 2.4, BUS: 2.55, TRAIN: 2.65}[label] * s
    h = {TRUCK: 3.4, BUS: 3.1, TRAIN: 3.5}[label] * s * rng.uniform(0.92, 1.08)
    side = rng.random() < 0.4
    half = (rng.uniform(5.0, 9.0) if label == TRUCK else rng.uniform(5.5, 8.0 if label == BUS else 12.0)) * s \
        if side else w / 2
    c.front_poly(X, z, _rect(-half, half, 0.35 * s, h), body)
    if label == TRUCK:
        # cab lower than the cargo box, windscreen in the cab
        cab = (half - 2.2 * s, half) if side else (-half, half)
        c.front_poly(X, z, _rect(cab[0], cab[1], 0.35 * s, 0.8 * h), body)
        c.front_poly(X, z, _rect(cab[0] + 0.2 * s, cab[1] - 0.2 * s, 0.5 * h, 0.72 * h), glass)
    elif label == BUS:
        c.front_poly(X, z, _rect(-half + 0.15 * s, half - 0.15 * s, 0.55 * h, 0.85 * h), glass)
    else:
        n = max(1, int(2 * half / (2.2 * s)))
        for k in range(n):  # separate tram windows
            a0 = -half + (k + 0.2) * 2 * half / n
            c.front_poly(X, z, _rect(a0, a0 + 1.4 * half / n, 0.5 * h, 0.85 * h), glass)
    if side:
        for a in np.linspace(-half * 0.7, half * 0.7, 2 if label != TRAIN else 3):
            c.front_circle(X, z, float(a), 0.45 * s, 0.45 * s, tyre)
    else:
        c.front_poly(X, z, _rect(-half, -half + 0.45 * s, 0.0, 0.5 * s), tyre)
        c.front_poly(X, z, _rect(half - 0.45 * s, half, 0.0, 0.5 * s), tyre)


def person(c: Canvas, X: float, z: float, s: float, rng: np.random.Generator, label: int = PERSON,
           base: float = 0.0, lean: float = 0.0) -> None:
    """A pedestrian (or the body of a rider, raised by ``base`` metres and leaning)."""
    inst = c.new_inst()
    cloth, skin = c.front_id(X, z, label, PART_NONE, inst), c.front_id(X, z, label, PART_SKIN, inst)
    h = rng.uniform(1.6, 1.9) * s * (0.62 if base else 1.0)
    hip = base + (0.48 * h if not base else 0.1 * h)
    top = base + 0.86 * h if not base else base + 0.78 * h
    w = 0.23 * h / (0.62 if base else 1.0)
    c.front_poly(X, z, [(-w, hip), (w, hip), (w * 0.9 + lean, top), (-w * 0.9 + lean, top)], cloth)
    if base:
        c.front_poly(X, z, [(-w, hip), (w * 0.2, hip), (w * 0.5, base - 0.35 * s), (0.0, base - 0.35 * s)],
                     cloth)
    else:
        step = rng.uniform(-0.12, 0.12) * h
        c.front_poly(X, z, [(-w * 0.9, hip), (-0.05 * h, hip), (-0.06 * h + step, 0.0),
                            (-0.16 * h + step, 0.0)], cloth)
        c.front_poly(X, z, [(0.05 * h, hip), (w * 0.9, hip), (0.16 * h - step, 0.0), (0.06 * h - step, 0.0)],
                     cloth)
    c.front_circle(X, z, lean, top + 0.07 * h, 0.075 * h / (0.62 if base else 1.0), skin, ry=0.09 * h /
                   (0.62 if base else 1.0))


def two_wheeler(c: Canvas, X: float, z: float, s: float, label: int, rng: np.random.Generator,
                rider: bool) -> None:
    """A bicycle (ring wheels + frame) or a motorcycle (solid wheels + body), side view."""
    inst = c.new_inst()
    frame, tyre = c.front_id(X, z, label, PART_NONE, inst), c.front_id(X, z, label, PART_DARK, inst)
    d = rng.choice([-1.0, 1.0])
    r = (0.34 if label == BICYCLE else 0.32) * s
    half = (0.55 if label == BICYCLE else 0.7) * s
    for a in (-half, half):
        c.front_circle(X, z, a, r, r, tyre, thickness_m=0.06 * s if label == BICYCLE else 0.0)
    if label == BICYCLE:
        seat, bar = (-0.2 * d * s, 0.85 * s), (0.42 * d * s, 0.95 * s)
        for p, q in ((( -half * d, r), (0.0, r)), ((0.0, r), seat), ((0.0, r), bar), (seat, bar),
                     ((half * d, r), bar), ((-half * d, r), seat)):
            c.front_line(X, z, p, q, 0.05 * s, frame)
    else:
        c.front_poly(X, z, [(-half, 0.45 * s), (half, 0.5 * s), (0.7 * half * d, 1.0 * s),
                            (-0.6 * half * d, 0.9 * s)], frame)
    if rider:
        person(c, X, z, s, rng, label=RIDER, base=0.95 * s, lean=0.18 * d * s)


def pole(c: Canvas, X: float, z: float, s: float, rng: np.random.Generator, kind: str,
         road_dir: float) -> None:
    """A pole carrying a street lamp, a traffic light or a traffic sign."""
    inst = c.new_inst()
    pid = c.front_id(X, z, POLE, PART_NONE, inst)
    h = {"lamp": rng.uniform(6.0, 8.5), "light": rng.uniform(3.5, 5.5), "sign": rng.uniform(2.3, 3.2)}[kind] * s
    w = rng.uniform(0.1, 0.16) * s * THICK
    c.front_poly(X, z, _rect(-w / 2, w / 2, 0.0, h), pid)
    if kind == "lamp":
        arm = rng.uniform(0.8, 2.0) * s * road_dir
        c.front_line(X, z, (0.0, h), (arm, h + 0.3 * s), 0.1 * s * THICK, pid)
        c.front_poly(X, z, _rect(arm - 0.3 * s, arm + 0.3 * s, h + 0.05 * s, h + 0.3 * s), pid)
    elif kind == "light":
        lit = c.new_inst()
        box, lamp = c.front_id(X, z, LIGHT, PART_NONE, lit), c.front_id(X, z, LIGHT, PART_LAMP, lit)
        a = 0.0
        if rng.random() < 0.4:  # mast arm over the road
            a = rng.uniform(2.5, 4.5) * s * road_dir
            c.front_line(X, z, (0.0, h - 0.2 * s), (a, h - 0.2 * s), 0.15 * s * THICK, pid)
        q = s * PLATE
        c.front_poly(X, z, _rect(a - 0.17 * q, a + 0.17 * q, h - 1.0 * q, h), box)
        for k in range(3):
            c.front_circle(X, z, a, h - (0.18 + 0.31 * k) * q, 0.1 * q, lamp)
    else:
        sign = c.new_inst()
        face = c.front_id(X, z, SIGN, PART_FACE, sign)
        shape = rng.integers(3)
        r = rng.uniform(0.3, 0.45) * s * PLATE
        if shape == 0:
            c.front_circle(X, z, 0.0, h, r, face)
        elif shape == 1:
            c.front_poly(X, z, [(-r * 1.1, h + r * 0.7), (r * 1.1, h + r * 0.7), (0.0, h - r * 1.1)], face)
        else:
            c.front_poly(X, z, _rect(-r, r, h - r * 1.3, h + r * 0.7), face)


def tree(c: Canvas, X: float, z: float, s: float, rng: np.random.Generator) -> None:
    """A street tree: a trunk and a crown of overlapping ellipses (all vegetation)."""
    inst = c.new_inst()
    trunk, crown = c.front_id(X, z, VEGETATION, PART_TRUNK, inst), c.front_id(X, z, VEGETATION, PART_NONE, inst)
    h = rng.uniform(2.2, 3.5) * s
    c.front_poly(X, z, _rect(-0.15 * s, 0.15 * s, 0.0, h + 0.5 * s), trunk)
    for _ in range(int(rng.integers(3, 6))):
        c.front_circle(X, z, rng.uniform(-1.2, 1.2) * s, h + rng.uniform(0.8, 2.8) * s,
                       rng.uniform(1.0, 2.0) * s, crown, ry=rng.uniform(0.9, 1.8) * s)
