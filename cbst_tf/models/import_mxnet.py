"""Importing the official CBST / ResNet-38 MXNet models into our ``resnet38`` network.

The released models (``ilsvrc-cls_rna-a1_cls1000_ep-0001.params`` for ImageNet,
``gta_rna-a1_cls19_s8_ep-0000.params``, ``synthia_rna-a1_cls16_s8_ep-0000.params`` and the
adapted models) are ``fcrna_model_a1`` networks (itijyou/ademxapp ``resnet_v2.py``). Our
:mod:`cbst_tf.models.resnet38` names its layers after that symbol, so the mapping is by
name, one MXNet array per Keras variable:

==================================  =====================================================
Keras layer (variables)             MXNet arrays (``.params`` keys)
==================================  =====================================================
``conv1a``, ``res{L}{u}_branch2a``,  ``arg:<layer>_weight``, OIHW, transposed to HWIO
``res{L}{u}_branch2b{k}``,
``res{L}a_branch1`` (kernel)
``bn{L}{u}_branch2a/2b{k}``,        ``arg:<layer>_gamma``, ``arg:<layer>_beta``,
``bn7`` (gamma, beta, mean, var)    ``aux:<layer>_moving_mean``, ``aux:<layer>_moving_var``
``classifier_conv6a``               ``arg:conv6a_weight``, ``arg:conv6a_bias``
``classifier_score``                ``arg:linear{C}_weight``, ``arg:linear{C}_bias``
==================================  =====================================================

That is 191 trunk arrays (the trunk convolutions have no bias) plus 4 head arrays: 195
arrays for the 195 Keras variables. ``C`` comes from the key. The ImageNet file has the
191 trunk arrays plus the classification layer ``linear1000`` (weight 1000 x 4096, bias; 193
arrays), which is skipped and reported; it has no ``conv6a``, so both head layers keep their
fresh initialisation.

Every check names the file: a trunk/head array the model needs but the file lacks, an
array the mapping does not use (other than the ImageNet classifier), a shape that does
not match (e.g. a model width other than 1.0), or more than one ``linear{C}`` classifier.

The official models see ``(RGB / 255 - mean) / std`` with the ImageNet mean and std
(``evaluate.py`` ``_get_scalemeanstd`` for ``rna`` networks) and use BatchNorm with
``eps = 1.001e-5`` (CBST ``util/symbol/symbol.py``). :func:`import_mxnet` builds the model
with exactly these and records them in the written ``.weights.h5``
(:mod:`cbst_tf.models.normalization`), so loading the import under another normalisation
warns.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import keras
import numpy as np

from cbst_tf.errors import CbstError
from cbst_tf.io import check_writable
from cbst_tf.labels import NUM_CLASSES, SYNTHIA16_TRAIN_IDS
from cbst_tf.models.mxnet_params import read_params
from cbst_tf.models.resnet38 import IMAGENET_STD

#: The official input normalisation in our 0..255 RGB input space: mean = 255 * (0.485,
#: 0.456, 0.406), std = 255 * (0.229, 0.224, 0.225).
OFFICIAL_MEAN = (123.675, 116.28, 103.53)
OFFICIAL_STD = tuple(255.0 * s for s in IMAGENET_STD)
OFFICIAL_BN_EPSILON = 1.001e-5
#: Logit bias of the classes a 16-class SYNTHIA model never predicts, when it is widened to
#: the 19 Cityscapes train ids: their softmax probability is below exp(-100) ~ 4e-44.
ABSENT_CLASS_BIAS = -100.0
_LINEAR = re.compile(r"arg:linear(\d+)_(weight|bias)")
_HEAD = {"classifier_conv6a": "conv6a"}


@dataclass
class ImportReport:
    """What :func:`import_mxnet` did, for the command's summary and for tests."""

    source: str
    out: str
    num_classes: int
    file_classes: int | None  # C of the file's segmentation classifier; None = trunk only
    arrays_read: int
    arrays_used: int
    skipped: list[str] = field(default_factory=list)
    fresh_layers: list[str] = field(default_factory=list)
    expanded_from: tuple[int, ...] | None = None  # train ids of a widened 16-class head

    def summary(self) -> str:
        """One line for the command's output."""
        head = (f"segmentation head with {self.file_classes} classes" if self.file_classes
                else "trunk only (head freshly initialised)")
        parts = [f"imported {self.arrays_used} of {self.arrays_read} arrays from {self.source} "
                 f"into resnet38 ({head}, {self.num_classes} outputs) -> {self.out}"]
        if self.expanded_from:
            parts.append(f"16 SYNTHIA classes placed at train ids {list(self.expanded_from)}, "
                         "the other 3 never predicted")
        if self.skipped:
            parts.append(f"skipped {', '.join(self.skipped)}")
        return "; ".join(parts)


