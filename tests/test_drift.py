"""The embedded benchmark's pixels must not change when a dependency changes.

The renderer draws with OpenCV and numpy; a new release of either can move pixels and labels
(opencv 4.12 and 5.1 differ on 0.01-0.4% of them), and the demo's numbers with them. This test
renders a small fixed sample of the demo's three corpora at the demo's size (source seed 0,
target seed 0, stylised init seed 100) and compares a digest of every image's RGB and train-id
arrays with the golden values below, which were rendered under requirements/lock.txt
(opencv-python-headless 5.1.0.95, numpy 2.4.6).

When it fails: the environment renders another benchmark than the one the demo's tables (README,
docs/RESULTS.md) were measured on. Either install the lock (``make install``), or, on purpose
(``make lock``), re-measure the demo, then update GOLDEN here and those tables together.
"""

from __future__ import annotations

import hashlib

import numpy as np

from cbst_tf.synth.domains import SOURCE_STYLE, TARGET_STYLE
from cbst_tf.synth.generate import render
from cbst_tf.synth.geometry import SOURCE_GEOMETRY, TARGET_GEOMETRY
from cbst_tf.synth.stylized import render_stylized

SIZE = (128, 256)  # the demo preset's synth.size


def rendered() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The sample: 6 source, 8 target and 4 stylised init images, by corpus/tag/index name."""
    out = {}
    for i in range(6):
        out[f"source/gta5/{i}"] = render(0, "gta5", i, SIZE, SOURCE_STYLE, SOURCE_GEOMETRY)
    for i in range(8):
        out[f"target/cityscapes/train/{i}"] = render(0, "cityscapes/train", i, SIZE, TARGET_STYLE, TARGET_GEOMETRY)
    for i in range(4):
        out[f"init/stylized/{i}"] = render_stylized(100, i, SIZE)
    return out


def digest(rgb: np.ndarray, labels: np.ndarray) -> str:
    h = hashlib.sha256()
    for a in (rgb, labels):
        h.update(str((a.dtype.str, a.shape)).encode())
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()[:16]


GOLDEN = {
    "source/gta5/0": "e193a89c376bf4de",
    "source/gta5/1": "1ce38cbd3d276f67",
    "source/gta5/2": "b9d38905d9f2f1cb",
    "source/gta5/3": "0c1cc4d10ba614d6",
    "source/gta5/4": "2a2fccc75588f712",
    "source/gta5/5": "c4bc68bcca0315ab",
    "target/cityscapes/train/0": "e11c14d44266c6ad",
    "target/cityscapes/train/1": "4afe81ca024655d6",
    "target/cityscapes/train/2": "3db04de1ce588b53",
    "target/cityscapes/train/3": "46819d45c023a44f",
    "target/cityscapes/train/4": "3fbd67d244fb5125",
    "target/cityscapes/train/5": "65093e5ad18d607e",
    "target/cityscapes/train/6": "8ddfe2afa928a35e",
    "target/cityscapes/train/7": "b1b4a740ef8caaca",
    "init/stylized/0": "66acba14b9b024e7",
    "init/stylized/1": "2a8357254be168eb",
    "init/stylized/2": "9c5d1deca5498ca6",
    "init/stylized/3": "3f78ed7b35affe5d",
}


def test_benchmark_pixels_match_the_golden_digests():
    got = {name: digest(*pair) for name, pair in rendered().items()}
    changed = sorted(name for name in GOLDEN if got.get(name) != GOLDEN[name])
    assert set(got) == set(GOLDEN), "the sample changed: regenerate GOLDEN (see the module docstring)"
    if changed:
        import cv2

        raise AssertionError(
            f"the embedded benchmark renders differently here: {len(changed)} of {len(GOLDEN)} sample images "
            f"changed ({', '.join(changed)}) under opencv {cv2.__version__}, numpy {np.__version__}. "
            "Install requirements/lock.txt (make install), or re-measure the demo and update GOLDEN in "
            "tests/test_drift.py and the demo's tables (README, docs/RESULTS.md) together.")
