"""Initialising a network from weights files, offline.

Three sources, chosen by ``weights``:

- ``"imagenet"`` (FCN-8s only): Keras' VGG16 ImageNet file from the Keras cache
  (``~/.keras/models``), downloaded by ``keras.utils.get_file`` where there is internet.
- a path to a Keras-applications VGG16 file (``vgg16_weights_tf_dim_ordering_tf_kernels.h5``
  or its ``_notop`` variant, legacy Keras HDF5 layout: root attribute ``layer_names``, one
  group per layer whose ``weight_names`` attribute lists ``[kernel, bias]``). The conv
  layers are copied by name; with the top, the classifier's Dense ``fc1`` (25088 x 4096) and
  ``fc2`` (4096 x 4096) become the ``fc6`` 7x7x512x4096 and ``fc7`` 1x1x4096x4096
  convolutions (Long et al. 2015, section 3.1: "convolutionalization"). Keras' Flatten
  of a channels-last 7x7x512 map orders rows as (y, x, c), which is exactly the row-major
  order of a (7, 7, 512) kernel block, so a reshape is the whole conversion.
- a path ending in ``.weights.h5``: a full checkpoint of this model (``model.save_weights``),
  including the official ResNet-38 models converted by ``cbst-tf weights import-mxnet``
  (see "Official MXNet models" below).

Any missing, unreadable or mismatched file raises a one-line ``CbstError`` naming it.

Official MXNet models
---------------------
The released CBST / ResNet-38 models are MXNet ``.params`` files; they are converted once,
offline, into ``.weights.h5`` files of our ``resnet38`` and then load like any checkpoint:

- :func:`cbst_tf.models.mxnet_params.read_params` ``(path) -> {"arg:<name>"|"aux:<name>": array}``
  reads the file with numpy only (MXNet 1.x NDArray-list format V1/V2/V3/legacy, dense arrays).
- :func:`cbst_tf.models.import_mxnet.import_mxnet` ``(path, out, *, model="resnet38",
  num_classes="auto", width=1.0, freeze_bn=True) -> ImportReport`` builds the network with the
  official normalisation and BN epsilon, maps the ``fcrna_model_a1`` arrays onto it by name
  (:func:`~cbst_tf.models.import_mxnet.assign_params`: OIHW -> HWIO, BN gamma/beta/moving
  statistics, ``conv6a`` and ``linear<C>`` head; ``linear1000`` of the ImageNet file skipped,
  16 SYNTHIA outputs widened to 19 train ids on request) and writes ``out`` atomically.
  ``cbst-tf weights import-mxnet`` is this function.
- :mod:`cbst_tf.models.normalization` records the input normalisation in the written file;
  :func:`load_checkpoint` warns (``NormalizationWarning``) when a model normalises differently.
"""

from __future__ import annotations

import os
from pathlib import Path

import keras
import numpy as np

from cbst_tf.errors import CbstError
from cbst_tf.models.fcn8s import VGG16_BLOCKS

VGG16_FILE = "vgg16_weights_tf_dim_ordering_tf_kernels.h5"
VGG16_URL = "https://storage.googleapis.com/tensorflow/keras-applications/vgg16/" + VGG16_FILE
VGG16_HASH = "64373286793e3c8b2b4e3219cbf3544b"  # as in keras.applications.vgg16


def vgg16_imagenet_path() -> Path:
    """The cached Keras VGG16 ImageNet file (downloading it only if absent and online)."""
    try:
        return Path(keras.utils.get_file(VGG16_FILE, VGG16_URL, cache_subdir="models", file_hash=VGG16_HASH))
    except Exception as exc:  # noqa: BLE001 - any download failure means "not available offline"
        # keras.utils.get_file's cache root: $KERAS_HOME or ~/.keras.
        cache = Path(os.environ.get("KERAS_HOME", Path.home() / ".keras"))
        raise CbstError(
            f"{cache / 'models' / VGG16_FILE}: VGG16 ImageNet weights not in the Keras cache and "
            f"could not be downloaded ({type(exc).__name__}); pass a local file as model.weights"
        ) from None


