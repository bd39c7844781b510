"""``cbst-tf label --round R``: step a) of the block coordinate descent (section 4.1).

Phase ``stats`` runs the round's model over one slice of the unlabelled target (in
deterministic order), caches its stride-level logits and accumulates the exact streaming
confidence histograms (:class:`~cbst_tf.algos.ConfidenceHistogram`). Phase ``write``
merges every slice's histograms, turns them into thresholds exp(-k_c) for the round's
portion p_R (Algorithm 1 for ST, Algorithm 2 for CBST; priors per Eq. 9) and writes the
slice's pseudo-labels (Eq. 5 / Eq. 8 / Eq. 9) as TFRecords that ``finetune`` reads like
any labelled dataset. The last slice to finish writes ``manifest.json``, ``stats.json``
and ``DONE``. ``--shard i/n`` lets a Kubernetes Indexed Job fan both phases out.

Per-pixel work runs where the network runs (:mod:`~cbst_tf.selftrain.device_ops`: TF
twins of the numpy reference, equal bit for bit): full-resolution probabilities never
reach the host, which only moves the float16 stride logits to the cache and the label PNGs
to the TFRecord. Phase ``write`` reads the target records without decoding the images.

Disk: the pseudo-label TFRecords re-store the target image bytes (Cityscapes train,
2,975 PNGs: about 6.5 GB per round) plus a small PNG of train ids per image; the logit
cache (float16, 1/8 resolution: about 1.2 MB per image and test pass) is deleted once the
round's labels are complete. CRST's LRENT (``selftrain.regularizer: lrent``) selects with
its own rule (:class:`~cbst_tf.selftrain.soft_labels.HardOfSoft`) and stores each image's
stride logits in its record, from which finetuning rebuilds the soft labels of every crop
(:mod:`~cbst_tf.selftrain.soft_crop`).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

from cbst_tf import progress, runs
from cbst_tf.algos.quality import quality_counts
from cbst_tf.config import Config
from cbst_tf.errors import CbstError
from cbst_tf.inference import inference_passes
from cbst_tf.io import atomic_write_json, read_json
from cbst_tf.layout import LabelLayout, RunLayout, priors_file, require, weights_before_round
from cbst_tf.selftrain.device_ops import ScaledPriors
from cbst_tf.selftrain.histogram_file import histogram_key, load_histogram, save_histogram
from cbst_tf.selftrain.label_keys import LABEL_IGNORES, label_inputs, label_key, lrent_weight, method_mode
from cbst_tf.selftrain.logit_cache import (
    BackgroundWriter,
    StrideLogits,
    cache_key,
    cache_path,
    claim_cache,
    prefetch_logits,
    probs_from_logits,
)
from cbst_tf.selftrain.priors_step import load_priors
from cbst_tf.selftrain.pseudo_dataset import finalize_if_complete, part_key, write_part


class _PriorsAtSize:
    """Eq. 9 priors q_n(c) resized (bilinear) to each image size on first use, kept on the device.

    The maps are divided by their global maximum once, at the prior resolution, and are
    NOT renormalised per size: a global constant leaves the Eq. 9 argmax and the
    rank-based thresholds unchanged, and keeps potentials of images of different sizes
    comparable (with maximum 1 the histograms' power-of-two prior scale is 1 for every
    size, so phase 1 and phase 2 quantise identically).
    """

    def __init__(self, priors: np.ndarray | None):
        self.priors = None if priors is None else (priors / float(priors.max())).astype(np.float32)
        self.cache: dict[tuple[int, int], ScaledPriors] = {}

    def __call__(self, size: tuple[int, int]) -> ScaledPriors | None:
        if self.priors is None:
            return None
        if size not in self.cache:
            import cv2

            resized = cv2.resize(self.priors, (size[1], size[0]), interpolation=cv2.INTER_LINEAR)
            self.cache[size] = ScaledPriors.of(resized.reshape(size[0], size[1], -1))
        return self.cache[size]


def stride_logits(cfg: Config, round_: int) -> StrideLogits:
    """The round's model (without its final upsampling) as cached test passes."""
    from cbst_tf.models import build_from_config

    weights = require(weights_before_round(cfg, round_), "model weights",
                      "run `cbst-tf pretrain`" if round_ == 1 else f"run `cbst-tf finetune --round {round_ - 1}`")
    model = build_from_config(cfg, weights=weights, upsample=False)
    return StrideLogits(model, cfg.selftrain.test_scales, cfg.selftrain.test_flip, cfg.data.input_scale)


