"""The demo's last stage: use the adapted model as a user would, with ``export`` and ``predict``.

Exports the CBST-SP model as a SavedModel (``<out>/export/cbst_sp/1``, what ``cbst-tf
export`` writes) and runs ``predict --format overlay`` with the source model and the CBST-SP
model on the first few target-validation images (copied to ``<out>/use/images``), into
``<out>/use/<method>/``; ``adapted_model.png`` shows them side by side. A resumed demo finds
the predictions done (same weights and protocol) and skips them.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import cv2
import numpy as np

from cbst_tf.config import Config

IMAGES = 3
SHOWN = {"source_only": "Source only", "cbst_sp": "CBST-SP"}


def use_adapted_model(cfg: Config, out: Path, weights: dict[str, Path], raw_target: Path) -> dict:
    """Export ``weights['cbst_sp']``, predict overlays of both models; returns the report fields."""
    from cbst_tf.export.run import run_export
    from cbst_tf.predict.inputs import list_images
    from cbst_tf.predict.outputs import output_rel
    from cbst_tf.predict.run import run_predict
    from cbst_tf.report import image_row, save_rgb_png

    exported = run_export(cfg, out / "export" / "cbst_sp", weights=weights["cbst_sp"],
                          command="cbst-tf demo (export cbst_sp)")
    images = out / "use" / "images"
    images.mkdir(parents=True, exist_ok=True)
    for path in list_images(raw_target)[:IMAGES]:
        if not (images / path.name).is_file():
            shutil.copyfile(path, images / path.name)
    for method in SHOWN:
        run_predict(cfg, images, out / "use" / method, weights=weights[method], formats=("overlay",),
                    command=f"cbst-tf demo (predict {method})")
    rows = []
    for path in sorted(images.iterdir()):
        tiles = {"target image": cv2.imread(str(path))[..., ::-1]}
        for method, name in SHOWN.items():
            tiles[name] = cv2.imread(str(out / "use" / method / output_rel(path.name, "overlay")))[..., ::-1]
        rows.append(image_row(tiles))
    save_rgb_png(out / "adapted_model.png", np.concatenate(rows, axis=0))
    return {"saved_model": exported["path"], "predictions": {m: str(out / "use" / m) for m in SHOWN},
            "figure": "adapted_model.png"}


def report_section(use: dict, out: Path) -> list[str]:
    """Markdown lines of the report's "Use the adapted model" section."""
    rel = {k: Path(v).relative_to(out).as_posix() for k, v in use["predictions"].items()}
    return ["## Use the adapted model", "",
            f"CBST-SP exported as a SavedModel for TF Serving: `{Path(use['saved_model']).relative_to(out)}` "
            "(`cbst-tf export`). `cbst-tf predict --format overlay` of the source model "
            f"(`{rel['source_only']}`) and of CBST-SP (`{rel['cbst_sp']}`) on the same target images:", "",
            f"![{use['figure']}]({use['figure']})", ""]
