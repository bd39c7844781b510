"""tf.data pipelines over converted TFRecord directories (contract: docs/ARCHITECTURE.md).

``mixed_batches``: THE training input (pretrain and finetune): each :class:`Source`
(directory + its own subset, hard-sample mining of section 5 and seed) yields infinite,
shuffled, augmented (appendix A) unbatched examples; the sources are mixed, then batched,
in one place. ``train_dataset`` is its shorthand for directories with the same options. ``eval_dataset``: ordered, unbatched,
with ``source_id`` and the raw bytes, sliceable across workers.

Host memory: shuffling happens on *serialized* records (compressed bytes), and decode
parallelism and prefetch depth come from the config instead of AUTOTUNE, because a few
dozen decoded 1024x2048 float images already take gigabytes.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tensorflow as tf

from cbst_tf.config import DataConfig
from cbst_tf.data.augment import augment
from cbst_tf.data.manifest import read_manifest
from cbst_tf.data.tfrecord import parse_example, parse_source_id
from cbst_tf.errors import CbstError

__all__ = ["Source", "decode_example", "decode_image", "eval_dataset", "mixed_batches", "read_manifest",
           "source_examples", "train_dataset"]


def decode_image(encoded: tf.Tensor | bytes) -> tf.Tensor:
    """Stored PNG/JPEG bytes as float32 (H, W, 3) RGB 0..255 (graph-safe)."""
    image = tf.io.decode_image(encoded, channels=3, expand_animations=False)
    image.set_shape([None, None, 3])
    return tf.cast(image, tf.float32)


def decode_example(serialized: tf.Tensor) -> dict[str, tf.Tensor]:
    """Parse and decode: image float32 (H, W, 3) RGB 0..255, label uint8 (H, W) (255 if absent)."""
    f = parse_example(serialized)
    image = decode_image(f["encoded"])
    shape = tf.shape(image)[:2]
    label = tf.cond(
        tf.strings.length(f["label"]) > 0,
        lambda: tf.io.decode_png(f["label"], channels=1)[..., 0],
        lambda: tf.fill(shape, tf.constant(255, tf.uint8)),
    )
    label.set_shape([None, None])
    return {"image": image, "label": label, "source_id": f["source_id"],
            "encoded": f["encoded"], "format": f["format"]}


def _shard_files(directory: str | Path, manifest: dict[str, Any]) -> list[str]:
    return [str(Path(directory) / name) for name in manifest["shards"]]


def _options() -> tf.data.Options:
    opts = tf.data.Options()
    opts.deterministic = True
    return opts


def _keep(ds: tf.data.Dataset, ids: Collection[str], keep: bool) -> tf.data.Dataset:
    """Serialized records whose ``source_id`` is (``keep``) or is not in ``ids``."""
    keys = tf.constant(sorted(set(ids)), dtype=tf.string)
    table = tf.lookup.StaticHashTable(
        tf.lookup.KeyValueTensorInitializer(keys, tf.ones_like(keys, dtype=tf.int32)), default_value=0)
    if keep:
        return ds.filter(lambda rec: table.lookup(parse_source_id(rec)) > 0)
    return ds.filter(lambda rec: table.lookup(parse_source_id(rec)) == 0)


def _without_bad(ds: tf.data.Dataset, directory: str | Path, data_cfg: DataConfig) -> tf.data.Dataset:
    """``data.skip_bad``: leave out the records that cannot be decoded (:mod:`cbst_tf.data.check`)."""
    if not data_cfg.skip_bad:
        return ds
    from cbst_tf.data.check import records_to_skip

    bad = records_to_skip(directory)
    return _keep(ds, [b.source_id for b in bad], keep=False) if bad else ds


def _records(directory: str | Path, manifest: dict, data_cfg: DataConfig, seed: int,
             subset: Collection[str] | None) -> tf.data.Dataset:
    """Serialized records of one directory: shuffled shards, interleaved, filtered, shuffled, repeated."""
    files = _shard_files(directory, manifest)
    ds = tf.data.Dataset.from_tensor_slices(files).shuffle(len(files), seed=seed)
    cycle = max(1, min(data_cfg.cycle_length, len(files)))
    ds = ds.interleave(tf.data.TFRecordDataset, cycle_length=cycle, block_length=1,
                       num_parallel_calls=cycle, deterministic=True)
    if subset is not None:
        ds = _keep(ds, subset, keep=True)
    ds = _without_bad(ds, directory, data_cfg)
    # An epoch that yields nothing ends the repeat (TF guards against an infinite loop).
    return ds.shuffle(data_cfg.shuffle_buffer, seed=seed + 1, reshuffle_each_iteration=True).repeat()


@dataclass(frozen=True)
class Source:
    """One TFRecord directory of a training mix, with its own options.

    ``subset``: None or the ``source_id`` strings to keep (nested source subsets of
    finetuning; its size counts as the number of examples). ``mine_classes``/``mine_prob``:
    hard-sample mining crops (section 5), e.g. for the pseudo-labelled target only. ``seed``:
    its shuffling and augmentation (the same seed gives the same examples). ``soft``: LRENT
    pseudo-labels, whose soft labels each crop rebuilds from its record's stride logits (an
    object with ``parse(serialized)`` and ``crop(logits, size, offset, crop_hw)``,
    :class:`cbst_tf.selftrain.soft_crop.CropSoftLabels`).
    """

    directory: str | Path
    seed: int
    subset: Collection[str] | None = None
    mine_classes: Sequence[int] | None = None
    mine_prob: float = 0.0
    soft: Any = None


def source_examples(source: Source, data_cfg: DataConfig, manifest: dict | None = None,
                    soft_classes: int | None = None) -> tuple[tf.data.Dataset, int]:
    """Infinite, shuffled, augmented UNBATCHED examples ``(image float32 [h,w,3], label int32 [h,w])``
    of one directory, and its number of examples (to weight it in a mix).

    ``soft_classes`` (LRENT's finetuning): a third element, float32 [h,w,C] soft labels: the
    source's rebuilt LRENT labels (``source.soft``), else the one-hot of the label (all zero
    where it is 255), as the official code feeds source images to the soft cross-entropy."""
    manifest = read_manifest(source.directory) if manifest is None else manifest
    size = manifest["num_examples"] if source.subset is None else len(set(source.subset))
    seed = source.seed
    crop = tuple(int(v) for v in data_cfg.crop_size)
    mine = [int(c) for c in source.mine_classes] if source.mine_classes is not None else None

    if source.soft is not None and soft_classes != source.soft.num_classes:
        raise CbstError(f"{source.directory}: soft labels of {source.soft.num_classes} classes in a mix of "
                        f"{soft_classes}")

    def load(index: tf.Tensor, serialized: tf.Tensor) -> tuple[tf.Tensor, ...]:
        ex = decode_example(serialized)
        example_seed = tf.stack([tf.constant(seed, tf.int64), index])
        soft = None
        if source.soft is not None:
            logits = source.soft.parse(serialized)
            soft = lambda size, offset: source.soft.crop(logits, size, offset, crop)  # noqa: E731
        out = augment(ex["image"], ex["label"], example_seed, crop_hw=crop, scale_range=data_cfg.scale_range,
                      mean=data_cfg.image_mean, flip=data_cfg.flip, mine_classes=mine, mine_prob=source.mine_prob,
                      soft=soft)
        if soft_classes is None:
            return out
        # one-hot for hard labels: tf.one_hot gives zeros for 255
        y = out[2] if soft is not None else tf.one_hot(out[1], soft_classes, dtype=tf.float32)
        return out[0], out[1], tf.ensure_shape(y, [*crop, soft_classes])

    ds = _records(source.directory, manifest, data_cfg, seed + 7919, source.subset)
    return ds.enumerate().map(load, num_parallel_calls=data_cfg.parallel_calls, deterministic=True), size


def mixed_batches(sources: Sequence[Source], data_cfg: DataConfig, batch_size: int, seed: int,
                  weights: Sequence[float] | None = None, tags: Sequence[bool] | None = None,
                  soft_classes: int | None = None) -> tf.data.Dataset:
    """THE training input of every step: each source's examples, mixed by ``weights``
    (``tf.data.Dataset.sample_from_datasets`` seeded with ``seed``; default: in proportion to
    the sources' sizes, so every example is equally likely), then batched and prefetched.

    Infinite batches ``(image float32 [B,h,w,3] RGB 0..255, label int32 [B,h,w])``. With ``tags``
    (one bool per source, e.g. "is a pseudo-labelled target"), a third element ``bool [B]`` says
    which source each example came from (CRST's model regularisation applies to the target only);
    the examples and their order are the same as without. With ``soft_classes`` (LRENT), the
    third element is instead float32 [B,h,w,C] soft labels (:func:`source_examples`).
    """
    if not sources:
        raise CbstError("train_dataset: no directories given")
    if batch_size < 1:
        raise CbstError(f"train_dataset: batch_size must be >= 1, got {batch_size}")
    manifests = [read_manifest(s.directory) for s in sources]
    sizes = [m["num_examples"] if s.subset is None else len(set(s.subset)) for m, s in zip(manifests, sources, strict=True)]
    if weights is None:
        weights = [float(n) for n in sizes]
    else:
        weights = [float(w) for w in weights]
        if len(weights) != len(sources) or min(weights) < 0:
            raise CbstError(f"train_dataset: weights {weights} must be {len(sources)} non-negative numbers")
        for s, w, n in zip(sources, weights, sizes, strict=True):
            if w > 0 and n == 0:
                raise CbstError(f"{s.directory}: sampling weight {w} but no examples (empty subset?)")
    keep = [i for i, w in enumerate(weights) if w > 0]
    if not keep:
        raise CbstError(f"train_dataset: nothing to sample from {[str(s.directory) for s in sources]}")
    parts = [source_examples(sources[i], data_cfg, manifests[i], soft_classes)[0] for i in keep]
    if tags is not None and soft_classes is not None:
        raise CbstError("train_dataset: tags (model regularisation) and soft labels (LRENT) exclude each other")
    if tags is not None:
        if len(tags) != len(sources):
            raise CbstError(f"train_dataset: tags {list(tags)} must be {len(sources)} booleans")
        parts = [part.map(lambda image, label, tag=bool(tags[i]): (image, label, tf.constant(tag)))
                 for part, i in zip(parts, keep, strict=True)]
    if len(parts) == 1:
        ds = parts[0]
    else:
        total = sum(weights[i] for i in keep)
        ds = tf.data.Dataset.sample_from_datasets(parts, [weights[i] / total for i in keep], seed=seed)
    ds = ds.batch(batch_size, drop_remainder=True)
    if data_cfg.prefetch > 0:
        ds = ds.prefetch(data_cfg.prefetch)
    return ds.with_options(_options())


def train_dataset(
    dirs: str | Path | Sequence[str | Path],
    data_cfg: DataConfig,
    batch_size: int,
    seed: int,
    *,
    weights: Sequence[float] | None = None,
    mine_classes: Sequence[int] | None = None,
    mine_prob: float = 0.0,
    subsets: Sequence[Collection[str] | None] | None = None,
) -> tf.data.Dataset:
    """:func:`mixed_batches` of ``dirs`` (one or several directories) with the same mining
    options for each: directory i is shuffled and augmented with seed ``seed + i``, the mix
    is drawn with ``seed``. ``subsets``: per directory, None or the ``source_id``\ s to keep.
    """
    dirs = [dirs] if isinstance(dirs, (str, Path)) else list(dirs)
    subsets = list(subsets) if subsets is not None else [None] * len(dirs)
    if len(subsets) != len(dirs):
        raise CbstError(f"train_dataset: {len(subsets)} subsets for {len(dirs)} directories")
    sources = [Source(d, seed + i, subset, mine_classes, mine_prob)
               for i, (d, subset) in enumerate(zip(dirs, subsets, strict=True))]
    return mixed_batches(sources, data_cfg, batch_size, seed, weights)


def eval_dataset(directory: str | Path, data_cfg: DataConfig, *, shard: tuple[int, int] = (0, 1),
                 decode: bool = True, subset: Collection[str] | None = None) -> tf.data.Dataset:
    """Ordered, unbatched dicts ``image, label, source_id, encoded, format``; ``shard=(i, n)``
    keeps examples i, i+n, i+2n, ... of the directory's order. ``decode=False`` skips
    image decoding and yields the raw fields of ``parse_example`` (``encoded, format,
    height, width, label, source_id``). ``subset``: only the examples with these ``source_id``\ s
    (kept before slicing, so the slices split the subset)."""
    i, n = shard
    if not (n >= 1 and 0 <= i < n):
        raise CbstError(f"eval_dataset: shard {shard} must satisfy 0 <= i < n")
    manifest = read_manifest(directory)
    ds = tf.data.TFRecordDataset(_shard_files(directory, manifest))
    if subset is not None:
        ds = _keep(ds, subset, keep=True)
    if n > 1:
        ds = ds.shard(n, i)
    ds = _without_bad(ds, directory, data_cfg)
    ds = ds.map(decode_example if decode else parse_example, num_parallel_calls=data_cfg.parallel_calls,
                deterministic=True)
    if data_cfg.prefetch > 0:
        ds = ds.prefetch(data_cfg.prefetch)
    return ds.with_options(_options())