def _target_examples(cfg: Config, shard: tuple[int, int], decode: bool = True):
    from cbst_tf.data.reader import eval_dataset, read_manifest
    from cbst_tf.selftrain.target_subset import target_subset_ids

    if not cfg.data.target:
        raise CbstError("data.target: no unlabelled target TFRecord directory configured")
    subset = target_subset_ids(cfg)  # CRST's class-balanced subset (opt-in), else every image
    total = int(read_manifest(cfg.data.target)["num_examples"]) if subset is None else len(subset)
    count = len(range(shard[0], total, shard[1]))
    return eval_dataset(cfg.data.target, cfg.data, shard=shard, decode=decode, subset=subset).as_numpy_iterator(), count


def _cache_dir(lab: LabelLayout, round_: int, shard: tuple[int, int], key: str) -> Path:
    """A slice's logit cache, emptied (with a log line) when another model, data or setting made it."""
    cache_dir = lab.cache(*shard)
    if cache_dir.is_dir() and cache_key(cache_dir) != key:
        progress.log(f"round {round_} label: discarding the logit cache {cache_dir}: made by another model, "
                     "data or settings")
        shutil.rmtree(cache_dir, ignore_errors=True)
    claim_cache(cache_dir, key)
    return cache_dir


def _phase_stats(cfg: Config, lab: LabelLayout, round_: int, shard: tuple[int, int], priors: _PriorsAtSize,
                 key: str) -> None:
    from cbst_tf.selftrain.device_ops import DeviceHistogram

    out = lab.hist(*shard)
    if out.is_file():
        if histogram_key(out) == key:
            return
        progress.log(f"round {round_} label: discarding {out}: made by another model, data or settings")
        out.unlink()
    infer = stride_logits(cfg, round_)
    cache_dir = _cache_dir(lab, round_, shard, key)
    hist = DeviceHistogram(cfg.data.num_classes, subsample=cfg.selftrain.subsample)
    examples, count = _target_examples(cfg, shard)
    items = ((cache_path(cache_dir, k), ex["source_id"].decode(), ex) for k, ex in enumerate(examples))
    with BackgroundWriter(key) as writer:
        cached = prefetch_logits(items, len(infer.passes), key)  # a resumed slice reuses its cache
        for k, (ex, logits) in enumerate(progress.track(cached, count,
                                                        f"round {round_} label: inference {shard[0]}/{shard[1]}")):
            source_id = ex["source_id"].decode()
            if logits is None:
                logits = infer(ex["image"])
                writer.save(cache_path(cache_dir, k), source_id, logits)
            size = tuple(ex["image"].shape[:2])
            hist.update(probs_from_logits(logits, size), priors=priors(size), name=source_id)
    save_histogram(hist.result(), out, key)


def merged_histogram(lab: LabelLayout, n: int, num_classes: int, key: str | None = None):
    """Sum of every slice's histograms; a one-line error lists the slices still missing (or made
    by another model, data or settings than ``key``)."""
    from cbst_tf.algos import ConfidenceHistogram

    paths = [lab.hist(i, n) for i in range(n)]
    missing = [str(i) for i, p in enumerate(paths) if not p.is_file() or (key is not None and histogram_key(p) != key)]
    if missing:
        raise CbstError(f"{lab.hists}: phase 'stats' not finished for shard(s) "
                        f"{', '.join(missing)} of {n}; run `cbst-tf label --phase stats --shard i/{n}` for them")
    total = ConfidenceHistogram(num_classes)
    for p in paths:
        total = total.merge(load_histogram(p))
    return total


