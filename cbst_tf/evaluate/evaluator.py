"""Evaluate an in-memory model on a labelled dataset under one of the paper's protocols.

Used by ``cbst-tf evaluate`` (:mod:`cbst_tf.evaluate.run`), the demo and cross-validation;
it does no file I/O itself. Every image is predicted at its label's resolution (logits
resized to the label size, :mod:`cbst_tf.inference`), read by the protocol, and added to
one streaming confusion matrix, so the mIoU is over all pixels of the set (as in the
paper and the Cityscapes benchmark), not a mean of per-image scores.

Scores in the returned dict are PERCENT (0-100), as in the paper's tables; a class whose
IoU is undefined (absent from ground truth and prediction) is ``None``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np

from cbst_tf.errors import CbstError
from cbst_tf.evaluate.confusion import ConfusionMatrix, mean_iou
from cbst_tf.evaluate.protocols import Protocol, get_protocol
from cbst_tf.labels import CLASS_NAMES

#: ``on_prediction(example, label, pred)``: the example dict (numpy), and the ground truth and
#: prediction (uint8, label size) exactly as the protocol scored them.
PredictionHook = Callable[[dict, np.ndarray, np.ndarray], None]


def _percent(value: float) -> float | None:
    return None if math.isnan(value) else 100.0 * float(value)


def summarize(cm: ConfusionMatrix, protocol: Protocol | str) -> dict[str, Any]:
    """Scores of a confusion matrix under ``protocol`` (percent; NaN -> None).

    ``iou`` holds every column of the paper's table (class name -> IoU), ``means`` every
    mean column (e.g. SYNTHIA's mIoU and mIoU*), ``miou`` the protocol's own mean over
    ``classes``.
    """
    protocol = get_protocol(protocol) if isinstance(protocol, str) else protocol
    iou = cm.iou()
    means = {head: _percent(mean_iou(iou, classes)) for head, classes in protocol.means}
    return {
        "protocol": protocol.name,
        "miou": means[protocol.primary],
        "means": means,
        "classes": list(protocol.class_names),
        "iou": {CLASS_NAMES[c]: _percent(iou[c]) for c in protocol.columns},
        "confusion_matrix": cm.matrix.tolist(),
        "num_pixels": int(cm.matrix.sum()),
    }


def _numpy_items(dataset: Any) -> Iterable[dict]:
    if hasattr(dataset, "as_numpy_iterator"):
        return dataset.as_numpy_iterator()
    return ({k: (v.numpy() if hasattr(v, "numpy") else v) for k, v in ex.items()} for ex in dataset)


def evaluate_model(
    model: Any,
    dataset: Any,
    protocol: Protocol | str,
    scales: Sequence[float] = (1.0,),
    flip: bool = False,
    *,
    input_scale: float = 1.0,
    total: int | None = None,
    on_prediction: PredictionHook | None = None,
    description: str = "evaluate",
    upsample: str = "bilinear_logits",
    long_side: int | None = None,
) -> dict[str, Any]:
    """mIoU of ``model`` on ``dataset`` (dicts with ``image`` float32 (H, W, 3) RGB 0..255 and
    ``label`` uint8 (h, w), 255 = ignore; a ``tf.data.Dataset`` from
    :func:`cbst_tf.data.reader.eval_dataset` or any iterable of such dicts).

    Multi-scale / flip testing as in :func:`cbst_tf.inference.predict_probs`, or with
    ``upsample="bicubic_probs"`` the official protocol (:mod:`cbst_tf.official_eval`).
    ``long_side``: resize each image so its longer side has this many pixels (replaces
    ``input_scale``). Returns :func:`summarize`'s dict plus ``num_images``, ``scales``,
    ``flip``, ``input_scale``, ``upsample`` and ``long_side``.
    """
    from cbst_tf.inference import protocol_probs
    from cbst_tf.progress import track

    protocol = get_protocol(protocol) if isinstance(protocol, str) else protocol
    cm = ConfusionMatrix(protocol.num_classes)
    n = 0
    for example in track(_numpy_items(dataset), total=total, description=description):
        label = np.asarray(example["label"])
        if label.ndim == 3 and label.shape[-1] == 1:
            label = label[..., 0]
        probs = protocol_probs(model, example["image"], scales, flip, upsample=upsample, long_side=long_side,
                               input_scale=input_scale, size=label.shape[:2])
        pred = protocol.predict(probs)
        gt = protocol.remap_label(label)
        cm.update(gt, pred)
        if on_prediction is not None:
            on_prediction(example, gt, pred)
        n += 1
    if n == 0:
        raise CbstError("evaluate: the dataset yielded no images")
    result = summarize(cm, protocol)
    result.update(num_images=n, scales=[float(s) for s in scales], flip=bool(flip),
                  input_scale=float(input_scale), upsample=upsample, long_side=long_side)
    return result
