"""Per-domain camera and scene-statistics models of the synthetic street benchmark.

Both domains share one perspective street layout (so the spatial priors of paper
section 4.4 carry real information), but their cameras and object statistics differ,
as GTA5 and Cityscapes do: the game camera sits higher with a more varied pitch, its
objects are larger and vehicles more frequent; the target camera is a low car-mounted
camera that sees its own bonnet (Cityscapes' ignored "ego vehicle" region).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace


@dataclass(frozen=True)
class Geometry:
    """How street layouts of one domain are sampled (all ranges are uniform)."""

    horizon: tuple[float, float]  # horizon row as a fraction of the image height
    cam_height: tuple[float, float]  # metres above the ground
    focal: tuple[float, float] = (0.9, 1.1)  # focal length as a fraction of the image width
    vp_jitter: float = 0.10  # vanishing-point offset, fraction of the image width
    object_scale: float = 1.0  # multiplies every object's metric size
    # Expected number of each object kind per image (Poisson rates).
    rates: dict[str, float] = field(default_factory=dict)
    building_side: tuple[float, float] = (0.35, 0.9)  # per-side probability of a building segment
    wall: float = 0.18  # probability of a wall in front of a facade segment
    fence: float = 0.15  # probability of a fence along a sidewalk segment
    terrain: float = 0.45  # probability of a grass strip between sidewalk and facades
    hood: float = 0.0  # probability that the ego-vehicle bonnet is visible (label ignored)

    def scaled(self, **multipliers: float) -> Geometry:
        """A copy with some object rates multiplied (city-specific statistics)."""
        rates = {k: v * multipliers.get(k, 1.0) for k, v in self.rates.items()}
        return replace(self, rates=rates)


_BASE_RATES = {
    "car": 5.0, "parked": 3.0, "truck": 0.4, "bus": 0.4, "train": 0.18, "person": 3.0,
    "rider": 0.9, "bicycle": 0.8, "motorcycle": 0.45, "pole": 2.6, "light": 1.3, "sign": 1.6,
    "tree": 2.5,
}

#: "The game": higher camera with a widely varying pitch, larger vehicles, more traffic.
SOURCE_GEOMETRY = Geometry(
    horizon=(0.32, 0.50), cam_height=(1.9, 2.8), vp_jitter=0.13, object_scale=1.12,
    rates={**_BASE_RATES, "car": 6.5, "truck": 0.5, "bus": 0.55, "person": 2.2, "rider": 0.8,
           "bicycle": 0.5, "tree": 2.0},
    building_side=(0.45, 0.95), terrain=0.35,
)

#: "The real city": low car-mounted camera, bonnet in view, more pedestrians and bicycles.
TARGET_GEOMETRY = Geometry(
    horizon=(0.38, 0.50), cam_height=(1.25, 1.7), vp_jitter=0.08, object_scale=0.95,
    rates={**_BASE_RATES, "parked": 4.0, "person": 4.0, "rider": 1.0, "bicycle": 1.3,
           "motorcycle": 0.35, "pole": 3.0, "sign": 2.0, "tree": 3.5},
    building_side=(0.3, 0.85), terrain=0.5, hood=1.0,
)
