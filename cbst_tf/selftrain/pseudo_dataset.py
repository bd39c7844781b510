"""The pseudo-labelled target as a TFRecord dataset that ``finetune`` reads like any other.

Each label slice writes ``pseudo/pseudo-<i>-of-<n>.tfrecord`` (target image bytes as
stored, never re-encoded, plus a PNG of selected train ids, 255 = not selected) and a part
summary. Whichever slice completes the set writes ``pseudo/manifest.json``,
``stats.json``, ``preview.png`` and finally ``DONE``; every file is written atomically, so
a killed slice is simply rerun.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable
from pathlib import Path

import cv2
import numpy as np
import tensorflow as tf

from cbst_tf.algos.quality import quality_summary
from cbst_tf.config import Config
from cbst_tf.data.manifest import ManifestStats
from cbst_tf.io import atomic_path, atomic_write_bytes, atomic_write_json, read_json
from cbst_tf.labels import CLASS_NAMES, colorize
from cbst_tf.layout import LabelLayout
from cbst_tf.runs import mark_done


def part_key(path: Path) -> str | None:
    """The key a part summary was written with (None when unreadable)."""
    from cbst_tf.errors import CbstError

    try:
        part = read_json(path)
    except CbstError:
        return None
    return part.get("key", "") if isinstance(part, dict) else None


def write_part(lab: LabelLayout, shard: tuple[int, int], records: Iterable, selected: np.ndarray,
               previews: list, quality: Callable[[], np.ndarray | None] | None = None, key: str = "") -> None:
    """Write slice i's TFRecord, then its part summary (the part file marks it complete).

    ``records`` yields ``(encoded image, format, (h, w), source_id, label PNG bytes,
    (256,) pixel counts of the label values, stride logits per pass or None)`` (the logits:
    LRENT's, stored for finetuning to rebuild the soft labels) and is consumed lazily (one image in memory
    at a time); ``selected`` and ``previews`` are read only after it is exhausted, so its
    producer may fill them. ``quality``, called after that too, returns the slice's
    :func:`~cbst_tf.algos.quality.quality_counts` when every image had target labels.
    """
    from cbst_tf.data.tfrecord import make_example

    i, n = shard
    pixels = np.zeros(256, np.int64)
    sizes: Counter[str] = Counter()
    count = 0
    with atomic_path(lab.pseudo_shard(i, n)) as tmp:
        with tf.io.TFRecordWriter(str(tmp)) as writer:
            for encoded, fmt, (h, w), source_id, label_png, counts, logits in records:
                writer.write(make_example(encoded, fmt, h, w, source_id, label_png, logits).SerializeToString())
                pixels += counts
                sizes[f"{h}x{w}"] += 1
                count += 1
    if previews:
        _write_preview(lab.preview, previews)
    atomic_write_json(lab.part(i, n), {
        "shard": lab.pseudo_shard(i, n).name, "num_images": count,
        "selected_pixels": [int(v) for v in selected], "label_pixels": [int(v) for v in pixels],
        "image_sizes": dict(sizes),
        "quality_counts": None if quality is None or (q := quality()) is None else np.asarray(q).tolist(),
        "key": key,
    })


def _write_preview(path: Path, previews: list) -> None:
    """Rows of (image | pseudo-label in the Cityscapes palette), like the paper's figures."""
    rows = []
    for image, labels in previews:
        rgb = np.clip(image, 0, 255).astype(np.uint8)
        rows.append(np.concatenate([rgb, colorize(labels)], axis=1))
    width = max(r.shape[1] for r in rows)
    rows = [cv2.resize(r, (width, int(r.shape[0] * width / r.shape[1])), interpolation=cv2.INTER_NEAREST)
            for r in rows]
    ok, buf = cv2.imencode(".png", cv2.cvtColor(np.concatenate(rows, axis=0), cv2.COLOR_RGB2BGR))
    if ok:
        atomic_write_bytes(path, buf.tobytes())


def soft_label_spec(cfg: Config, info: dict) -> dict | None:
    """What finetuning rebuilds LRENT's soft labels from besides each record's stride logits
    (None for hard labels): ``alpha``, the round's thresholds (null = +inf), the number of test
    passes stored per record, and the digest of the spatial priors (-SP) they were made with."""
    from cbst_tf.inference import inference_passes
    from cbst_tf.io import file_digest
    from cbst_tf.layout import priors_file
    from cbst_tf.selftrain.label_keys import lrent_weight, method_mode

    alpha = lrent_weight(cfg)
    if alpha is None:
        return None
    st = cfg.selftrain
    return {"regularizer": "lrent", "lr_weight": alpha, "thresholds": info["thresholds"],
            "passes": len(inference_passes(st.test_scales, st.test_flip)),
            "priors": file_digest(priors_file(cfg)) if method_mode(cfg)[1] else None}


def finalize_if_complete(cfg: Config, lab: LabelLayout, n: int, key: str | None = None) -> bool:
    """Once every slice's part exists (made under ``key``): manifest, ``stats.json`` and ``DONE``. Idempotent."""
    parts = [lab.part(i, n) for i in range(n)]
    if not all(p.is_file() and (key is None or part_key(p) == key) for p in parts):
        return False
    summaries = [read_json(p) for p in parts]
    info = read_json(lab.thresholds)
    c = cfg.data.num_classes
    selected = np.sum([s["selected_pixels"] for s in summaries], axis=0)
    pixels = np.sum([s["label_pixels"] for s in summaries], axis=0)
    sizes: Counter[str] = Counter()
    for s in summaries:
        sizes.update(s["image_sizes"])
    num_images = int(sum(s["num_images"] for s in summaries))
    totals = ManifestStats(c)
    totals.pixels[:] = pixels
    totals.sizes.update(sizes)
    totals.count = totals.labelled = num_images
    manifest = totals.manifest(
        name=f"pseudo-labels round {info['round']} ({info['method']})", fmt="pseudo", label_space="cityscapes19",
        class_names=CLASS_NAMES[:c], shards=[s["shard"] for s in summaries],
        shard_counts=[s["num_images"] for s in summaries], skipped=[],
        command=f"cbst-tf label --round {info['round']}")
    soft = soft_label_spec(cfg, info)
    if soft is not None:
        manifest["soft_labels"] = soft
    atomic_write_json(lab.pseudo_manifest, manifest)
    stats = dict(info)
    if cfg.selftrain.regularizer != "none":
        stats["regularizer"] = cfg.selftrain.regularizer
    if soft is not None:
        stats["lr_weight"] = soft["lr_weight"]
    stats.update({
        "selected_pixels": [int(v) for v in selected],
        "selected_share": float(selected.sum() / max(1, sum(info["predicted_pixels"]))),
        "num_images": num_images, "num_shards": n, "class_names": list(CLASS_NAMES[:c]),
        "source": cfg.data.target,
    })
    qualities = [s.get("quality_counts") for s in summaries]
    if all(q is not None for q in qualities):  # the target had labels: diagnostics for the user
        stats["pseudo_label_quality"] = quality_summary(np.sum(qualities, axis=0))
    atomic_write_json(lab.stats, stats)
    outputs = [lab.stats, lab.pseudo_manifest, *(lab.pseudo / s["shard"] for s in summaries)]
    mark_done(lab.root, f"round {info['round']}: {num_images} images",
              outputs=[str(path.relative_to(lab.root)) for path in outputs])
    return True
