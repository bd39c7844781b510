"""Run in a child process under one ``TF_ENABLE_ONEDNN_OPTS`` setting (tests/test_fast_conv.py).

TensorFlow reads ``TF_ENABLE_ONEDNN_OPTS`` once, when it loads, so each setting needs its own
process. Prints one JSON object: whether the native dilated gradient exists here, the largest
differences between ``cbst_tf`` ``Conv2D`` and Keras' ``Conv2D`` (outputs and gradients) per
fast path, and the losses of three training steps of each network per precision policy.

    python tests/onednn_check.py
"""

from __future__ import annotations

import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

sys.path.insert(0, os.path.dirname(__file__))
from conv_cases import CASES, compare  # noqa: E402

from cbst_tf.models import build_model  # noqa: E402
from cbst_tf.models.layers import native_dilated_gradient_supported  # noqa: E402
from cbst_tf.train.loop import make_train_step  # noqa: E402


def train_losses(name: str, precision: str, steps: int = 3) -> list[float]:
    """Losses of ``steps`` momentum-SGD steps on one fixed random batch (the project's train step)."""
    keras.mixed_precision.set_global_policy(precision)
    keras.utils.set_random_seed(0)
    try:
        strategy = tf.distribute.get_strategy()
        model = build_model(name, 5, width=0.0625, dropout=0.0)
        opt = keras.optimizers.SGD(0.01, momentum=0.9)
        if precision == "mixed_float16":
            opt = keras.optimizers.LossScaleOptimizer(opt)
        step = make_train_step(model, opt, strategy)
        rng = np.random.default_rng(0)
        images = tf.constant(rng.uniform(0, 255, (2, 48, 64, 3)).astype("float32"))
        labels = tf.constant(rng.integers(0, 5, (2, 48, 64)).astype("int32"))
        return [float(step((images, labels))[0]) for _ in range(steps)]
    finally:
        keras.mixed_precision.set_global_policy("float32")


def main() -> None:
    out = {"onednn_env": os.environ.get("TF_ENABLE_ONEDNN_OPTS"),
           "native_dilated_gradient": native_dilated_gradient_supported(), "conv": {}, "train": {}}
    for case_id, (kernel, kwargs) in CASES.items():
        out["conv"][case_id] = compare(kernel, kwargs)
    for name in ("fcn8s_vgg16", "resnet38"):
        for precision in ("float32", "mixed_bfloat16", "mixed_float16"):
            out["train"][f"{name}/{precision}"] = train_losses(name, precision)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
