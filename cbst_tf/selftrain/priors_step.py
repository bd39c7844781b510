"""``cbst-tf priors``: class-wise spatial priors from the source labels (section 4.4, Fig. 2).

Writes ``<workdir>/priors/``: ``priors.npy`` (H, W, C float32, every class summing to 1),
``priors.json`` (how they were made), ``heatmaps/<train id>_<name>.png`` (one viridis
heat map per class, like the paper's Fig. 2), ``heatmaps_grid.png`` (all classes),
``config.yaml`` and, last, ``DONE``. A finished step is skipped.

Only the label PNGs are read and decoded (``cbst_tf.data.reader.eval_dataset`` would also
decode every source image, 25k GTA5 frames, just to discard it).
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import cv2
import numpy as np

from cbst_tf.algos.priors import (
    PriorAccumulator,
    class_posterior,
    gaussian_sigma,
    kernel_at_prior,
    smooth_and_normalise,
)
from cbst_tf.bounds import quote
from cbst_tf.config import Config
from cbst_tf.errors import CbstError
from cbst_tf.io import atomic_save_npy, atomic_write_bytes, atomic_write_json, read_json
from cbst_tf.labels import CLASS_NAMES
from cbst_tf.layout import PriorsLayout, RunLayout
from cbst_tf.progress import log, track
from cbst_tf.runs import step

_SUM_TOLERANCE = 1e-3
_MAX_PRIOR_VALUES = 2048 * 2048 * 254  # selftrain.prior_size's bound, every class


def _labels(directory: Path, manifest: dict, parallel_calls: int):
    """Yield (source_id, (H, W) uint8 label) for every example, in the directory's order."""
    import tensorflow as tf

    from cbst_tf.data.tfrecord import parse_example

    files = [str(directory / s) for s in manifest["shards"]]

    def decode(serialized):
        ex = parse_example(serialized)
        return ex["source_id"], ex["label"]

    ds = tf.data.TFRecordDataset(files).map(decode, num_parallel_calls=parallel_calls, deterministic=True)
    try:
        for source_id, png in ds.as_numpy_iterator():
            name = source_id.decode("utf-8", "replace")
            if not png:
                raise CbstError(f"{directory}: example {quote(name)} has no label; priors need labelled source data")
            label = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_UNCHANGED)
            if label is None or label.ndim != 2:
                raise CbstError(f"{directory}: example {quote(name)} has a corrupt label PNG")
            yield name, label
    except tf.errors.OpError as exc:
        raise CbstError(f"{directory}: cannot read TFRecords ({exc.message.splitlines()[0]})") from None


def _image_size(manifest: dict, first: tuple[int, int] | None) -> tuple[int, int]:
    """The most common source image size (the prior kernel is given in its pixels)."""
    sizes = Counter({k: int(v) for k, v in (manifest.get("image_sizes") or {}).items()})
    if sizes:
        text = sizes.most_common(1)[0][0]
        try:
            h, w = (int(v) for v in text.lower().split("x"))
            return h, w
        except ValueError:
            raise CbstError(f"manifest.json: image_sizes key {quote(text)} is not HxW") from None
    if first is None:
        raise CbstError("data.source: no labelled examples")
    return first


def class_names(manifest: dict, num_classes: int) -> list[str]:
    names = manifest.get("class_names")
    if isinstance(names, list) and len(names) == num_classes:
        return [str(n) for n in names]
    if num_classes == len(CLASS_NAMES):
        return list(CLASS_NAMES)
    return [f"class{c}" for c in range(num_classes)]


def heatmap(prior: np.ndarray) -> np.ndarray:
    """One class's prior as a BGR viridis image, scaled to its own maximum (Fig. 2)."""
    top = float(prior.max())
    grey = np.zeros(prior.shape, np.uint8) if top <= 0 else np.round(prior / top * 255).astype(np.uint8)
    return cv2.applyColorMap(grey, cv2.COLORMAP_VIRIDIS)


