"""The source model's per-class profile on the labelled target; prints one JSON object.

Self-training can only grow what the source model already gets right with low confidence
(section 4.2), so this is THE measurement behind the embedded benchmark's design: per
class, the share of pixels predicted and labelled, precision, recall, mean confidence
when predicted, mean probability of the true class, and precision among the 20% most
confident predictions (what CBST's first round would select). Compare with the real
shift's profile in ``../shared/notes/source-model-profile.md`` and the paper's Table 3.

    python bench/source_profile.py --demo demo_out [--images 200] [--weights W] [--data DIR]

``--demo DIR`` takes the config, the target-train records and the source model of a
``cbst-tf demo --out DIR`` run; ``--config``/``--weights``/``--data`` pick them by hand.
"""

from __future__ import annotations

import argparse
import itertools
import json
from pathlib import Path

from cbst_tf.config import load_config
from cbst_tf.evaluate.profile import ClassProfile
from cbst_tf.labels import CLASS_NAMES
from cbst_tf.layout import RunLayout


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--demo", type=Path, help="a `cbst-tf demo --out` directory")
    ap.add_argument("--config", type=Path, help="experiment YAML (default: the demo's resolved config)")
    ap.add_argument("--weights", type=Path, help="model weights (default: the demo's source model)")
    ap.add_argument("--data", type=Path, help="labelled target TFRecords (default: the demo's target train)")
    ap.add_argument("--images", type=int, default=200)
    args = ap.parse_args()
    if args.demo is None and not (args.config and args.weights and args.data):
        ap.error("give --demo DIR, or all of --config, --weights and --data")
    config = args.config or args.demo / "demo_config.yaml"
    cfg = load_config(config)
    source_run = RunLayout(args.demo / "runs" / "source") if args.demo else None  # the demo's source model
    weights = args.weights or source_run.final(source_run.pretrain)
    data = args.data or Path(cfg.data.target)

    from cbst_tf.data.reader import eval_dataset
    from cbst_tf.evaluate.configured import load_model
    from cbst_tf.inference import predict_probs

    model = load_model(cfg, weights)
    profile = ClassProfile(cfg.data.num_classes)
    n = 0
    for ex in itertools.islice(eval_dataset(data, cfg.data).as_numpy_iterator(), args.images):
        profile.update(predict_probs(model, ex["image"], input_scale=cfg.data.input_scale), ex["label"])
        n += 1
    result = profile.result(top=0.2)
    rows = {name: {k: (None if v[i] is None else round(v[i], 3)) for k, v in result.items() if isinstance(v, list)}
            for i, name in enumerate(CLASS_NAMES[:cfg.data.num_classes])}
    print(json.dumps({"weights": str(weights), "data": str(data), "images": n, "pixels": result["pixels"],
                      "classes": rows}, indent=1))


if __name__ == "__main__":
    main()
