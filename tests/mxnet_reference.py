"""Test-only stand-ins for MXNet: a ``.params`` writer and the official ResNet-38 forward pass.

Written from the file-format description in ``cbst_tf.models.mxnet_params`` and the
structure of the official ``fcrna_model_a1`` symbol (itijyou/ademxapp ``resnet_v2.py``,
CBST's copy with BatchNorm eps 1.001e-5), independently of our Keras model and of the
name mapping under test:

* :func:`write_params` writes the bytes ``mx.nd.save`` writes (checked once against MXNet
  1.9.1: byte-identical output for the same dict; see ``test_writer_matches_mxnet_bytes``);
* :func:`official_arrays` draws random weights for every array of the official network,
  named and shaped (OIHW) as the official symbol names them;
* :func:`official_forward` is a slow, plain-numpy NCHW forward pass of that network
  (MXNet convolution arithmetic: symmetric padding ``((k - 1) * d + 1) // 2``, output
  ``floor((H + 2p - d(k-1) - 1) / s) + 1``), returning the stride-8 logits.
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

V1, V2, V3 = 0xF993FAC8, 0xF993FAC9, 0xF993FACA
CODES = {np.dtype("float32"): 0, np.dtype("float64"): 1, np.dtype("float16"): 2, np.dtype("uint8"): 3,
         np.dtype("int32"): 4, np.dtype("int8"): 5, np.dtype("int64"): 6}
MEAN = np.array([0.485, 0.456, 0.406])
STD = np.array([0.229, 0.224, 0.225])
EPS = 1.001e-5


def encode_array(a: np.ndarray, version: str = "v2", stype: int = 0, dtype_code: int | None = None) -> bytes:
    """One NDArray record (``v1``, ``v2``, ``v3`` or ``legacy``)."""
    a = np.ascontiguousarray(a)
    code = CODES[a.dtype] if dtype_code is None else dtype_code
    head = b""
    if version == "legacy":
        head = struct.pack("<I", a.ndim) + struct.pack(f"<{a.ndim}I", *a.shape)
    else:
        head = struct.pack("<I", {"v1": V1, "v2": V2, "v3": V3}[version])
        if version in ("v2", "v3"):
            head += struct.pack("<i", stype)
        head += struct.pack("<i", a.ndim) + struct.pack(f"<{a.ndim}q", *a.shape)
    return head + struct.pack("<iii", 1, 0, code) + a.astype(a.dtype.newbyteorder("<")).tobytes()


def encode_params(arrays: dict[str, np.ndarray], version: str = "v2") -> bytes:
    """The bytes of ``mx.nd.save(path, arrays)``."""
    out = [struct.pack("<QQ", 0x112, 0), struct.pack("<Q", len(arrays))]
    out += [encode_array(a, version) for a in arrays.values()]
    out.append(struct.pack("<Q", len(arrays)))
    for name in arrays:
        raw = name.encode("utf-8")
        out.append(struct.pack("<Q", len(raw)) + raw)
    return b"".join(out)


def write_params(path: str | Path, arrays: dict[str, np.ndarray], version: str = "v2") -> Path:
    path = Path(path)
    path.write_bytes(encode_params(arrays, version))
    return path


def _ch(n: int, width: float) -> int:
    # Our model's width rule (cbst_tf.models.fcn8s.channels); at 1.0 the official sizes.
    return max(1, int(round(n * width)))


def official_units(width: float = 1.0):
    """``(name, filters, kernels, stride, dilations, project)`` of every residual unit of
    ``fcrna_model_a1`` (feature stride 8), in order, from the official level table."""
    units = []
    dilate = 1
    # level: (units, filters, kernels, downsample by stride 2, dilation factor of the level)
    table = {2: (3, (128, 128), (3, 3), True, 1), 3: (3, (256, 256), (3, 3), True, 1),
             4: (6, (512, 512), (3, 3), True, 1), 5: (3, (512, 1024), (3, 3), False, 2),
             6: (1, (512, 1024, 2048), (1, 3, 1), False, 2), 7: (1, (1024, 2048, 4096), (1, 3, 1), False, 1)}
    for level, (n, filters, kernels, stride2, factor) in table.items():
        filters = tuple(_ch(f, width) for f in filters)
        # First unit: its leading conv keeps the incoming dilation, the later convs get
        # dilate * factor (official inc_dilate); the level continues at dilate * factor.
        dil = [dilate] + [dilate * factor] * (len(filters) - 1)
        units.append((f"{level}a", filters, kernels, 2 if stride2 else 1, dil, True))
        dilate *= factor
        for i in range(1, n):
            units.append((f"{level}b{i}", filters, kernels, 1, [dilate] * len(filters), False))
    return units


def official_arrays(classes: int | None, width: float = 1.0, seed: int = 0, imagenet: bool = False,
                    dtype=np.float32) -> dict[str, np.ndarray]:
    """Random weights with the official names and OIHW shapes.

    ``classes=None`` and ``imagenet=True``: the ImageNet file (trunk + ``linear1000``
    fully connected layer, no ``conv6a``). BN statistics are drawn so activations stay
    O(1) through the 38 layers (a meaningful comparison, not overflow or all-zero)."""
    rng = np.random.default_rng(seed)
    out: dict[str, np.ndarray] = {}

    def conv(name, cout, cin, k, bias=False):
        out[f"arg:{name}_weight"] = (rng.standard_normal((cout, cin, k, k)) / np.sqrt(cin * k * k)).astype(dtype)
        if bias:
            out[f"arg:{name}_bias"] = (0.1 * rng.standard_normal(cout)).astype(dtype)

    def bn(name, c):
        out[f"arg:{name}_gamma"] = rng.uniform(0.5, 1.5, c).astype(dtype)
        out[f"arg:{name}_beta"] = (0.1 * rng.standard_normal(c)).astype(dtype)
        out[f"aux:{name}_moving_mean"] = (0.1 * rng.standard_normal(c)).astype(dtype)
        out[f"aux:{name}_moving_var"] = rng.uniform(0.5, 2.0, c).astype(dtype)

    cin = _ch(64, width)
    conv("conv1a", cin, 3, 3)
    for name, filters, kernels, _, _, project in official_units(width):
        c = cin
        bn(f"bn{name}_branch2a", c)
        conv(f"res{name}_branch2a", filters[0], c, kernels[0])
        for i in range(1, len(filters)):
            bn(f"bn{name}_branch2b{i}", filters[i - 1])
            conv(f"res{name}_branch2b{i}", filters[i], filters[i - 1], kernels[i])
        if project:
            conv(f"res{name}_branch1", filters[-1], c, 1)
        cin = filters[-1]
    bn("bn7", cin)
    if imagenet:
        out["arg:linear1000_weight"] = (rng.standard_normal((1000, cin)) / np.sqrt(cin)).astype(dtype)
        out["arg:linear1000_bias"] = np.zeros(1000, dtype)
    if classes is not None:
        head = _ch(512, width)
        conv("conv6a", head, cin, 3, bias=True)
        conv(f"linear{classes}", classes, head, 3, bias=True)
    return out


def _conv(x: np.ndarray, w: np.ndarray, b=None, stride: int = 1, dilate: int = 1) -> np.ndarray:
    k = w.shape[2]
    if k == 1:
        dilate = 1  # the official conv() ignores dilation for 1x1 kernels
    pad = ((k - 1) * dilate + 1) // 2
    n, c, h, wd = x.shape
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    ho = (h + 2 * pad - dilate * (k - 1) - 1) // stride + 1
    wo = (wd + 2 * pad - dilate * (k - 1) - 1) // stride + 1
    y = np.zeros((n, w.shape[0], ho, wo), np.float64)
    for i in range(k):
        for j in range(k):
            patch = xp[:, :, i * dilate: i * dilate + stride * (ho - 1) + 1: stride,
                       j * dilate: j * dilate + stride * (wo - 1) + 1: stride]
            y += np.einsum("nchw,oc->nohw", patch, w[:, :, i, j])
    if b is not None:
        y += b[None, :, None, None]
    return y


def _bn_relu(x: np.ndarray, p: dict, name: str) -> np.ndarray:
    g, b = p[f"arg:{name}_gamma"], p[f"arg:{name}_beta"]
    m, v = p[f"aux:{name}_moving_mean"], p[f"aux:{name}_moving_var"]
    y = (x - m[None, :, None, None]) / np.sqrt(v[None, :, None, None] + EPS) * g[None, :, None, None] \
        + b[None, :, None, None]
    return np.maximum(y, 0.0)


def official_forward(image: np.ndarray, p: dict[str, np.ndarray], classes: int, width: float = 1.0) -> np.ndarray:
    """Stride-8 logits ``(N, ceil(H/8), ceil(W/8), C)`` (float64) of the official network
    for ``image`` ``(N, H, W, 3)`` RGB 0..255, computed in float64 NCHW."""
    p = {k: np.asarray(v, np.float64) for k, v in p.items()}
    x = ((np.asarray(image, np.float64) / 255.0 - MEAN) / STD).transpose(0, 3, 1, 2)
    x = _conv(x, p["arg:conv1a_weight"])
    for name, filters, _kernels, stride, dil, project in official_units(width):
        block = _bn_relu(x, p, f"bn{name}_branch2a")
        branch = _conv(block, p[f"arg:res{name}_branch2a_weight"], stride=stride, dilate=dil[0])
        for i in range(1, len(filters)):
            branch = _conv(_bn_relu(branch, p, f"bn{name}_branch2b{i}"), p[f"arg:res{name}_branch2b{i}_weight"],
                           dilate=dil[i])
        short = _conv(block, p[f"arg:res{name}_branch1_weight"], stride=stride) if project else x
        x = short + branch
    x = _bn_relu(x, p, "bn7")
    x = np.maximum(_conv(x, p["arg:conv6a_weight"], p["arg:conv6a_bias"], dilate=12), 0.0)
    x = _conv(x, p[f"arg:linear{classes}_weight"], p[f"arg:linear{classes}_bias"], dilate=12)
    return x.transpose(0, 2, 3, 1)
