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

import math
from pathlib import Path

import numpy as np
import tensorflow as tf

from cbst_tf import runs
from cbst_tf.algos.policy import source_count
from cbst_tf.bounds import quote
from cbst_tf.config import Config
from cbst_tf.errors import CbstError
from cbst_tf.io import read_json
from cbst_tf.layout import RunLayout, weights_before_round
from cbst_tf.runtime import Runtime, per_replica_batch
from cbst_tf.train.checkpoint import export_weights
from cbst_tf.train.loop import DatasetFn, train
from cbst_tf.train.optimizer import build_optimizer

#: Settings that do not change a pretraining / round R's finetuning result (not compared on
#: resume or reported when DONE): the target is only read by later steps, the rounds' count and
#: test passes by other steps.
PRETRAIN_IGNORES = ("selftrain.", "data.target", "data.input_scale")
FINETUNE_IGNORES = ("selftrain.rounds", "selftrain.test_", "data.target_eval", "data.input_scale")
#: What a training step resumes from (discarded when its input files changed).
PARTIAL = ("ckpt", "tb", "final.weights.h5")


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
    from cbst_tf.data.reader import Source, mixed_batches

    def dataset_fn(segment: int) -> tf.data.Dataset:
        seed = segment_seed(cfg.runtime.seed, segment)
        return mixed_batches([Source(cfg.data.source, seed)], cfg.data, cfg.train.global_batch_size, seed)

    return dataset_fn


def _finetune_data(cfg: Config, pseudo: Path, subset: list[str], n_target: int,
                   rare: list[int], soft=None) -> DatasetFn:
    """Source subset + pseudo-labelled target, mixed in proportion to their sizes.

    Mining only centres *target* crops (section 5): it is an option of the target source.
    ``soft`` (LRENT): the target's :class:`~cbst_tf.selftrain.soft_crop.CropSoftLabels`; every
    example then carries soft labels (the source's one-hot).
    """
    from cbst_tf.data.reader import Source, mixed_batches

    tag = model_regularizer(cfg) is not None  # MR needs to know which examples are the target's
    soft_classes = cfg.data.num_classes if soft is not None else None

    def dataset_fn(segment: int) -> tf.data.Dataset:
        seed = segment_seed(cfg.runtime.seed, segment)
        target = Source(pseudo, seed, mine_classes=rare or None, mine_prob=cfg.selftrain.mine_port if rare else 0.0,
                        soft=soft)
        if not subset:
            return mixed_batches([target], cfg.data, cfg.train.global_batch_size, seed,
                                 tags=[True] if tag else None, soft_classes=soft_classes)
        source = Source(cfg.data.source, seed + 1, subset=subset)
        return mixed_batches([source, target], cfg.data, cfg.train.global_batch_size, seed + 2,
                             weights=[len(subset), n_target], tags=[False, True] if tag else None,
                             soft_classes=soft_classes)

    return dataset_fn


def model_regularizer(cfg: Config) -> tuple[str, float] | None:
    """``(kind, alpha)`` of CRST's model regularisation in finetuning (``selftrain.regularizer``
    mrkld / mrent / mrl2 with ``selftrain.mr_weight``), None for CBST and LRENT."""
    from cbst_tf.algos.crst import MODEL_REGULARIZERS

    kind = cfg.selftrain.regularizer
    return (kind, float(cfg.selftrain.mr_weight)) if kind in MODEL_REGULARIZERS else None


def finetune_loss(cfg: Config) -> tuple[str, float] | None:
    """What finetuning adds to CBST's hard cross-entropy: MR's ``(kind, alpha)``, ``("lrent",
    alpha)`` for LRENT's soft cross-entropy, or None (CBST; also LRENT's limit ``lr_weight: 0``)."""
    from cbst_tf.selftrain.label_keys import lrent_weight

    alpha = lrent_weight(cfg)
    return ("lrent", alpha) if alpha is not None else model_regularizer(cfg)


def _build(cfg: Config, rt: Runtime, init: Path | None, steps: int, round_: int | None):
    from cbst_tf.models import build_from_config

    with rt.strategy.scope():  # the previous round's model (init) replaces any ImageNet initialisation
        model = build_from_config(cfg, weights=init)
        optimizer = build_optimizer(cfg, model, total_steps=steps, round_=round_)
    return model, optimizer


def _train_step(cfg: Config, run: runs.Step, dataset_fn: DatasetFn, steps: int,
                init: Path | None, round_: int | None, description: str) -> Path:
    out, rt = run.path, run.runtime
    model, optimizer = _build(cfg, rt, init, steps, round_)
    t = cfg.train
    regularizer = finetune_loss(cfg) if round_ is not None else None
    result = train(model, optimizer, dataset_fn, rt, steps=steps, ckpt_dir=out / "ckpt",
                   checkpoint_every=t.checkpoint_every, keep_checkpoints=t.keep_checkpoints,
                   log_every=t.log_every, tb_dir=out / "tb", description=description, regularizer=regularizer)
    final = RunLayout.final(out)
    if rt.is_chief:
        export_weights(model, final)
        last = f" last_loss={result.losses[-1]:.6g}" if result.losses else ""
        run.finish(f"steps={result.step}{last}", outputs=(final.name,))
    return final


