"""Street layouts: a randomised perspective street rendered to per-pixel scene maps.

One layout model serves both domains (section 4.4 of the paper relies on shared
layouts): a ground plane with road, lane markings, sidewalks and grass strips; facades
of buildings, vegetation, walls and fences on both sides; a distant skyline; and
vehicles, pedestrians, riders, poles, lights, signs and trees placed in metric world
coordinates and scaled by depth. Horizon, vanishing point, road width, which side has
buildings or vegetation, and every object count and position are jittered, so position
alone does not solve the task.
"""

from __future__ import annotations

import numpy as np

from cbst_tf.synth import objects as ob
from cbst_tf.synth.canvas import GROUND, PART_DARK, PART_MARKING, PART_WINDOW, Canvas, Scene, table_column
from cbst_tf.synth.geometry import Geometry


def _u(rng: np.random.Generator, lo_hi: tuple[float, float]) -> float:
    return float(rng.uniform(*lo_hi))


def render_scene(rng: np.random.Generator, h: int, w: int, geo: Geometry) -> Scene:
    """Sample one street layout from ``geo`` and rasterise it at ``h`` x ``w``."""
    f = w * _u(rng, geo.focal)
    cam_h = _u(rng, geo.cam_height)
    y_h = h * _u(rng, geo.horizon)
    x_v = w * (0.5 + rng.uniform(-geo.vp_jitter, geo.vp_jitter))
    c = Canvas(h, w, f, cam_h, y_h, x_v, ob.SKY)
    z_min = f * cam_h / (h - y_h)  # depth of the ground at the bottom image row

    # --- road cross-section: lanes, sidewalks, optional grass strips, facade lines
    lane = rng.uniform(3.0, 3.8)
    n_lanes = int(rng.integers(2, 6))
    left = -(int(rng.integers(0, n_lanes)) * lane + rng.uniform(0.3, 0.7) * lane)
    right = left + n_lanes * lane
    edge = {-1: left, 1: right}
    walk = {s: rng.uniform(1.8, 5.0) for s in (-1, 1)}
    grass = {s: (rng.uniform(1.0, 4.0) if rng.random() < geo.terrain else 0.0) for s in (-1, 1)}
    outer = {s: edge[s] + s * walk[s] for s in (-1, 1)}  # sidewalk outer edge
    front = {s: outer[s] + s * (grass[s] + rng.uniform(0.0, 1.5)) for s in (-1, 1)}

    _skyline(c, rng, f, w)
    for s in (-1, 1):
        far_x = edge[s] + s * 80.0
        c.ground(min(outer[s], far_x), max(outer[s], far_x), 1.0, 3000.0,
                 ob.TERRAIN if grass[s] else ob.SIDEWALK)
        c.ground(min(edge[s], outer[s]), max(edge[s], outer[s]), 1.0, 3000.0, ob.SIDEWALK)
    c.ground(left, right, 1.0, 3000.0, ob.ROAD)
    _facades(c, rng, geo, front, outer)

    # --- objects, painted far to near
    todo: list[tuple[float, int, object]] = []

    def add(z: float, fn: object) -> None:
        todo.append((z, len(todo), fn))

    def zr(near: float, far: float) -> float:
        return float(rng.uniform(z_min + near, max(z_min + near + 1.0, far)))

    def lane_x() -> float:
        return left + (int(rng.integers(0, n_lanes)) + 0.5) * lane + rng.uniform(-0.3, 0.3)

    def side() -> int:
        return int(rng.choice([-1, 1]))

    def scale() -> float:
        return geo.object_scale * rng.uniform(0.92, 1.08)

    n = {k: int(rng.poisson(v)) for k, v in geo.rates.items()}
    for _ in range(n["car"]):
        X, z, s = lane_x(), zr(4.0, 80.0), scale()
        add(z, lambda X=X, z=z, s=s: ob.car(c, X, z, s, rng))
    for _ in range(n["parked"]):
        sd = side()
        X, z, s = edge[sd] - sd * rng.uniform(0.9, 1.3), zr(2.0, 60.0), scale()
        add(z, lambda X=X, z=z, s=s: ob.car(c, X, z, s, rng))
    for label, key in ((ob.TRUCK, "truck"), (ob.BUS, "bus"), (ob.TRAIN, "train")):
        for _ in range(n[key]):
            X, z, s = lane_x(), zr(8.0, 90.0), scale()
            add(z, lambda X=X, z=z, s=s, label=label: ob.big_vehicle(c, X, z, s, label, rng))
    for _ in range(n["person"]):
        sd = side()
        on_road = rng.random() < 0.15
        X = lane_x() if on_road else edge[sd] + sd * rng.uniform(0.3, max(0.4, walk[sd] - 0.3))
        z, s = zr(1.5, 50.0), scale()
        add(z, lambda X=X, z=z, s=s: ob.person(c, X, z, s * ob.FIGURE, rng))
    for label, key, rider in ((ob.BICYCLE, "rider", True), (ob.BICYCLE, "bicycle", False),
                              (ob.MOTORCYCLE, "motorcycle", False)):
        for _ in range(n[key]):
            sd = side()
            lab = label if not rider or rng.random() < 0.6 else ob.MOTORCYCLE
            X = edge[sd] - sd * rng.uniform(0.6, 1.6) if rider else edge[sd] + sd * rng.uniform(0.3, 1.0)
            z, s = zr(3.0, 50.0), scale()
            add(z, lambda X=X, z=z, s=s, lab=lab, rider=rider: ob.two_wheeler(c, X, z, s * ob.FIGURE, lab, rng, rider))
    for key, kind in (("pole", "lamp"), ("light", "light"), ("sign", "sign")):
        for _ in range(n[key]):
            sd = side()
            X, z, s = edge[sd] + sd * rng.uniform(0.3, 0.7), zr(2.0, 70.0), scale()
            add(z, lambda X=X, z=z, s=s, kind=kind, sd=sd: ob.pole(c, X, z, s, rng, kind, -sd))
    for _ in range(n["tree"]):
        sd = side()
        X = outer[sd] + sd * (grass[sd] / 2 if grass[sd] else -rng.uniform(0.4, 0.9))
        z, s = zr(2.0, 70.0), scale()
        add(z, lambda X=X, z=z, s=s: ob.tree(c, X, z, s, rng))
    for _, _, fn in sorted(todo, key=lambda t: (-t[0], t[1])):
        fn()  # type: ignore[operator]

    if rng.random() < geo.hood:
        xs = np.linspace(0.0, w, 17)
        top = h * (1.0 - rng.uniform(0.05, 0.09) * (1.0 - 0.4 * ((xs - w / 2) / (w / 2)) ** 2))
        c.image_poly(np.concatenate([np.stack([xs, top], 1), [[w, h + 2], [0, h + 2]]]), ob.EGO, PART_DARK)

    scene = c.finish()
    crossing = rng.uniform(z_min + 4.0, z_min + 25.0) if rng.random() < 0.3 else None
    _details(scene, c, [left + k * lane for k in range(1, n_lanes)], (left, right), crossing)
    return scene