def round_thresholds(cfg: Config, lab: LabelLayout, round_: int, n: int, key: str | None = None) -> dict:
    """Thresholds exp(-k_c) of round R from the merged histograms (same result in every slice)."""
    from cbst_tf.algos import portion_for_round, rare_classes, thresholds_from_histogram

    mode, _ = method_mode(cfg)
    st = cfg.selftrain
    portion = portion_for_round(round_, st.portion_start, st.portion_step, st.portion_max)
    hist = merged_histogram(lab, n, cfg.data.num_classes, key)
    thresholds = thresholds_from_histogram(hist, portion, mode, rank=st.rank)
    predicted = hist.predicted_pixels
    info = {
        "round": round_, "portion": portion, "mode": mode, "method": st.method, "rank": st.rank,
        # null = +inf: floor(p * N_c) = 0, the class selects nothing (strict JSON has no Infinity).
        "thresholds": [float(t) if np.isfinite(t) else None for t in thresholds],
        "predicted_pixels": [int(v) for v in predicted],
        "rare_classes": [int(c) for c in rare_classes(predicted, st.rare_threshold, st.rare_min_classes)],
    }
    atomic_write_json(lab.thresholds, info)
    return info


def _target_labels(encoded: bytes, shape: tuple[int, ...]) -> np.ndarray | None:
    """The target's own train-id label map, or None when absent, unreadable or of another size
    (it only feeds diagnostics, so it never stops the step)."""
    if not encoded:
        return None
    import cv2

    truth = cv2.imdecode(np.frombuffer(encoded, np.uint8), cv2.IMREAD_UNCHANGED)
    if truth is None or truth.ndim != 2 or truth.shape != tuple(shape[:2]) or truth.dtype != np.uint8:
        return None
    return truth


def _phase_write(cfg: Config, lab: LabelLayout, round_: int, shard: tuple[int, int], priors: _PriorsAtSize,
                 key: str) -> None:
    from cbst_tf.data.reader import decode_image
    from cbst_tf.data.tfrecord import encode_label_png
    from cbst_tf.evaluate.protocols import get_protocol
    from cbst_tf.selftrain.device_ops import DeviceLabeller
    from cbst_tf.selftrain.soft_labels import HardOfSoft

    i, n = shard
    part = lab.part(i, n)
    if part.is_file():
        if part_key(part) == key:
            finalize_if_complete(cfg, lab, n, key)
            return
        progress.log(f"round {round_} label: discarding {part}: made by another model, data or settings")
        part.unlink()
    info = round_thresholds(cfg, lab, round_, n, key)
    mode, _ = method_mode(cfg)
    c = cfg.data.num_classes
    thresholds = np.array([np.inf if t is None else t for t in info["thresholds"]], np.float64)
    alpha = lrent_weight(cfg)
    labeller = DeviceLabeller(thresholds, mode, c) if alpha is None else HardOfSoft(thresholds, alpha, c)
    cache_dir = _cache_dir(lab, round_, shard, key)
    examples, count = _target_examples(cfg, shard, decode=False)
    selected = np.zeros(c, np.int64)
    # Diagnostics only (never used for selection): pseudo-labels vs target labels, if any.
    quality = np.zeros((3, c), np.int64)
    labelled = [0]
    warned: list[str] = []
    protocol = get_protocol(cfg.eval.protocol)
    previews: list = []
    num_passes = len(inference_passes(cfg.selftrain.test_scales, cfg.selftrain.test_flip))

    def records():  # one image at a time (plus a few cache files read ahead): a slice never sits in memory
        infer = None
        items = ((cache_path(cache_dir, k), ex["source_id"].decode(), ex) for k, ex in enumerate(examples))
        for ex, logits in progress.track(prefetch_logits(items, num_passes, key), count,
                                         f"round {round_} label: writing {i}/{n}"):
            source_id = ex["source_id"].decode()
            size = (int(ex["height"]), int(ex["width"]))
            preview = i == 0 and len(previews) < 4
            # Only a missing cache or a preview needs the pixels (the records are read undecoded).
            image = decode_image(ex["encoded"]) if logits is None or preview else None
            if logits is None:  # cache deleted or phases run on different machines: recompute
                if infer is None:
                    infer = stride_logits(cfg, round_)
                logits = infer(image)
            labels, counts = labeller(probs_from_logits(logits, size), priors(size), name=source_id)
            selected[:] += counts[:c]
            truth = _target_labels(ex["label"], labels.shape)
            if truth is not None:  # diagnostics under the evaluation protocol's class merges
                quality[:] += quality_counts(protocol.remap_prediction(labels), protocol.remap_label(truth), c)
                labelled[0] += 1
            elif ex["label"] and not warned:
                warned.append(source_id)
                progress.log(f"round {round_} label: {source_id}: target label unreadable or of another size; "
                             "pseudo-label precision/recall left out of stats.json")
            if preview:
                previews.append((image.numpy(), labels))
            # LRENT: the stride logits travel with the record; finetuning rebuilds y per crop
            stored = [np.asarray(x) for x in logits] if alpha is not None else None
            yield ex["encoded"], ex["format"].decode(), size, source_id, encode_label_png(labels), counts, stored

    write_part(lab, shard, records(), selected, previews,
               quality=lambda: quality if labelled[0] == count and not warned else None, key=key)
    finalize_if_complete(cfg, lab, n, key)


