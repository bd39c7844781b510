"""The segmentation networks: FCN-8s/VGG16 and ResNet-38 (model A1), see ARCHITECTURE.md.

``build_model(name, num_classes, width, weights, **options)`` maps float32 RGB 0..255
images ``(N, H, W, 3)`` of any size to float32 logits ``(N, H, W, num_classes)``; with
``upsample=False`` to the logits at output stride 8, which
:func:`resize_logits` turns into exactly the full model's output.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import keras

from cbst_tf.errors import CbstError
from cbst_tf.models.fcn8s import build_fcn8s_vgg16
from cbst_tf.models.resize import OUTPUT_STRIDE, resize_logits
from cbst_tf.models.resnet38 import build_resnet38

BUILDERS: dict[str, Callable[..., keras.Model]] = {
    "fcn8s_vgg16": build_fcn8s_vgg16,
    "resnet38": build_resnet38,
}
# Layers whose names start with these are the classifier/score layers (newly initialised,
# not ImageNet-pretrained) that get train.classifier_lr_mult.
CLASSIFIER_PREFIXES = ("score", "upscore", "classifier")
_OPTIONS = {"dropout", "freeze_bn", "upsample", "mean", "input_hw", "bn_epsilon"}

__all__ = ["BUILDERS", "CLASSIFIER_PREFIXES", "OUTPUT_STRIDE", "build_from_config", "build_model",
           "classifier_variables", "resize_logits"]


def build_model(name: str, num_classes: int, width: float = 1.0, weights: str | None = None,
                **options: Any) -> keras.Model:
    """Build network ``name`` and optionally initialise it from ``weights``.

    Options: ``dropout`` (float), ``freeze_bn`` and ``bn_epsilon`` (ResNet-38 only; VGG has no BN),
    ``upsample`` (bool, default True), ``mean`` (RGB mean that normalises to 0),
    ``input_hw`` ((H, W) to fix the input size; default any size).
    """
    if name not in BUILDERS:
        raise CbstError(f"model.name={name!r}: unknown network (choose from {', '.join(BUILDERS)})")
    unknown = sorted(set(options) - _OPTIONS)
    if unknown:
        raise CbstError(f"build_model: unknown option(s) {unknown} (known: {sorted(_OPTIONS)})")
    if not (isinstance(num_classes, int) and num_classes >= 1):
        raise CbstError(f"data.num_classes={num_classes!r}: expected a positive integer")
    if not width > 0:
        raise CbstError(f"model.width={width!r}: expected a positive number")
    if name == "fcn8s_vgg16":
        options.pop("freeze_bn", None)
        options.pop("bn_epsilon", None)
    model = BUILDERS[name](num_classes, width, **options)
    if weights:
        from cbst_tf.models.weights import load_weights

        load_weights(model, name, weights)
    return model


def build_from_config(cfg: Any, weights: str | Path | None = None, *, init: bool = True,
                      **options: Any) -> keras.Model:
    """THE network of ``cfg.model`` / ``cfg.data`` (extra options, e.g. ``upsample``, ``input_hw``).

    ``weights``: a trained ``.weights.h5`` (a step's model) to load, checked against the
    configured network first; ``model.weights`` (an ImageNet initialisation for training) is
    then not loaded. Without ``weights`` the network starts from ``model.weights`` when
    ``init``, else from its random initialisation (``model summary`` only counts it).
    """
    m = cfg.model
    opts = {"dropout": m.dropout, "freeze_bn": m.freeze_bn, "mean": tuple(cfg.data.image_mean),
            "bn_epsilon": m.bn_epsilon}
    opts.update(options)
    model = build_model(m.name, cfg.data.num_classes, m.width, m.weights if init and weights is None else None,
                        **opts)
    if weights is not None:
        from cbst_tf.models.weights import load_checkpoint
        from cbst_tf.weights_check import check_weights_fit

        check_weights_fit(model, weights, m.name, m.width, cfg.data.num_classes)
        load_checkpoint(model, weights)
    return model


def classifier_variables(model: keras.Model) -> list:
    """Trainable variables of the classifier/score layers (see ``CLASSIFIER_PREFIXES``)."""
    return [v for layer in model.layers if layer.name.startswith(CLASSIFIER_PREFIXES)
            for v in layer.trainable_weights]