def _digests(cfg: Config, files: dict, init: bool = False) -> dict[str, str]:
    """Digests of a training step's input files (datasets by manifest and shards, weights by
    bytes), plus (``init``) the initialisation ``model.weights`` when it is a local file: its checkpoints
    are resumed only while these are unchanged (:func:`cbst_tf.runs.step`)."""
    from cbst_tf.data.manifest import dataset_digest
    from cbst_tf.io import file_digest

    out = {name: (dataset_digest(path) if Path(path).is_dir() else file_digest(path)) if path else ""
           for name, path in files.items()}
    if init and cfg.model.weights and cfg.model.weights != "imagenet":
        out["model.weights"] = file_digest(cfg.model.weights)
    return out


def _pretrain_inputs(cfg: Config, rt: Runtime) -> None:
    if not cfg.data.source:
        raise CbstError("data.source: no source TFRecord directory configured")
    from cbst_tf.data.manifest import check_training_data

    check_training_data(cfg.data.source, cfg.data.num_classes, "data.source")
    per_replica_batch(cfg.train.global_batch_size, rt.strategy)


def run_pretrain(cfg: Config) -> Path:
    """Supervised training on ``data.source`` for ``train.steps`` steps -> ``pretrain/final.weights.h5``."""
    out = RunLayout.of(cfg).pretrain
    with runs.step(cfg, out, "pretrain", ignore=PRETRAIN_IGNORES, prepare=lambda rt: _pretrain_inputs(cfg, rt),
                   inputs=lambda: _digests(cfg, {"data.source": cfg.data.source}, init=True), partial=PARTIAL) as run:
        if run.done:
            return RunLayout.final(out)
        return _train_step(cfg, run, _pretrain_data(cfg), cfg.train.steps, None, None, "pretrain")


def finetune_plan(cfg: Config, round_: int) -> dict:
    """Inputs of round R's finetuning, checked: init weights, pseudo-labels, rare classes, sizes."""
    layout = RunLayout.of(cfg)
    init = weights_before_round(cfg, round_)
    if not init.is_file():
        raise CbstError(f"{init}: model to finetune from not found (run the previous step first)")
    pseudo = layout.pseudo(round_)
    if not (pseudo / "manifest.json").is_file():
        raise CbstError(f"{pseudo / 'manifest.json'}: pseudo-labels not found (run `cbst-tf label --round {round_}`)")
    stats_path = layout.stats(round_)
    rare = read_json(stats_path).get("rare_classes", [])
    if not isinstance(rare, list) or not all(isinstance(c, int) and 0 <= c < 255 for c in rare):
        raise CbstError(f"{stats_path}: key 'rare_classes' must be a list of train ids, got {quote(rare)}")
    from cbst_tf.data.manifest import check_training_data

    pseudo_manifest = check_training_data(pseudo, cfg.data.num_classes, "the pseudo-labels")
    n_target = int(pseudo_manifest["num_examples"])
    from cbst_tf.selftrain.soft_crop import soft_labels_of

    soft = soft_labels_of(cfg, pseudo / "manifest.json", pseudo_manifest)
    if cfg.data.source:
        check_training_data(cfg.data.source, cfg.data.num_classes, "data.source")
    subset = source_subset(read_source_ids(cfg.data.source), round_, cfg, n_target) if cfg.data.source else []
    steps = math.ceil(cfg.selftrain.epochs_per_round * (n_target + len(subset)) / cfg.train.global_batch_size)
    return {"init": init, "pseudo": pseudo, "rare": rare, "n_target": n_target, "subset": subset,
            "steps": max(steps, 1), "soft": soft}


def _finetune_inputs(cfg: Config, round_: int, rt: Runtime) -> dict:
    plan = finetune_plan(cfg, round_)
    per_replica_batch(cfg.train.global_batch_size, rt.strategy)
    return plan


def run_finetune(cfg: Config, round_: int) -> Path:
    """Round R's network update -> ``round_R/finetune/final.weights.h5`` (skipped when DONE)."""
    out = RunLayout.of(cfg).finetune(round_)
    layout = RunLayout.of(cfg)
    inputs = {"model": weights_before_round(cfg, round_), "pseudo-labels": layout.pseudo(round_),
              "data.source": cfg.data.source}
    with runs.step(cfg, out, f"finetune round {round_}", ignore=FINETUNE_IGNORES,
                   prepare=lambda rt: _finetune_inputs(cfg, round_, rt), inputs=lambda: _digests(cfg, inputs),
                   partial=PARTIAL) as run:
        if run.done:
            return RunLayout.final(out)
        plan = run.plan
        data = _finetune_data(cfg, plan["pseudo"], plan["subset"], plan["n_target"], plan["rare"], plan["soft"])
        return _train_step(cfg, run, data, plan["steps"], plan["init"], round_, f"finetune round {round_}")
