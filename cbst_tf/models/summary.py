"""``cbst-tf model summary``: layers, parameter count and FLOPs of the configured network.

FLOPs are counted analytically from the layers at a fixed input size, per image, as
``2 x multiply-accumulates`` of the layers that do dense arithmetic:

- ``Conv2D``: ``2 * kh * kw * c_in * c_out * H_out * W_out`` (dilation does not change it);
- ``Conv2DTranspose``: ``2 * kh * kw * c_in * c_out * H_in * W_in`` (every input pixel
  scatters a full kernel);
- ``Dense``: ``2 * n_in * n_out`` per position.

Not counted (memory-bound, a small fraction): bias additions, BatchNorm, ReLU, pooling,
residual/skip additions, dropout, normalisation and the final bilinear resize.
"""

from __future__ import annotations

import json
import math
from typing import Any

import keras

from cbst_tf.models import build_from_config


def layer_flops(layer: keras.layers.Layer) -> int:
    """FLOPs (2 x MACs) of one call of ``layer`` on one image; 0 for uncounted layers."""
    if isinstance(layer, keras.layers.Conv2DTranspose):
        _, h, w, _ = layer.input.shape
        return 2 * math.prod(layer.kernel.shape) * h * w
    if isinstance(layer, keras.layers.Conv2D):
        _, h, w, _ = layer.output.shape
        return 2 * math.prod(layer.kernel.shape) * h * w
    if isinstance(layer, keras.layers.Dense):
        positions = math.prod(layer.input.shape[1:-1])
        return 2 * math.prod(layer.kernel.shape) * positions
    return 0


def model_flops(model: keras.Model) -> int:
    """Sum of :func:`layer_flops` over a model built with a static input size."""
    return sum(layer_flops(layer) for layer in model.layers)


def print_summary(cfg: Any, input_hw: tuple[int, int], as_json: bool = False) -> dict:
    """Print the network of ``cfg`` at ``input_hw``; return ``{name, params, flops, input}``.

    Without ``as_json`` a per-layer table (name, type, output shape, parameters, GFLOPs);
    with it exactly one JSON object on stdout.
    """
    h, w = (int(v) for v in input_hw)
    model = build_from_config(cfg, init=False, input_hw=(h, w))
    result = {"name": cfg.model.name, "params": int(model.count_params()),
              "flops": int(model_flops(model)), "input": [h, w]}
    if as_json:
        print(json.dumps(result))
        return result
    print(f"{'layer':<28} {'type':<20} {'output':<22} {'params':>12} {'GFLOPs':>9}")
    for layer in model.layers:
        shape = "x".join(str(d) for d in layer.output.shape[1:])
        print(f"{layer.name:<28} {type(layer).__name__:<20} {shape:<22} "
              f"{layer.count_params():>12,} {layer_flops(layer) / 1e9:>9.3f}")
    print(f"{cfg.model.name} width {cfg.model.width:g}, {cfg.data.num_classes} classes, input {h}x{w}: "
          f"{result['params']:,} parameters, {result['flops'] / 1e9:.2f} GFLOPs per image")
    return result