def read_keras_h5_layers(path: Path) -> dict[str, list[np.ndarray]]:
    """``{layer name: [arrays in saved order]}`` of a legacy Keras HDF5 weights file."""
    import h5py

    if not path.is_file():
        raise CbstError(f"{path}: weights file not found")
    try:
        with h5py.File(path, "r") as f:
            group = f["model_weights"] if "layer_names" not in f.attrs and "model_weights" in f else f
            if "layer_names" not in group.attrs:
                raise CbstError(f"{path}: not a Keras HDF5 weights file (no 'layer_names' attribute)")
            out = {}
            for raw in group.attrs["layer_names"]:
                name = raw.decode("utf8") if isinstance(raw, bytes) else str(raw)
                names = group[name].attrs.get("weight_names", [])
                out[name] = [np.asarray(group[name][n.decode("utf8") if isinstance(n, bytes) else n])
                             for n in names]
            return out
    except CbstError:
        raise
    except Exception as exc:  # noqa: BLE001 - h5py raises OSError/KeyError/ValueError variants
        raise CbstError(f"{path}: cannot read Keras HDF5 weights ({type(exc).__name__}: {exc})") from None


def _kernel_bias(path: Path, layers: dict, name: str) -> tuple[np.ndarray, np.ndarray]:
    arrays = layers.get(name)
    if not arrays or len(arrays) != 2:
        raise CbstError(f"{path}: layer '{name}' missing or without [kernel, bias]")
    kernel, bias = sorted(arrays, key=lambda a: -a.ndim)  # order-agnostic: kernel has more dims
    return kernel, bias


def _assign(path: Path, layer: keras.layers.Layer, kernel: np.ndarray, bias: np.ndarray) -> None:
    want = [tuple(v.shape) for v in layer.weights]
    if want != [kernel.shape, bias.shape]:
        raise CbstError(f"{path}: '{layer.name}' has shapes {[kernel.shape, bias.shape]}, model expects {want}"
                        " (ImageNet weights need width 1.0)")
    layer.set_weights([kernel, bias])


def load_vgg16_into_fcn8s(model: keras.Model, path: str | Path) -> list[str]:
    """Copy a Keras VGG16 weights file into an FCN-8s model; return the layers it set."""
    path = Path(path)
    layers = read_keras_h5_layers(path)
    done = []
    for block, convs, _ in VGG16_BLOCKS:
        for i in range(1, convs + 1):
            name = f"block{block}_conv{i}"
            _assign(path, model.get_layer(name), *_kernel_bias(path, layers, name))
            done.append(name)
    if "fc1" in layers:  # the file with the classifier top
        for src, dst in (("fc1", "fc6"), ("fc2", "fc7")):
            kernel, bias = _kernel_bias(path, layers, src)
            target = model.get_layer(dst).weights[0].shape
            if kernel.size != int(np.prod(target)):
                raise CbstError(f"{path}: '{src}' kernel {kernel.shape} cannot become '{dst}' {tuple(target)}")
            _assign(path, model.get_layer(dst), kernel.reshape(tuple(target)), bias)
            done.append(dst)
    return done


def load_checkpoint(model: keras.Model, path: str | Path) -> None:
    """``model.load_weights`` of a ``.weights.h5`` checkpoint with one-line errors; warns
    (:class:`~cbst_tf.models.normalization.NormalizationWarning`) when the file records an
    input normalisation other than the model's."""
    path = Path(path)
    if not path.is_file():
        raise CbstError(f"{path}: weights file not found")
    try:
        model.load_weights(str(path))
    except Exception as exc:  # noqa: BLE001 - Keras raises ValueError/KeyError/OSError on mismatch
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CbstError(f"{path}: does not match model '{model.name}' ({first[:200]})") from None
    from cbst_tf.models.normalization import check_normalization

    check_normalization(model, path)


def load_weights(model: keras.Model, name: str, weights: str) -> None:
    """Initialise ``model`` (network ``name``) from ``weights``; see the module docstring."""
    if weights.endswith(".weights.h5") or weights.endswith(".keras"):
        load_checkpoint(model, weights)
        return
    if name != "fcn8s_vgg16":
        raise CbstError(
            f"model.weights={weights!r}: {name} can only load its own .weights.h5 checkpoints "
            "(no Keras ImageNet weights exist for it)"
        )
    path = vgg16_imagenet_path() if weights == "imagenet" else Path(weights)
    load_vgg16_into_fcn8s(model, path)