def _file_classes(path: Path, arrays: dict[str, np.ndarray]) -> tuple[int | None, list[str]]:
    """``(C, linear keys)`` of the file's classifier ``linear{C}`` (None when absent)."""
    linear = sorted(k for k in arrays if _LINEAR.fullmatch(k))
    classes = sorted({int(_LINEAR.fullmatch(k).group(1)) for k in linear})
    if len(classes) > 1:
        raise CbstError(f"{path}: more than one classifier ({', '.join(f'linear{c}' for c in classes)})")
    return (classes[0] if classes else None), linear


def expected_arrays(model: keras.Model, classes: int | None) -> dict[str, tuple[keras.Variable, str]]:
    """``{params key: (Keras variable, kind)}`` for every variable of ``model`` that the
    official file supplies; ``kind`` is ``conv`` (OIHW -> HWIO), ``linear`` (the
    classifier) or ``plain``. ``classes=None`` leaves out the head (trunk-only files)."""
    out: dict[str, tuple[keras.Variable, str]] = {}
    for layer in model.layers:
        if not layer.weights:
            continue
        if isinstance(layer, keras.layers.BatchNormalization):
            gamma, beta, mean, var = layer.weights
            out.update({f"arg:{layer.name}_gamma": (gamma, "plain"), f"arg:{layer.name}_beta": (beta, "plain"),
                        f"aux:{layer.name}_moving_mean": (mean, "plain"),
                        f"aux:{layer.name}_moving_var": (var, "plain")})
        elif layer.name == "classifier_score":
            if classes is not None:
                kernel, bias = layer.weights
                out[f"arg:linear{classes}_weight"] = (kernel, "linear")
                out[f"arg:linear{classes}_bias"] = (bias, "linear")
        elif layer.name in _HEAD:
            if classes is not None:
                kernel, bias = layer.weights
                out[f"arg:{_HEAD[layer.name]}_weight"] = (kernel, "conv")
                out[f"arg:{_HEAD[layer.name]}_bias"] = (bias, "plain")
        elif isinstance(layer, keras.layers.Conv2D) and len(layer.weights) == 1:
            out[f"arg:{layer.name}_weight"] = (layer.weights[0], "conv")
        else:
            raise CbstError(f"model '{model.name}': layer '{layer.name}' has no MXNet counterpart")
    return out


def _convert(path: Path, key: str, value: np.ndarray, variable: keras.Variable, kind: str,
             rows: tuple[int, ...] | None) -> np.ndarray:
    """The MXNet array ``value`` in the layout of ``variable`` (shape checked)."""
    value = np.asarray(value, dtype=np.float32)
    if kind in ("conv", "linear") and value.ndim == 4:
        value = value.transpose(2, 3, 1, 0)  # OIHW -> HWIO
    want = tuple(variable.shape)
    if rows is not None and kind == "linear":  # widen C=16 outputs to the 19 train ids
        got = value.shape
        if got[-1] != len(rows):
            raise CbstError(f"{path}: '{key}' has shape {got}, expected {len(rows)} outputs")
        wide = np.zeros(got[:-1] + (want[-1],), np.float32)
        if value.ndim == 1:
            wide[:] = ABSENT_CLASS_BIAS
        wide[..., list(rows)] = value
        value = wide
    if value.shape != want:
        mx_shape = tuple(np.shape(value.transpose(3, 2, 0, 1))) if value.ndim == 4 else value.shape
        want_mx = (want[3], want[2], want[0], want[1]) if len(want) == 4 else want
        raise CbstError(f"{path}: '{key}' has shape {mx_shape}, the model expects {want_mx} "
                        "(official models need resnet38 at width 1.0)")
    return value


