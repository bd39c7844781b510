"""The two training steps of an experiment: ``pretrain`` (source only) and ``finetune`` (round R).

``run_finetune`` is step b) of the block coordinate descent of section 4.1: with the
pseudo-labels of round R fixed (written by the label step), minimise Eq. (3) (Eq. 6 for CBST,
the same loss once the labels are chosen) over the network weights, starting from the model
that produced those labels. As in the official code, a nested random subset of the labelled
source images (3% + 0.25% per round, at most 6%) is mixed in, target crops are centred on a
rare class with probability ``selftrain.mine_port`` (hard-sample mining, section 5), and a
round lasts ``selftrain.epochs_per_round`` epochs (appendix A: two target epochs).
"""

from __future__ import annotations

import copy
import math
from pathlib import Path

import numpy as np
import tensorflow as tf

from cbst_tf import runs
from cbst_tf.algos.policy import source_count
from cbst_tf.config import Config
from cbst_tf.errors import CbstError
from cbst_tf.io import read_json
from cbst_tf.runtime import Runtime, per_replica_batch, setup
from cbst_tf.train.checkpoint import export_weights
from cbst_tf.train.loop import DatasetFn, train
from cbst_tf.train.optimizer import build_optimizer

FINAL = "final.weights.h5"


def segment_seed(seed: int, segment: int) -> int:
    """The input-pipeline seed of one checkpoint segment (data order = f(seed, step))."""
    return (int(seed) * 1_000_003 + int(segment) * 7_919 + 17) % (2**31 - 1)


def source_subset(source_ids: list[str], round_: int, cfg: Config, n_target: int = 0) -> list[str]:
    """Round R's source images: the first ``n_R`` of ONE seeded permutation (nested across rounds).

    ``n_R = floor(N * min(start + (R - 1) * step, max))`` as in the official code
    (:func:`cbst_tf.algos.policy.source_count`), where N is
    the number of source images (``selftrain.source_portion_of: source``) or of target images
    (``target``: the portion is then a source:target ratio, at most every source image).
    """
    st = cfg.selftrain
    if st.source_portion_of == "target" and n_target <= 0:
        raise CbstError("selftrain.source_portion_of=target needs the number of target images, got "
                        f"{n_target}")
    base = len(source_ids) if st.source_portion_of == "source" else n_target
    order = np.random.default_rng(cfg.runtime.seed).permutation(len(source_ids))
    ordered = sorted(source_ids)
    count = source_count(round_, base, len(source_ids), st.source_portion_start, st.source_portion_step,
                         st.source_portion_max)
    return [ordered[i] for i in order[:count]]


def read_source_ids(directory: str | Path) -> list[str]:
    """All ``image/source_id`` values of a TFRecord directory (parsed, images not decoded)."""
    from cbst_tf.data.reader import read_manifest
    from cbst_tf.data.tfrecord import parse_source_id

    manifest = read_manifest(directory)
    files = [str(Path(directory) / name) for name in manifest["shards"]]
    ds = tf.data.TFRecordDataset(files).map(parse_source_id)
    return [s.decode("utf-8") for s in ds.as_numpy_iterator()]


def _pretrain_data(cfg: Config) -> DatasetFn:
    from cbst_tf.data.reader import train_dataset

    def dataset_fn(segment: int) -> tf.data.Dataset:
        return train_dataset(cfg.data.source, cfg.data, cfg.train.global_batch_size,
                             segment_seed(cfg.runtime.seed, segment))

    return dataset_fn


def _finish(ds: tf.data.Dataset, cfg: Config) -> tf.data.Dataset:
    return ds.prefetch(cfg.data.prefetch) if cfg.data.prefetch > 0 else ds


def _finetune_data(cfg: Config, pseudo: Path, subset: list[str], n_target: int,
                   rare: list[int]) -> DatasetFn:
    """Source subset + pseudo-labelled target, mixed in proportion to their sizes.

    The reader applies mining to every directory it is given, so the two domains are read
    separately and mixed here: mining only centres *target* crops (section 5).
    """
    from cbst_tf.data.reader import train_dataset

    batch = cfg.train.global_batch_size

    def dataset_fn(segment: int) -> tf.data.Dataset:
        seed = segment_seed(cfg.runtime.seed, segment)
        target = train_dataset(pseudo, cfg.data, 1, seed, mine_classes=rare or None,
                               mine_prob=cfg.selftrain.mine_port if rare else 0.0).unbatch()
        if not subset:
            return _finish(target.batch(batch, drop_remainder=True), cfg)
        source = train_dataset(cfg.data.source, cfg.data, 1, seed + 1, subsets=[subset]).unbatch()
        total = len(subset) + n_target
        mixed = tf.data.Dataset.sample_from_datasets(
            [source, target], [len(subset) / total, n_target / total], seed=seed + 2)
        return _finish(mixed.batch(batch, drop_remainder=True), cfg)

    return dataset_fn