def run_label(cfg: Config, round_: int, shard: tuple[int, int] = (0, 1), phase: str = "all") -> Path:
    """Pseudo-label the target for round R; returns ``<workdir>/round_R/label``.

    Its partial results (logit cache, histograms, parts) are keyed by the model's and the
    data's digests (:func:`label_inputs`) and by every setting that changes the probabilities
    (:func:`label_key`): made by another model or from other data they are discarded with a log
    line, never reused; a resume with other settings is refused (:func:`cbst_tf.runs.step`)."""
    lab = RunLayout.of(cfg).label_step(round_)

    def prepare(_rt) -> _PriorsAtSize:
        _, use_priors = method_mode(cfg)
        return _PriorsAtSize(load_priors(priors_file(cfg), cfg.data.num_classes, cfg.selftrain.prior_norm)
                            if use_priors else None)

    # Slices of one label step run at once on several machines: no lock; the last one writes DONE.
    with runs.step(cfg, lab.root, f"round {round_} label", prepare=prepare, lock=False, ignore=LABEL_IGNORES,
                   inputs=lambda: label_inputs(cfg, round_), partial=LabelLayout.PARTIAL) as run:
        if run.done:
            return lab.root
        _label(cfg, lab, round_, shard, phase, run.plan, label_key(cfg, round_))
    return lab.root


def _label(cfg: Config, lab: LabelLayout, round_: int, shard: tuple[int, int], phase: str,
           priors: _PriorsAtSize, key: str) -> None:
    if phase in ("all", "stats"):
        _phase_stats(cfg, lab, round_, shard, priors, key)
    if phase == "all" and shard[1] > 1:
        # A single process handling one slice cannot merge the others: stop after its stats.
        missing = [j for j in range(shard[1]) if not lab.hist(j, shard[1]).is_file()]
        if missing:
            progress.log(f"round {round_} label: shard {shard[0]}/{shard[1]} stats written; "
                         f"waiting for shard(s) {missing} before --phase write")
            return
    if phase in ("all", "write"):
        _phase_write(cfg, lab, round_, shard, priors, key)
    if runs.is_done(lab.root):
        shutil.rmtree(lab.caches, ignore_errors=True)
        stats = read_json(lab.stats)
        progress.log(f"round {round_} label: p={stats['portion']:.2f}, selected "
                     f"{sum(stats['selected_pixels']) / max(1, sum(stats['predicted_pixels'])):.1%} of target pixels")