def _skyline(c: Canvas, rng: np.random.Generator, f: float, w: float) -> None:
    """Distant buildings and tree lines around the vanishing point."""
    z = rng.uniform(150.0, 260.0)
    half = (w / f) * z
    X = -half - 10.0
    while X < half + 10.0:
        width = rng.uniform(8.0, 30.0)
        is_tree = rng.random() < 0.3
        label = ob.VEGETATION if is_tree else ob.BUILDING
        pid = c.front_id(X, z, label, 0, c.new_inst(), 0.0 if is_tree else rng.uniform(2.4, 3.6))
        top = rng.uniform(4.0, 14.0) if is_tree else rng.uniform(6.0, 35.0)
        c.front_poly(X, z, [(0.0, 0.0), (width, 0.0), (width, top), (0.0, top)], pid)
        X += width


def _facades(c: Canvas, rng: np.random.Generator, geo: Geometry, front: dict, outer: dict) -> None:
    """Building / vegetation segments along both sides, then walls and fences in front."""
    backs: list[tuple] = []
    lows: list[tuple] = []
    for s in (-1, 1):
        p_building = _u(rng, geo.building_side)
        z = 1.0
        while z < 180.0:
            length = rng.uniform(6.0, 22.0)
            z0, z1 = z, z + length
            r = rng.random()
            if r < p_building:
                X = front[s] + s * (rng.uniform(0.0, 2.0) if rng.random() < 0.3 else 0.0)
                backs.append((z0, X, z1, rng.uniform(7.0, 28.0), ob.BUILDING, rng.uniform(2.4, 3.6)))
            elif r < p_building + (1 - p_building) * 0.75:
                X = front[s] + s * rng.uniform(0.0, 2.5)
                backs.append((z0, X, z1, rng.uniform(3.0, 10.0, size=5), ob.VEGETATION, 0.0))
            if rng.random() < geo.wall:
                a = rng.uniform(z0, z1 - 2.0)
                lows.append((a, outer[s] + s * 0.15, min(z1, a + rng.uniform(4.0, 15.0)),
                             rng.uniform(0.8, 2.5), ob.WALL, 0.0))
            if rng.random() < geo.fence:
                a = rng.uniform(z0, z1 - 2.0)
                lows.append((a, outer[s] + s * 0.1, min(z1, a + rng.uniform(4.0, 18.0)),
                             rng.uniform(0.9, 1.6), ob.FENCE, 0.0))
            z = z1
    for group in (backs, lows):
        for z0, X, z1, top, label, param in sorted(group, key=lambda t: -t[0]):
            c.facade(X, z0, z1, top, label, c.new_inst(), param)


def _details(scene: Scene, c: Canvas, lanes: list[float], road: tuple[float, float],
             crossing: float | None) -> None:
    """Perspective-correct surface details: facade windows and road markings."""
    labels, kind = scene.labels.ravel(), scene.kind.ravel()
    u, v, part = scene.u.ravel(), scene.v.ravel(), scene.part.ravel()
    # Work on index subsets (facades, road) rather than whole images: this is per image.
    period = table_column(c, 6)
    idx = np.nonzero((labels == ob.BUILDING) & (kind != GROUND))[0]
    idx = idx[(v[idx] > 3.2) & (np.take(period, c.prim.ravel()[idx]) > 0)]
    pu = np.take(period, c.prim.ravel()[idx])
    fu, fv = np.mod(u[idx] / pu, 1.0), np.mod(v[idx] / 3.2, 1.0)
    part[idx[(fu > 0.25) & (fu < 0.75) & (fv > 0.3) & (fv < 0.8)]] = PART_WINDOW
    idx = np.nonzero((labels == ob.ROAD) & (kind == GROUND))[0]
    ru, rv = u[idx], v[idx]
    dashes = np.mod(rv / 9.0, 1.0) < 0.4
    mark = np.zeros(idx.shape, bool)
    for X in lanes:
        mark |= (np.abs(ru - X) < 0.08) & dashes
    for X in road:
        mark |= np.abs(ru - X) < 0.15
    if crossing is not None:
        mark |= (rv > crossing) & (rv < crossing + 3.0) & (np.mod(ru / 1.1, 1.0) < 0.5)
    part[idx[mark]] = PART_MARKING