def _build(cfg: Config, rt: Runtime, init: Path | None, steps: int, round_: int | None):
    from cbst_tf.models import build_from_config
    from cbst_tf.models.weights import load_checkpoint
    from cbst_tf.weights_check import check_weights_fit

    with rt.strategy.scope():
        if init is None:
            model = build_from_config(cfg)
        else:  # the previous round's model replaces any ImageNet initialisation
            no_init = copy.deepcopy(cfg)
            no_init.model.weights = None
            model = build_from_config(no_init)
            check_weights_fit(model, init, cfg.model.name, cfg.model.width, cfg.data.num_classes)
            load_checkpoint(model, init)
        optimizer = build_optimizer(cfg, model, total_steps=steps, round_=round_)
    return model, optimizer


def _train_step(cfg: Config, out: Path, rt: Runtime, dataset_fn: DatasetFn, steps: int,
                init: Path | None, round_: int | None, description: str) -> Path:
    model, optimizer = _build(cfg, rt, init, steps, round_)
    t = cfg.train
    result = train(model, optimizer, dataset_fn, rt, steps=steps, ckpt_dir=out / "ckpt",
                   checkpoint_every=t.checkpoint_every, keep_checkpoints=t.keep_checkpoints,
                   log_every=t.log_every, tb_dir=out / "tb", description=description)
    final = out / FINAL
    if rt.is_chief:
        export_weights(model, final)
        last = f" last_loss={result.losses[-1]:.6g}" if result.losses else ""
        runs.mark_done(out, f"steps={result.step}{last}")
    return final


def run_pretrain(cfg: Config) -> Path:
    """Supervised training on ``data.source`` for ``train.steps`` steps -> ``pretrain/final.weights.h5``."""
    out = Path(cfg.runtime.workdir) / "pretrain"  # created only once the inputs are checked
    if runs.is_done(out):
        runs.report_done(cfg, out, "pretrain", ignore=("selftrain.",))
        return out / FINAL
    if not cfg.data.source:
        raise CbstError("data.source: no source TFRecord directory configured")
    from cbst_tf.data.manifest import check_training_data

    check_training_data(cfg.data.source, cfg.data.num_classes, "data.source")
    rt = setup(cfg)
    per_replica_batch(cfg.train.global_batch_size, rt.strategy)
    runs.start_step(cfg, "pretrain")
    return _train_step(cfg, out, rt, _pretrain_data(cfg), cfg.train.steps, None, None, "pretrain")


def finetune_plan(cfg: Config, round_: int) -> dict:
    """Inputs of round R's finetuning, checked: init weights, pseudo-labels, rare classes, sizes."""
    work = Path(cfg.runtime.workdir)
    init = runs.weights_before_round(cfg, round_)
    if not init.is_file():
        raise CbstError(f"{init}: model to finetune from not found (run the previous step first)")
    label_dir = work / f"round_{round_}" / "label"
    pseudo = label_dir / "pseudo"
    if not (pseudo / "manifest.json").is_file():
        raise CbstError(f"{pseudo / 'manifest.json'}: pseudo-labels not found (run `cbst-tf label --round {round_}`)")
    stats_path = label_dir / "stats.json"
    rare = read_json(stats_path).get("rare_classes", [])
    if not isinstance(rare, list) or not all(isinstance(c, int) and 0 <= c < 255 for c in rare):
        raise CbstError(f"{stats_path}: key 'rare_classes' must be a list of train ids, got {rare!r}")
    from cbst_tf.data.manifest import check_training_data

    n_target = int(check_training_data(pseudo, cfg.data.num_classes, "the pseudo-labels")["num_examples"])
    if cfg.data.source:
        check_training_data(cfg.data.source, cfg.data.num_classes, "data.source")
    subset = source_subset(read_source_ids(cfg.data.source), round_, cfg, n_target) if cfg.data.source else []
    steps = math.ceil(cfg.selftrain.epochs_per_round * (n_target + len(subset)) / cfg.train.global_batch_size)
    return {"init": init, "pseudo": pseudo, "rare": rare, "n_target": n_target, "subset": subset,
            "steps": max(steps, 1)}


def run_finetune(cfg: Config, round_: int) -> Path:
    """Round R's network update -> ``round_R/finetune/final.weights.h5`` (skipped when DONE)."""
    out = Path(cfg.runtime.workdir) / f"round_{round_}" / "finetune"  # created once the inputs are checked
    if runs.is_done(out):
        runs.report_done(cfg, out, f"finetune round {round_}")
        return out / FINAL
    plan = finetune_plan(cfg, round_)
    rt = setup(cfg)
    per_replica_batch(cfg.train.global_batch_size, rt.strategy)
    runs.start_step(cfg, f"round_{round_}", "finetune")
    data = _finetune_data(cfg, plan["pseudo"], plan["subset"], plan["n_target"], plan["rare"])
    return _train_step(cfg, out, rt, data, plan["steps"], plan["init"], round_, f"finetune round {round_}")
