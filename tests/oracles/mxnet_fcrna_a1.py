"""Oracle run under a Python that has MXNet 1.9.1 (test-only; never a cbst-tf dependency).

Usage: python mxnet_fcrna_a1.py PARAMS IMAGE.npy CLASSES WIDTH OUT.npy

Builds the official ``fcrna_model_a1`` graph (feature stride 8) with MXNet symbols, in the
structure of itijyou/ademxapp ``resnet_v2.py`` with CBST's BatchNorm (eps 1.001e-5,
``use_global_stats``), loads PARAMS with ``mx.nd.load`` and writes the stride-8 logits of
IMAGE (N, H, W, 3) RGB 0..255 as (N, h, w, C) float32 to OUT.npy. Also re-saves PARAMS with
``mx.nd.save`` to OUT.npy + ".resaved.params" so the caller can compare bytes.
"""

import os
import sys

import mxnet as mx
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from mxnet_reference import EPS, MEAN, STD, official_units  # noqa: E402


def conv(x, name, filters, kernel, stride=1, dilate=1, bias=False):
    if kernel == 1:
        dilate = 1
    pad = ((kernel - 1) * dilate + 1) // 2
    kwargs = dict(kernel=(kernel, kernel), stride=(stride, stride), dilate=(dilate, dilate), pad=(pad, pad),
                  num_filter=filters, no_bias=not bias, name=name)
    weight = mx.sym.Variable(f"{name}_weight")
    if bias:
        return mx.sym.Convolution(x, weight=weight, bias=mx.sym.Variable(f"{name}_bias"), **kwargs)
    return mx.sym.Convolution(x, weight=weight, **kwargs)


def bn_relu(x, name):
    x = mx.sym.BatchNorm(x, name=name, eps=EPS, fix_gamma=False, use_global_stats=True)
    return mx.sym.Activation(x, act_type="relu")


def network(classes, width):
    x = mx.sym.Variable("data")
    x = conv(x, "conv1a", max(1, int(round(64 * width))), 3)
    for name, filters, kernels, stride, dil, project in official_units(width):
        block = bn_relu(x, f"bn{name}_branch2a")
        branch = conv(block, f"res{name}_branch2a", filters[0], kernels[0], stride, dil[0])
        for i in range(1, len(filters)):
            branch = conv(bn_relu(branch, f"bn{name}_branch2b{i}"), f"res{name}_branch2b{i}", filters[i],
                          kernels[i], 1, dil[i])
        short = conv(block, f"res{name}_branch1", filters[-1], 1, stride) if project else x
        x = short + branch
    x = bn_relu(x, "bn7")
    x = mx.sym.Activation(conv(x, "conv6a", max(1, int(round(512 * width))), 3, 1, 12, bias=True), act_type="relu")
    return conv(x, f"linear{classes}", classes, 3, 1, 12, bias=True)


def main():
    params, image, classes, width, out = sys.argv[1:6]
    classes, width = int(classes), float(width)
    loaded = mx.nd.load(params)
    mx.nd.save(out + ".resaved.params", loaded)
    args = {k[4:]: v for k, v in loaded.items() if k.startswith("arg:")}
    auxs = {k[4:]: v for k, v in loaded.items() if k.startswith("aux:")}
    img = np.load(image).astype(np.float64)
    data = ((img / 255.0 - MEAN) / STD).transpose(0, 3, 1, 2).astype(np.float32)
    sym = network(classes, width)
    args["data"] = mx.nd.array(data)
    ex = sym.bind(mx.cpu(), args, aux_states=auxs, grad_req="null")
    logits = ex.forward(is_train=False)[0].asnumpy()
    np.save(out, logits.transpose(0, 2, 3, 1).astype(np.float32))


if __name__ == "__main__":
    main()
