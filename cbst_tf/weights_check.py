"""Does a ``.weights.h5`` file fit the configured network? Checked before Keras loads it.

Keras answers a mismatch with one warning per layer (76 lines for FCN8s-VGG16) and an error
cut mid-sentence. Here the file's array shapes are compared with the model's first, and a
mismatch is one line: what the config expects (network, width, classes) and what the file
holds (parameters, first-layer filters, classes), so the user can tell which setting is off.
"""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path
from typing import Any

from cbst_tf.errors import CbstError


def _file_shapes(path: Path) -> list[tuple[int, ...]] | None:
    """Shapes of every array in a Keras 3 ``.weights.h5`` file (None if it is not one)."""
    import h5py

    shapes: list[tuple[int, ...]] = []
    try:
        with h5py.File(path, "r") as f:
            f.visititems(lambda name, obj: shapes.append(tuple(obj.shape))
                         if isinstance(obj, h5py.Dataset) and "/vars/" in f"/{name}" else None)
    except OSError:
        return None  # not HDF5: let Keras report it
    return shapes


def describe(shapes: list[tuple[int, ...]]) -> dict[str, Any]:
    """Parameters, filters of the first (RGB) convolution and the most common 1x1-kernel output."""
    params = sum(math.prod(s) for s in shapes)
    first = next((s[3] for s in shapes if len(s) == 4 and s[2] == 3), None)
    outs = Counter(s[3] for s in shapes if len(s) == 4 and s[:2] == (1, 1))
    return {"params": params, "first": first, "classes": outs.most_common(1)[0][0] if outs else None}


def check_weights_fit(model: Any, path: str | Path, name: str, width: float, num_classes: int) -> None:
    """One-line CbstError if the arrays in ``path`` cannot be the weights of ``model``."""
    path = Path(path)
    shapes = _file_shapes(path) if path.is_file() else None
    if shapes is None:
        return
    wanted = [tuple(int(d) for d in w.shape) for w in model.weights
              if "seed_generator" not in w.path and "state" not in w.name]
    if Counter(shapes) == Counter(wanted) or not shapes:
        return
    mine, theirs = describe(wanted), describe(shapes)
    holds = [f"{theirs['params']:,} parameters"]
    if theirs["first"] and mine["first"] and abs(mine["first"] - 64 * width) <= 1:  # VGG/ResNet stems: 64
        holds.append(f"{theirs['first']} first-layer filters (width {width * theirs['first'] / mine['first']:.3g})")
    if mine["classes"] == num_classes and theirs["classes"]:  # the heuristic holds for this network
        holds.append(f"{theirs['classes']} classes")
    raise CbstError(f"{path}: weights of {name} width {width:g} with {num_classes} classes expected "
                    f"({mine['params']:,} parameters); the file holds {', '.join(holds)}")