def heatmap_grid(priors: np.ndarray, names: list[str], unseen: list[int] = (), columns: int = 4) -> np.ndarray:
    """All classes' heat maps in a grid, captioned with train id and name (``unseen``: uniform)."""
    h, w, num_classes = priors.shape
    caption = 18
    rows = -(-num_classes // columns)
    grid = np.full((rows * (h + caption), columns * w, 3), 255, np.uint8)
    for c in range(num_classes):
        y, x = (c // columns) * (h + caption), (c % columns) * w
        text = f"{c} {names[c]}" + (" (unseen)" if c in unseen else "")
        cv2.putText(grid, text, (x + 3, y + 13), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 1,
                    cv2.LINE_AA)
        grid[y + caption:y + caption + h, x:x + w] = heatmap(priors[:, :, c])
    return grid


def _png(image: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".png", image)
    if not ok:
        raise CbstError("priors: could not encode a PNG")
    return buf.tobytes()


def run_priors(cfg: Config) -> Path:
    """Count, smooth and normalise the source class frequencies; return ``priors.npy``'s path."""
    layout = RunLayout.of(cfg)
    from cbst_tf.data.manifest import dataset_digest

    with step(cfg, layout.priors, "priors", prepare=lambda _rt: _source_manifest(cfg),
              inputs=lambda: {"data.source": dataset_digest(cfg.data.source) if cfg.data.source else ""},
              partial=PriorsLayout.PARTIAL,
              ignore=("train.", "model.", "selftrain.method", "selftrain.rounds", "selftrain.prior_norm", "data.target",
                      "data.input_scale")) as run:
        if not run.done:
            files = layout.priors_step
            run.finish(_count(cfg, files, run.plan), outputs=(files.priors.name, files.summary.name))
    return layout.priors_file


def _source_manifest(cfg: Config) -> dict:
    from cbst_tf.data.manifest import read_manifest

    if not cfg.data.source:
        raise CbstError("data.source: not set (the labelled source TFRecord directory)")
    source = Path(cfg.data.source)
    manifest = read_manifest(source)
    if int(manifest["num_classes"]) != cfg.data.num_classes:
        raise CbstError(f"{source / 'manifest.json'}: num_classes {manifest['num_classes']} != "
                        f"data.num_classes {cfg.data.num_classes}")
    return manifest


def _count(cfg: Config, files: PriorsLayout, manifest: dict) -> str:
    """Write the priors, their description and heat maps; return the DONE summary."""
    source, num_classes = Path(cfg.data.source), cfg.data.num_classes
    prior_size = tuple(cfg.selftrain.prior_size)
    acc = PriorAccumulator(num_classes, prior_size)
    first = None
    for name, label in track(_labels(source, manifest, cfg.data.parallel_calls),
                             total=int(manifest["num_examples"]), description="priors"):
        try:
            acc.update(label)
        except CbstError as exc:
            raise CbstError(f"{source}: example {quote(name)}: {exc}") from None
        first = first or tuple(label.shape)
    if acc.num_images == 0:
        raise CbstError(f"{source}: no examples to count")
    image_size = _image_size(manifest, first)
    kernel = cfg.selftrain.prior_kernel
    priors = smooth_and_normalise(acc.counts, kernel, image_size, prior_size)

    names = class_names(manifest, num_classes)
    unseen = [c for c in range(num_classes) if acc.counts[:, :, c].sum() == 0]
    for c in range(num_classes):
        safe = "".join(ch if ch.isalnum() else "_" for ch in names[c])
        atomic_write_bytes(files.heatmap(c, safe), _png(heatmap(priors[:, :, c])))
    atomic_write_bytes(files.grid, _png(heatmap_grid(priors, names, unseen)))
    ky, kx = kernel_at_prior(kernel, image_size, prior_size)
    atomic_write_json(files.summary, {
        "prior_size": list(prior_size),
        "image_size": list(image_size),
        "kernel_px_source": kernel,
        "kernel_px_prior": [ky, kx],
        "sigma_source": gaussian_sigma(kernel),
        "sigma_prior": [gaussian_sigma(ky), gaussian_sigma(kx)],
        "sigma_convention": "kernel spans +-3 sigma (sigma = kernel / 6); border reflect",
        "source": str(source),
        "num_images": acc.num_images,
        "classes": names,
        "class_pixel_counts_at_prior": acc.counts.sum(axis=(0, 1)).tolist(),
        "unseen_classes_uniform": unseen,
    })
    atomic_save_npy(files.priors, priors)
    log(f"priors: wrote {files.priors} ({priors.shape[0]}x{priors.shape[1]}, {num_classes} classes, "
        f"{acc.num_images} images)")
    return f"priors {priors.shape} from {acc.num_images} images"


def load_priors(path: str | Path, num_classes: int | None = None, norm: str = "pixels") -> np.ndarray:
    """Priors from a ``priors.npy`` file, a ``priors/`` step directory or a run directory.

    One-line errors unless they are an (H, W, C) float array (C = ``num_classes`` when
    given), finite, non-negative and summing to 1 per class (within 1e-3), as Eq. 9 and
    ``run_priors`` define them. ``norm="classes"`` (``selftrain.prior_norm``) returns them
    renormalised over classes with the source pixel counts of the ``priors.json`` beside
    the file (:func:`cbst_tf.algos.priors.class_posterior`).
    """
    path = Path(path)
    if path.is_dir():
        path = PriorsLayout(path).priors if PriorsLayout(path).priors.is_file() else RunLayout(path).priors_file
    if not path.is_file():
        raise CbstError(f"{path}: spatial priors not found (run `cbst-tf priors`)")
    try:  # the header first: a hostile file must not make np.load allocate without bound
        shape = np.load(path, mmap_mode="r", allow_pickle=False).shape
        if int(np.prod(shape, dtype=np.float64)) > _MAX_PRIOR_VALUES:
            raise CbstError(f"{path}: priors of shape {shape} are larger than any prior map "
                            f"(at most {_MAX_PRIOR_VALUES} values)")
        priors = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:
        raise CbstError(f"{path}: corrupt priors file ({type(exc).__name__})") from None
    if priors.ndim != 3 or not np.issubdtype(priors.dtype, np.floating):
        raise CbstError(f"{path}: expected an (H, W, C) float array, got {priors.dtype} {priors.shape}")
    if num_classes is not None and priors.shape[-1] != num_classes:
        raise CbstError(f"{path}: priors shape {priors.shape} does not match {num_classes} classes")
    sums = priors.sum(axis=(0, 1), dtype=np.float64)
    if not np.isfinite(priors).all() or (priors < 0).any() or np.abs(sums - 1).max() > _SUM_TOLERANCE:
        raise CbstError(f"{path}: priors must be finite, non-negative and sum to 1 per class")
    priors = priors.astype(np.float32, copy=False)
    if norm == "pixels":
        return priors
    if norm != "classes":
        raise CbstError(f"selftrain.prior_norm: expected 'pixels' or 'classes', got {norm!r}")
    return class_posterior(priors, _class_counts(PriorsLayout(path.parent).summary, priors.shape[-1]))


def _class_counts(meta: Path, num_classes: int) -> list[float]:
    """The source pixel count of every class, from the priors step's ``priors.json``."""
    if not meta.is_file():
        raise CbstError(f"{meta}: not found; selftrain.prior_norm=classes needs the class pixel counts "
                        "that `cbst-tf priors` writes beside priors.npy")
    counts = read_json(meta)
    counts = counts.get("class_pixel_counts_at_prior") if isinstance(counts, dict) else None
    if (not isinstance(counts, list) or len(counts) != num_classes
            or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in counts)):
        raise CbstError(f"{meta}: class_pixel_counts_at_prior must list {num_classes} counts")
    return counts
