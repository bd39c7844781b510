"""Cost of CRST's regularised finetuning steps against CBST's, as ratios in one run (JSON).

Issue 30 asks that CRST's step (mrkld, mrent, mrl2; lrent's soft cross-entropy) cost at most 5%
more than CBST's. By default the demo preset's network and batch (FCN-8s/VGG16 at width 0.125,
96x192 crops, global batch 8); ``--width 1`` is the full-size FCN-8s of the paper's experiments
(``--model resnet38`` ResNet-38), on the same crops. One fixed batch of random images with half
the examples flagged as target (for LRENT: their soft labels, the others one-hot). Steps of the variants
are interleaved in rounds (CBST, mrkld, mrent, mrl2, lrent; the order rotates by one each round)
and a variant's ratio is the median over rounds of its time divided by CBST's in the same round,
so drift of a shared machine hits every variant alike. Process CPU time
(``--cpu-time``) is less sensitive to other jobs than wall time.

A second measurement isolates the loss: forward and backward of each variant's loss alone on
fixed logits of the step's shape (``loss_ms``, medians over rounds), the per-pixel work the
regularisers add whatever the network.

    python bench/crst_step.py [--rounds 21] [--steps 2] [--cpu-time] [--width 1] [--model resnet38]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from importlib import resources
from pathlib import Path

import numpy as np

KINDS = ("none", "mrkld", "mrent", "mrl2", "lrent")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=21)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--cpu-time", action="store_true")
    parser.add_argument("--width", type=float, default=None, help="model.width (default: the demo's)")
    parser.add_argument("--model", default=None, help="model.name (default: the demo's fcn8s_vgg16)")
    args = parser.parse_args()

    import tensorflow as tf

    from cbst_tf import runtime
    from cbst_tf.config import load_config
    from cbst_tf.models import build_from_config
    from cbst_tf.train.loop import make_train_step
    from cbst_tf.train.optimizer import build_optimizer

    clock = time.process_time if args.cpu_time else time.perf_counter
    preset = Path(str(resources.files("cbst_tf") / "presets" / "demo.yaml"))
    with tempfile.TemporaryDirectory() as tmp:
        sets = [f"runtime.workdir={tmp}/run"]
        sets += [f"model.width={args.width}"] if args.width is not None else []
        sets += [f"model.name={args.model}"] if args.model is not None else []
        cfg = load_config(preset, sets)
    rt = runtime.setup(cfg)
    b, (h, w) = cfg.train.global_batch_size, cfg.data.crop_size
    rng = np.random.default_rng(0)
    images = tf.constant(rng.uniform(0, 255, (b, h, w, 3)).astype("float32"))
    labels = rng.integers(0, cfg.data.num_classes, (b, h, w)).astype("int32")
    labels[:, : h // 3] = 255  # unselected pixels, as in a pseudo-labelled batch
    labels = tf.constant(labels)
    is_target = tf.constant(np.arange(b) % 2 == 1)
    c = cfg.data.num_classes
    soft = rng.dirichlet(np.full(c, 0.2), size=(b, h, w)).astype("float32")
    onehot = np.eye(c, dtype="float32")[np.minimum(labels.numpy(), c - 1)]
    soft = np.where(is_target.numpy()[:, None, None, None], soft, onehot) * (labels.numpy() != 255)[..., None]
    soft = tf.constant(soft)

    steps = {}
    for kind in KINDS:  # one model and optimiser per variant: the same work, separate state
        with rt.strategy.scope():
            model = build_from_config(cfg)
            opt = build_optimizer(cfg, model, total_steps=10_000, round_=1)
        weight = cfg.selftrain.lr_weight if kind == "lrent" else cfg.selftrain.mr_weight
        fn = make_train_step(model, opt, rt.strategy, xla=cfg.runtime.xla,
                             regularizer=None if kind == "none" else (kind, weight))
        batch = {"none": (images, labels), "lrent": (images, labels, soft)}.get(kind, (images, labels, is_target))
        float(fn(batch)[0])  # trace and warm up
        steps[kind] = (fn, batch)

    times: dict[str, list[float]] = {k: [] for k in KINDS}
    order = list(steps)
    for r in range(args.rounds):
        for kind in order[r % len(order):] + order[: r % len(order)]:  # rotate: no variant always first
            fn, batch = steps[kind]
            start = clock()
            for _ in range(args.steps):
                float(fn(batch)[0])
            times[kind].append((clock() - start) / args.steps)
    base = statistics.median(times["none"])
    loss_ms = _loss_only(tf, soft, labels, is_target, c, cfg, args.rounds, clock)
    # Each round's ratio to CBST's time in the SAME round, then the median over rounds: drift of
    # a shared machine cancels within a round.
    paired = {k: statistics.median(t / b for t, b in zip(times[k], times["none"], strict=True))
              for k in KINDS if k != "none"}
    print(json.dumps({
        "model": f"{cfg.model.name} width {cfg.model.width}", "crop": [h, w], "global_batch": b,
        "clock": "process CPU" if args.cpu_time else "wall", "rounds": args.rounds, "steps_per_round": args.steps,
        "cbst_step_s": round(base, 4),
        "ratio_to_cbst": {k: round(v, 3) for k, v in paired.items()},
        "loss_ms": loss_ms,
    }))


def _loss_only(tf, soft, labels, is_target, classes: int, cfg, rounds: int, clock) -> dict[str, float]:
    """Median time (ms) of one forward + backward of each variant's loss on fixed random logits."""
    from cbst_tf.train.crst_loss import regularized_terms, soft_cross_entropy_loss

    rng = np.random.default_rng(1)
    logits = tf.Variable(rng.normal(0, 2, (*labels.shape, classes)).astype("float32"))
    count = tf.constant(float(np.sum(labels.numpy() != 255)))

    def make(kind):
        @tf.function
        def grad():
            with tf.GradientTape() as tape:
                if kind == "lrent":
                    loss = soft_cross_entropy_loss(soft, logits, count)
                else:
                    loss = regularized_terms(labels, logits, is_target, regularizer=kind, weight=cfg.selftrain.mr_weight,
                                             global_count=count, global_reg_count=count)[0]
            return tape.gradient(loss, logits)
        return grad

    fns = {k: make(k) for k in KINDS}
    times: dict[str, list[float]] = {k: [] for k in KINDS}
    for fn in fns.values():
        fn().numpy()
    for _ in range(rounds):
        for kind, fn in fns.items():
            start = clock()
            for _ in range(3):
                fn().numpy()
            times[kind].append((clock() - start) / 3)
    return {k: round(1000 * statistics.median(v), 2) for k, v in times.items()}


if __name__ == "__main__":
    main()
