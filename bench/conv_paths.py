"""Which convolution algorithm wins where, with TensorFlow's oneDNN on and off, in one run (JSON).

``cbst_tf.models.layers.Conv2D`` computes some stride-1 convolutions with another op than
Keras' ``Conv2D`` (docs/PERFORMANCE.md). Whether that pays depends on the kernels TensorFlow
runs: with oneDNN (on by default only for CPUs with AVX512_VNNI, AVX512_BF16 or AMX) or with
its Eigen kernels (every other x86 CPU, or ``TF_ENABLE_ONEDNN_OPTS=0``). This script times each
special case of the layer against Keras' path at the published networks' shapes (width 1.0,
512x1024 input), forward and forward+backward, in two child processes (``TF_ENABLE_ONEDNN_OPTS``
= 0 and 1) started from the same run, and prints one JSON object with ms per call, the
speed-up of the fast path (``keras_ms / ours_ms``) and the path the layer picks on that
setting. A path whose op raises (e.g. the native dilated gradient without oneDNN) is reported
as ``"unsupported"`` with TensorFlow's one-line reason.

    python bench/conv_paths.py [--scale 1.0] [--repeats 3] [--onednn 0,1] [--threads 1 --cpu-time]

``--scale 0.5`` halves every map side (4x less work; the default takes about 3 minutes on 2 cores).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

# (name, what it is, input NHWC at 512x1024 and width 1.0, filters, kernel, layer kwargs)
CASES = [
    ("fcn_fc6_patches", "FCN8s fc6, 7x7 512->4096 on the 1/32 map (padded input)",
     (1, 22, 38, 512), 4096, 7, {"padding": "same", "patches": True}),
    ("resnet38_1x1", "ResNet-38 B7 1x1 2048->4096 at stride 8",
     (1, 64, 128, 2048), 4096, 1, {}),
    ("resnet38_1x1_s2", "ResNet-38 B4 projection shortcut, 1x1 stride 2, 256->512",
     (1, 128, 256, 256), 512, 1, {"strides": 2}),
    ("resnet38_d4", "ResNet-38 B6 3x3 dilation 4, 512->1024 at stride 8",
     (1, 64, 128, 512), 1024, 3, {"padding": "same", "dilation_rate": 4}),
    ("resnet38_head_d12", "ResNet-38 head 3x3 dilation 12, 4096->512 at stride 8",
     (1, 64, 128, 4096), 512, 3, {"padding": "same", "dilation_rate": 12}),
]


def _time(fn, repeats: int) -> float:
    """Best ms of ``repeats`` calls after a warm-up: wall time, or with ``--cpu-time`` the
    process's CPU time (all threads), which another load on the machine barely moves."""
    clock = time.process_time if os.environ.get("BENCH_CPU_TIME") == "1" else time.perf_counter
    fn()  # tracing and the first (allocation-heavy) call
    best = float("inf")
    for _ in range(repeats):
        t = clock()
        fn()
        best = min(best, clock() - t)
    return best * 1e3


def _measure(label: str, layer, variables: list, x, repeats: int) -> dict:
    """ms per forward and per forward+backward call of ``layer`` on ``x`` (or why it cannot run)."""
    import tensorflow as tf

    def fwd_bwd(t):
        with tf.GradientTape() as tape:
            tape.watch(t)
            loss = tf.reduce_sum(layer(t))
        return tape.gradient(loss, [t, *variables])

    out = {}
    for kind, fn in (("forward_ms", tf.function(layer)), ("train_ms", tf.function(fwd_bwd))):
        try:
            out[f"{label}_{kind}"] = round(_time(lambda fn=fn: [v.numpy() for v in tf.nest.flatten(fn(x))],
                                                 repeats), 2)
        except (tf.errors.InvalidArgumentError, tf.errors.UnimplementedError) as exc:
            out[f"{label}_{kind}"] = "unsupported: " + exc.message.split("\n")[0].split("}}")[-1].strip()[:120]
    return out


def _child(scale: float, repeats: int) -> dict:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras
    import numpy as np
    import tensorflow as tf

    from cbst_tf.models import layers

    out = {"native_dilated_gradient": layers.native_dilated_gradient_supported(), "cases": []}
    for name, what, shape, filters, kernel, kwargs in CASES:
        n, h, w, c = shape
        shape = (n, max(int(h * scale), 8), max(int(w * scale), 8), c)
        x = tf.constant(np.random.default_rng(0).normal(size=shape).astype("float32"))
        ours = layers.Conv2D(filters, kernel, **kwargs)
        ref = keras.layers.Conv2D(filters, kernel, **{k: v for k, v in kwargs.items() if k != "patches"})
        ours.build(shape)
        ref.build(shape)
        ref.set_weights(ours.get_weights())
        row = {"case": name, "what": what, "input": list(shape), "filters": filters}
        paths = {"ours": (ours, ours.trainable_variables), "keras": (ref, ref.trainable_variables)}
        if kwargs.get("dilation_rate", 1) >= 8:
            # The native kernel on its own, whichever path the layer picks on this machine.
            rate = kwargs["dilation_rate"]
            paths["native"] = (lambda t, k=ref.kernel, r=rate: tf.nn.conv2d(t, k, 1, "SAME", dilations=r),
                               [ref.kernel])
        for label, (layer, variables) in paths.items():
            row.update(_measure(label, layer, variables, x, repeats))
        for kind in ("forward_ms", "train_ms"):
            a, b = row.get(f"keras_{kind}"), row.get(f"ours_{kind}")
            if isinstance(a, float) and isinstance(b, float):
                row[f"speedup_{kind[:-3]}"] = round(a / b, 3)
        out["cases"].append(row)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--scale", type=float, default=1.0, help="factor on every map side")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--onednn", default="0,1", help="TF_ENABLE_ONEDNN_OPTS values to run, in this order")
    p.add_argument("--cpu-time", action="store_true",
                   help="time by process CPU time (use with --threads 1 on a loaded machine)")
    p.add_argument("--threads", type=int, default=0, help="TF intra-op threads (0: TF's default)")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        print(json.dumps(_child(args.scale, args.repeats)))
        return
    result = {"scale": args.scale, "cpu_count": os.cpu_count(), "threads": args.threads,
              "clock": "process CPU time" if args.cpu_time else "wall", "runs": {}}
    for value in args.onednn.split(","):
        env = {**os.environ, "TF_ENABLE_ONEDNN_OPTS": value, "BENCH_CPU_TIME": "1" if args.cpu_time else "0"}
        if args.threads:
            env.update(TF_NUM_INTRAOP_THREADS=str(args.threads), TF_NUM_INTEROP_THREADS=str(args.threads))
        proc = subprocess.run([sys.executable, __file__, "--child", "--scale", str(args.scale),
                               "--repeats", str(args.repeats)], env=env, capture_output=True, text=True)
        if proc.returncode:
            result["runs"][f"onednn_{value}"] = {"error": proc.stderr.strip().splitlines()[-1:]}
            continue
        result["runs"][f"onednn_{value}"] = json.loads(proc.stdout.strip().splitlines()[-1])
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
