"""How soft are LRENT's pseudo-labels? One JSON object for one round's LRENT label step.

LRENT trains on ``y_k ∝ (v_k / lambda_k)^(1/alpha)``; if ``y`` is nearly one-hot on the selected
pixels, LRENT is CBST in all but name. This rebuilds ``y`` at full resolution from the logits stored
in the round's pseudo-label records (the label step's own ``SoftLabeller``, with the run's spatial
priors for -SP rows) and reports, over the selected pixels: the mean largest ``y_k``, the shares
above 0.99 and below 0.9, and the mean entropy; plus how many more pixels LRENT selected than the
CBST label step of the same round would (``--cbst`` its label directory, same model: round 1).

    python bench/lrent_profile.py demo_out/runs/lrent/round_1/label [--cbst demo_out/runs/cbst/round_1/label]
        [--priors demo_out/runs/source/priors/priors.npy] [--images 200]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import tensorflow as tf

from cbst_tf.data.tfrecord import parse_example, parse_logits
from cbst_tf.io import read_json
from cbst_tf.selftrain.device_ops import ScaledPriors
from cbst_tf.selftrain.logit_cache import probs_from_logits
from cbst_tf.selftrain.soft_labels import SoftLabeller


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("label_dir", type=Path, help="an LRENT round's label step directory")
    ap.add_argument("--cbst", type=Path, help="the CBST label step of the same round and model")
    ap.add_argument("--priors", type=Path, help="the priors.npy of a -SP row")
    ap.add_argument("--images", type=int, default=200)
    args = ap.parse_args()

    manifest = read_json(args.label_dir / "pseudo" / "manifest.json")
    spec = manifest["soft_labels"]
    thresholds = np.array([np.inf if v is None else v for v in spec["thresholds"]])
    labeller = SoftLabeller(thresholds, spec["lr_weight"], len(thresholds))
    grid = None
    if args.priors:
        from cbst_tf.selftrain.priors_step import load_priors

        grid = load_priors(args.priors, len(thresholds))
        grid = (grid / grid.max()).astype(np.float32)  # the label step's normalisation
    top, entropy = [], []
    files = [str(args.label_dir / "pseudo" / s) for s in manifest["shards"]]
    for record in tf.data.TFRecordDataset(files).take(args.images):
        f = parse_example(record)
        size = (int(f["height"]), int(f["width"]))
        priors = None
        if grid is not None:
            import cv2

            priors = ScaledPriors.of(cv2.resize(grid, (size[1], size[0]), interpolation=cv2.INTER_LINEAR))
        y, hard = labeller(probs_from_logits(parse_logits(record, spec["passes"]), size), priors)
        y = y.numpy().reshape(-1, len(thresholds))[hard.numpy().ravel() != 255]
        top.append(y.max(axis=1))
        entropy.append(-np.where(y > 0, y * np.log(np.where(y > 0, y, 1.0)), 0.0).sum(axis=1))
    top_all, ent_all = np.concatenate(top), np.concatenate(entropy)
    out = {"label_dir": str(args.label_dir), "lr_weight": spec["lr_weight"], "images": len(top),
           "selected_pixels": int(top_all.size), "mean_y_max": round(float(top_all.mean()), 5),
           "share_y_max_above_0.99": round(float((top_all > 0.99).mean()), 5),
           "share_y_max_below_0.9": round(float((top_all < 0.9).mean()), 5),
           "mean_entropy_nats": round(float(ent_all.mean()), 5)}
    if args.cbst:
        lrent = sum(read_json(args.label_dir / "stats.json")["selected_pixels"])
        cbst = sum(read_json(args.cbst / "stats.json")["selected_pixels"])
        out.update({"selected_all_images": lrent, "cbst_selected_all_images": cbst,
                    "extra_share": round((lrent - cbst) / max(cbst, 1), 6)})
    print(json.dumps(out))


if __name__ == "__main__":
    main()