def assign_params(model: keras.Model, arrays: dict[str, np.ndarray], path: str | Path,
                  num_classes: int | str = "auto") -> ImportReport:
    """Copy official ``arrays`` (from :func:`~cbst_tf.models.mxnet_params.read_params`) into a
    ``resnet38`` ``model``; every variable is checked before any is set."""
    path = Path(path)
    classes, linear = _file_classes(path, arrays)
    has_head = "arg:conv6a_weight" in arrays
    if classes is not None and not has_head:
        classes_used, skipped = None, linear  # the ImageNet classifier: not a segmentation head
    elif has_head and classes is None:
        raise CbstError(f"{path}: has 'arg:conv6a_weight' but no classifier 'arg:linear<C>_weight'")
    else:
        classes_used, skipped = classes, []
    outputs = int(model.get_layer("classifier_score").weights[1].shape[0])
    rows = None
    if classes_used is not None and outputs != classes_used:
        if classes_used == len(SYNTHIA16_TRAIN_IDS) and outputs == NUM_CLASSES:
            rows = SYNTHIA16_TRAIN_IDS
        else:
            raise CbstError(f"{path}: the file's classifier 'linear{classes_used}' has {classes_used} classes, "
                            f"the model {outputs} (use --num-classes auto or {classes_used})")
    wanted = expected_arrays(model, classes_used)
    missing = [k for k in wanted if k not in arrays]
    if missing:
        more = f" and {len(missing) - 1} more" if len(missing) > 1 else ""
        raise CbstError(f"{path}: missing array '{missing[0]}'{more} ({len(wanted)} expected for resnet38)")
    extra = sorted(k for k in arrays if k not in wanted and k not in skipped)
    if extra:
        more = f" and {len(extra) - 1} more" if len(extra) > 1 else ""
        raise CbstError(f"{path}: unexpected array '{extra[0]}'{more} (not part of resnet38 / fcrna_model_a1)")
    values = [(variable, _convert(path, key, arrays[key], variable, kind, rows))
              for key, (variable, kind) in wanted.items()]
    for variable, value in values:
        variable.assign(value)
    fresh = [] if classes_used is not None else ["classifier_conv6a", "classifier_score"]
    return ImportReport(source=str(path), out="", num_classes=outputs, file_classes=classes_used,
                        arrays_read=len(arrays), arrays_used=len(wanted), skipped=skipped,
                        fresh_layers=fresh, expanded_from=rows)


def import_mxnet(path: str | Path, out: str | Path, *, model: str = "resnet38",
                 num_classes: int | str = "auto", width: float = 1.0, freeze_bn: bool = True,
                 seed: int = 0) -> ImportReport:
    """Convert an official ``.params`` file into a ``.weights.h5`` for ``model``.

    ``num_classes``: ``"auto"`` takes ``C`` from the file's ``linear{C}`` classifier (19 for
    a trunk-only ImageNet file, whose head is freshly initialised with ``seed``); an integer
    must equal ``C``, except that 19 widens the 16-class SYNTHIA model onto the Cityscapes
    train ids. ``freeze_bn`` must match the experiment that loads the file (Keras keys
    BatchNorm layers by class name; our ResNet-38 configs use ``true``). ``width`` other
    than 1.0 is refused: the released networks are full width.
    """
    from cbst_tf.models import build_model
    from cbst_tf.models.normalization import Normalization, save_weights_with_normalization

    path, out = Path(path), Path(out)
    if model != "resnet38":
        raise CbstError(f"--model {model!r}: the official MXNet models are ResNet-38 (resnet38)")
    if width != 1.0:
        raise CbstError(f"model.width={width:g}: the official MXNet models are full width; import needs 1.0")
    if not out.name.endswith(".weights.h5"):
        raise CbstError(f"{out}: the output must end in .weights.h5")
    check_writable(out, "--out file")  # before minutes of reading and converting
    arrays = read_params(path)
    classes, _ = _file_classes(path, arrays)
    if num_classes == "auto":
        num_classes = classes if (classes is not None and "arg:conv6a_weight" in arrays) else NUM_CLASSES
    if not isinstance(num_classes, int) or num_classes < 2:
        raise CbstError(f"--num-classes {num_classes!r}: expected 'auto' or an integer >= 2")
    keras.utils.set_random_seed(seed)
    net = build_model(model, num_classes, width, freeze_bn=freeze_bn, mean=OFFICIAL_MEAN,
                      bn_epsilon=OFFICIAL_BN_EPSILON)
    report = assign_params(net, arrays, path, num_classes)
    norm = Normalization(mean=OFFICIAL_MEAN, std=OFFICIAL_STD, bn_epsilon=OFFICIAL_BN_EPSILON,
                         source=f"mxnet:{path.name}")
    save_weights_with_normalization(net, out, norm)
    report.out = str(out)
    return report
