"""``export --format tflite``: a float32 TFLite model converted from a SavedModel, checked with
the TFLite interpreter; an op the converter cannot handle becomes one line naming it and why.

Only TFLite's builtin ops are allowed (no Flex/TF Select runtime, which most TFLite
deployments do not ship). FCN-8s/VGG16 does not convert: its fc6 runs as one patch
matmul (``tf.image.extract_patches``, see :class:`cbst_tf.models.layers.Conv2D`), and
``ExtractImagePatches`` has no builtin kernel. ResNet-38 converts.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import warnings
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import tensorflow as tf

from cbst_tf.errors import CbstError

#: Largest probability difference accepted between the TFLite interpreter and TensorFlow.
TOLERANCE = 1e-4
_SELECT = re.compile(r"TF Select ops: ([A-Za-z0-9_, ]+)")
_UNSUPPORTED = re.compile(r"'tf\.([A-Za-z0-9_]+)' op is neither a custom op nor a flex op")
_LAYER = re.compile(r'fused\["{op}:", "([^"@]+)/{op}@')


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Mute the converter's and interpreter's C++ diagnostics on stderr (the error says it in one line)."""
    sys.stderr.flush()
    saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def _layer(scope: str, layer_names: Iterable[str]) -> str:
    """The Keras layer of a name scope such as ``fcn8s_vgg16_1/fc6_1`` (-> ``fc6``)."""
    last = scope.rsplit("/", 1)[-1]
    names = [n for n in layer_names if last == n or re.fullmatch(re.escape(n) + r"_\d+", last)]
    return max(names, key=len) if names else scope


def _why(message: str, network: str, layer_names: Iterable[str] = ()) -> str:
    """One line from a converter error: which op(s), in which layer, and why."""
    ops = []
    m = _SELECT.search(message)
    if m:
        ops = [o.strip() for o in m.group(1).split(",") if o.strip()]
    ops = ops or list(dict.fromkeys(_UNSUPPORTED.findall(message)))
    if not ops:
        first = next((ln.strip() for ln in message.splitlines() if "error" in ln.lower()), message.strip())
        return f"tflite: TF {tf.__version__}'s converter cannot convert {network}: {first[:300]}"
    where = []
    for op in ops:
        layer = re.search(_LAYER.pattern.format(op=re.escape(op)), message)
        where.append(f"{op}" + (f" (layer {_layer(layer.group(1), layer_names)})" if layer else ""))
    return (f"tflite: TF {tf.__version__}'s converter cannot convert {network}: op {', '.join(where)} is not a TFLite "
            "builtin op (it needs the Flex/TF Select runtime); use --format saved_model")


def convert(saved_model: str | Path, network: str, layer_names: Iterable[str] = ()) -> bytes:
    """The float32 TFLite flatbuffer of ``saved_model``'s ``serving_default`` signature
    (``layer_names``: the network's Keras layers, to name the one holding an unsupported op)."""
    converter = tf.lite.TFLiteConverter.from_saved_model(str(saved_model), signature_keys=["serving_default"])
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    try:
        with _quiet():
            return converter.convert()
    except Exception as exc:  # ConverterError has no public name to catch it by
        if type(exc).__name__ != "ConverterError":
            raise
        raise CbstError(_why(str(exc), network, layer_names)) from None


def check(flatbuffer: bytes, reference, image: np.ndarray) -> dict:
    """Run the TFLite interpreter on ``image`` ``[1, H, W, 3]`` uint8 and compare with ``reference``
    (the TensorFlow function's outputs on the same image)."""
    with warnings.catch_warnings(), _quiet():  # the deprecation notice (LiteRT), XNNPACK's INFO line
        warnings.simplefilter("ignore")
        interpreter = tf.lite.Interpreter(model_content=flatbuffer)
        outputs = interpreter.get_signature_runner("serving_default")(images=image)
    diff = float(np.max(np.abs(outputs["probabilities"] - reference["probabilities"].numpy())))
    agree = float(np.mean(outputs["class_ids"] == reference["class_ids"].numpy()))
    if not diff <= TOLERANCE:
        raise CbstError(f"tflite: the converted model's probabilities differ from TensorFlow's by {diff:.2e} "
                        f"(tolerance {TOLERANCE:.0e})")
    return {"max_probability_difference": diff, "class_agreement": agree}
