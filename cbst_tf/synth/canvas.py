"""A pinhole-camera painter that rasterises street primitives into per-pixel scene maps.

Every drawn primitive gets an id in a uint16 map (painter's algorithm: later = nearer)
and a row in a small table (class, sub-part, instance, surface kind, plane). The final
per-pixel maps are table look-ups, and the metric surface coordinates (u, v) used for
perspective-correct textures are solved analytically per surface kind, so the whole
rasterisation is a few hundred cv2 calls plus vectorised numpy - no per-pixel Python.

Camera: focal ``f`` px, height ``cam_h`` m, horizon row ``y_h``, vanishing column ``x_v``.
A world point (X lateral, Y up, z forward) maps to ``x = x_v + f X / z``,
``y = y_h + f (cam_h - Y) / z``.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

# Surface kinds: how (depth, u, v) are recovered per pixel.
SKY, GROUND, FACADE_L, FACADE_R, FRONT = 0, 1, 2, 3, 4
# Sub-part codes shared by both domains (the style decides their appearance).
PART_NONE, PART_WINDOW, PART_DARK, PART_MARKING, PART_LAMP, PART_SKIN, PART_TRUNK, PART_FACE = range(8)
NUM_PARTS = 8
SKY_DEPTH = 1000.0
_SHIFT = 3  # cv2 sub-pixel bits
_ONE = 1 << _SHIFT
_LIMIT = 2.0e5  # clamp projected coordinates (points very close to the camera)


@dataclass
class Scene:
    """Per-pixel description of one rendered street scene (no colours yet)."""

    labels: np.ndarray  # uint8 (H, W) Cityscapes train ids; 255 = ignored (ego vehicle)
    depth: np.ndarray  # float32 (H, W) metres along the optical axis
    part: np.ndarray  # uint8 (H, W) sub-part code (PART_*)
    inst: np.ndarray  # uint8 (H, W) instance id (mod 256) for per-object colour variation
    kind: np.ndarray  # uint8 (H, W) surface kind (SKY, GROUND, FACADE_L/R, FRONT)
    u: np.ndarray  # float32 (H, W) horizontal surface coordinate in metres
    v: np.ndarray  # float32 (H, W) vertical surface coordinate (height, or depth on the ground)
    horizon: float  # horizon row in pixels
    focal: float  # focal length in pixels (texture anti-aliasing needs metres per pixel)


class Canvas:
    """Collects primitives for one image; :meth:`finish` turns them into a :class:`Scene`."""

    def __init__(self, h: int, w: int, f: float, cam_h: float, y_h: float, x_v: float, sky: int):
        self.h, self.w, self.f, self.cam_h, self.y_h, self.x_v = h, w, f, cam_h, y_h, x_v
        self.prim = np.zeros((h, w), np.uint16)
        # columns: label, part, inst, kind, plane (X of a facade / z of a front), ox, param
        self.rows: list[tuple[int, int, int, int, float, float, float]] = [
            (sky, PART_NONE, 0, SKY, 0.0, 0.0, 0.0)
        ]
        self.n_inst = 0

    # ------------------------------------------------------------------ ids and projection
    def new_inst(self) -> int:
        self.n_inst += 1
        return self.n_inst % 256

    def _id(self, label: int, part: int, inst: int, kind: int, plane: float = 0.0,
            ox: float = 0.0, param: float = 0.0) -> tuple[int]:
        if len(self.rows) >= 65535:  # table full: reuse the last id rather than overflow
            return (len(self.rows) - 1,)
        self.rows.append((label, part, inst, kind, plane, ox, param))
        return (len(self.rows) - 1,)

    def project(self, X: np.ndarray, Y: np.ndarray, z: np.ndarray) -> np.ndarray:
        """World points -> fixed-point int32 pixel coordinates (N, 2) for cv2."""
        z = np.maximum(np.asarray(z, np.float64), 1e-3)
        x = self.x_v + self.f * np.asarray(X, np.float64) / z
        y = self.y_h + self.f * (self.cam_h - np.asarray(Y, np.float64)) / z
        pts = np.stack(np.broadcast_arrays(x, y), -1)
        return np.round(np.clip(pts, -_LIMIT, _LIMIT) * _ONE).astype(np.int32)

    # ------------------------------------------------------------------ surfaces
    def ground(self, x0: float, x1: float, z0: float, z1: float, label: int, part: int = PART_NONE) -> None:
        """A strip of the ground plane, lateral [x0, x1] m, depth [z0, z1] m."""
        pts = self.project([x0, x1, x1, x0], 0.0, [z0, z0, z1, z1])
        cv2.fillPoly(self.prim, [pts], self._id(label, part, 0, GROUND), cv2.LINE_8, _SHIFT)

    def facade(self, X: float, z0: float, z1: float, top: np.ndarray | float, label: int,
               inst: int = 0, param: float = 0.0, bottom: float = 0.0) -> None:
        """A vertical surface parallel to the street at lateral ``X``; ``top`` may be a
        profile of heights sampled uniformly in depth from ``z0`` to ``z1``."""
        top = np.atleast_1d(np.asarray(top, np.float64))
        zs = np.linspace(z0, z1, max(len(top), 2))
        tops = np.broadcast_to(top, zs.shape) if len(top) == 1 else top
        zz = np.concatenate([[z0, z1], zs[::-1]])
        yy = np.concatenate([[bottom, bottom], tops[::-1]])
        pts = self.project(X, yy, zz)
        kind = FACADE_L if X < 0 else FACADE_R
        cv2.fillPoly(self.prim, [pts], self._id(label, PART_NONE, inst, kind, X, 0.0, param),
                     cv2.LINE_8, _SHIFT)

    # ------------------------------------------------------------------ fronto-parallel objects
    def front_id(self, X: float, z: float, label: int, part: int, inst: int, param: float = 0.0) -> tuple[int]:
        return self._id(label, part, inst, FRONT, z, self.f * X / max(z, 1e-3), param)

    def front_poly(self, X: float, z: float, pts_m: list[tuple[float, float]], pid: tuple[int]) -> None:
        """A polygon given in object-local metres (lateral offset, height) at depth ``z``."""
        a = np.array(pts_m, np.float64)
        cv2.fillPoly(self.prim, [self.project(X + a[:, 0], a[:, 1], z)], pid, cv2.LINE_8, _SHIFT)

    def front_circle(self, X: float, z: float, a: float, b: float, r: float, pid: tuple[int],
                     thickness_m: float = 0.0, ry: float | None = None) -> None:
        """A filled (or, with ``thickness_m``, ring) ellipse in object-local metres."""
        cx, cy = self.project(X + a, b, z).reshape(-1, 2)[0]
        s = self.f / max(z, 1e-3)
        axes = (max(int(r * s * _ONE), 1), max(int((ry if ry is not None else r) * s * _ONE), 1))
        thick = -1 if thickness_m <= 0 else max(1, int(round(thickness_m * s)))
        cv2.ellipse(self.prim, (int(cx), int(cy)), axes, 0, 0, 360, pid, thick, cv2.LINE_8, _SHIFT)

    def front_line(self, X: float, z: float, p: tuple[float, float], q: tuple[float, float],
                   width_m: float, pid: tuple[int]) -> None:
        s = self.f / max(z, 1e-3)
        (a, b) = self.project(X + np.array([p[0], q[0]]), np.array([p[1], q[1]]), z)
        cv2.line(self.prim, tuple(int(t) for t in a), tuple(int(t) for t in b), pid,
                 max(1, int(round(width_m * s))), cv2.LINE_8, _SHIFT)

    def image_poly(self, pts_px: np.ndarray, label: int, part: int) -> None:
        """A polygon in pixel coordinates at the nearest depth (the ego-vehicle bonnet)."""
        pts = np.round(np.asarray(pts_px, np.float64) * _ONE).astype(np.int32)
        cv2.fillPoly(self.prim, [pts], self._id(label, part, 0, FRONT, 1.0, 0.0), cv2.LINE_8, _SHIFT)

    # ------------------------------------------------------------------ per-pixel maps
    def finish(self) -> Scene:
        table = np.array(self.rows, np.float64)
        p = self.prim
        # np.take is several times faster than fancy indexing for these look-ups
        labels, part, inst, kind = (np.take(table[:, k].astype(np.uint8), p) for k in range(4))
        plane, ox = (np.take(table[:, k].astype(np.float32), p) for k in (4, 5))
        dx = (np.arange(self.w, dtype=np.float32) - np.float32(self.x_v))[None, :]
        dy = (np.arange(self.h, dtype=np.float32) - np.float32(self.y_h))[:, None]
        f = np.float32(self.f)
        z_ground = np.broadcast_to(f * np.float32(self.cam_h) / np.maximum(dy, 0.5), p.shape)
        facade = (kind == FACADE_L) | (kind == FACADE_R)
        safe_dx = np.where(np.abs(dx) < 0.5, np.copysign(0.5, dx), dx)
        depth = np.where(kind == GROUND, z_ground, plane)
        depth = np.where(facade, np.abs(f * plane / safe_dx), depth)
        depth = np.where(kind == SKY, np.float32(SKY_DEPTH), np.minimum(depth, SKY_DEPTH))
        depth = depth.astype(np.float32)
        lateral = (dx - ox) * depth / f
        height = np.float32(self.cam_h) - dy * depth / f
        u = np.where(facade, depth, lateral).astype(np.float32)
        v = np.where(kind == GROUND, depth, height).astype(np.float32)
        return Scene(labels, depth, part, inst, kind, u, v, float(self.y_h), float(self.f))


def table_column(canvas: Canvas, col: int) -> np.ndarray:
    """One column of the primitive table (e.g. the per-primitive ``param``)."""
    return np.array([r[col] for r in canvas.rows], np.float32)
