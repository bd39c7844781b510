"""CRST's class-balanced target subset (opt-in ``selftrain.target_subset``), made once per run.

The official CRST (and CBST) runs self-train on 505 of Cityscapes' 2,975 train images
(``train_ClsConfSet.lst``), chosen by the authors' "class-balanced score" of the source model:
per image, the mean over the predicted classes of the mean confidence of the pixels predicted
as that class (:func:`cbst_tf.algos.class_balanced_score`; yzou2/CRST issues #11, #16). Here
the source model (round 1's model) scores every ``data.target`` image with the label step's own
probabilities (its test passes, :func:`~cbst_tf.selftrain.logit_cache.probs_from_logits`) and
the top ``round(portion * N)`` images are kept (:func:`cbst_tf.algos.select_by_score`). Every
round's label step then reads only those images, so the thresholds, the pseudo-labels and
finetuning's target all come from the subset.

``<workdir>/target_subset.json`` holds the ids, every image's score and the key of what made it
(the source model's and the target's digests, the portion and the settings that change the
probabilities); a file made under another key is recomputed, never reused.
"""

from __future__ import annotations

import hashlib
import json

import numpy as np
import tensorflow as tf

from cbst_tf import progress
from cbst_tf.config import Config
from cbst_tf.errors import CbstError
from cbst_tf.io import atomic_write_json, read_json
from cbst_tf.layout import RunLayout


def class_confidence(probs: tf.Tensor, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Per class: (float64 sum of the float16-rounded confidences ``max_k p_k`` of the pixels
    predicted as it, int64 count); the TF twin of :func:`cbst_tf.algos.image_class_confidence`
    (the same classes, first maximum, and confidences; sums in another order)."""
    from cbst_tf.selftrain.device_ops import first_argmax

    classes, top = first_argmax(tf.reshape(probs, [-1, num_classes]))  # the histograms' predicted class
    conf = tf.cast(tf.cast(top, tf.float16), tf.float64)
    sums = tf.math.unsorted_segment_sum(conf, classes, num_classes)
    counts = tf.math.unsorted_segment_sum(tf.ones_like(classes, tf.int64), classes, num_classes)
    return sums.numpy(), counts.numpy()


def _key(cfg: Config) -> str:
    from cbst_tf.selftrain.label_keys import label_key

    # round 1's label key digests the source model, the target and every probability setting
    return hashlib.sha256(json.dumps([label_key(cfg, 1), cfg.selftrain.target_subset]).encode()).hexdigest()


def target_subset_ids(cfg: Config) -> list[str] | None:
    """The ``source_id``\\ s of the target subset (None without ``selftrain.target_subset``),
    computed with the source model on first use and kept in ``<workdir>/target_subset.json``."""
    portion = cfg.selftrain.target_subset
    if portion is None:
        return None
    path = RunLayout.of(cfg).target_subset
    key = _key(cfg)
    if path.is_file():
        info = read_json(path)
        if isinstance(info, dict) and info.get("key") == key and isinstance(info.get("ids"), list):
            return [str(i) for i in info["ids"]]
        progress.log(f"{path}: made by another source model, target or portion; recomputing it")
    ids, scores = _score(cfg)
    from cbst_tf.algos.crst import select_by_score

    keep = select_by_score(scores, portion)
    chosen = [ids[i] for i in keep]
    atomic_write_json(path, {"portion": portion, "num_images": len(ids), "num_selected": len(chosen),
                             "score": "mean over predicted classes of their mean confidence (source model)",
                             "ids": chosen, "scores": dict(zip(ids, scores, strict=True)), "key": key})
    progress.log(f"target subset: {len(chosen)} of {len(ids)} target images by class-balanced confidence")
    return chosen


def _score(cfg: Config) -> tuple[list[str], list[float]]:
    from cbst_tf.algos.crst import class_balanced_score
    from cbst_tf.data.reader import eval_dataset, read_manifest
    from cbst_tf.selftrain.label_step import stride_logits
    from cbst_tf.selftrain.logit_cache import probs_from_logits

    if not cfg.data.target:
        raise CbstError("data.target: no unlabelled target TFRecord directory configured")
    infer = stride_logits(cfg, 1)  # the source model, as round 1's label step runs it
    total = int(read_manifest(cfg.data.target)["num_examples"])
    ids, scores = [], []
    examples = eval_dataset(cfg.data.target, cfg.data).as_numpy_iterator()
    for ex in progress.track(examples, total, "target subset: scoring"):
        probs = probs_from_logits(infer(ex["image"]), tuple(ex["image"].shape[:2]))
        sums, counts = class_confidence(probs, cfg.data.num_classes)
        ids.append(ex["source_id"].decode())
        scores.append(class_balanced_score(sums, counts))
    return ids, scores
