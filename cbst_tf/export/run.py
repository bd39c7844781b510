"""``cbst-tf export``: trained weights -> a SavedModel for TensorFlow Serving, or a TFLite model.

``--format saved_model`` (default) writes ``<out>/1/``, a SavedModel made with Keras 3's
export API (:class:`keras.export.ExportArchive`) that needs only TensorFlow to run, laid out
as TF Serving's model base path expects (version ``1``):

* signature ``serving_default``: ``images`` uint8 ``[N, H, W, 3]`` RGB, any size ->
  ``class_ids`` int32 ``[N, H, W]`` (train ids) and ``probabilities`` float32 ``[N, H, W, C]``;
* signature ``serving_bytes``: ``image_bytes`` string ``[N]`` (encoded PNG/JPEG, REST clients
  send ``{"b64": ...}``) -> the same outputs;
* normalisation and the configured test passes in the graph (:mod:`cbst_tf.export.graph`);
* metadata reachable from ``tf.saved_model.load``: ``class_names``, ``channel_train_ids``,
  ``train_id_to_label_id``, ``normalization_mean`` / ``_std`` and ``metadata_json`` (all of it,
  with the resolved config), each a variable collection of one variable, and the same JSON in
  ``1/assets.extra/cbst_metadata.json``.

``--format tflite --input-size HxW`` writes ``<out>/model.tflite`` (float32, fixed size, the
``serving_default`` signature) and ``<out>/metadata.json``; see :mod:`cbst_tf.export.tflite`.
``--out`` is claimed with :func:`cbst_tf.outdir.claim_marked_out`: a re-export replaces only
what an earlier ``export`` wrote there.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from cbst_tf import __version__
from cbst_tf.config import Config, to_dict
from cbst_tf.errors import ConfigError
from cbst_tf.io import atomic_dir, atomic_write_bytes, atomic_write_json, remove_stale_temps
from cbst_tf.progress import log

VERSION = "1"
FORMATS = ("saved_model", "tflite")
METADATA_FILE = "cbst_metadata.json"


def metadata(cfg: Config, weights: Path, digest: str, model: Any) -> dict[str, Any]:
    """Everything a consumer needs besides the graph: classes, label ids, normalisation, config."""
    from cbst_tf.models.normalization import model_normalization
    from cbst_tf.predict.classes import ClassReader

    norm = model_normalization(model)
    e = cfg.eval
    return {
        "producer": f"cbst-tf {__version__}", "weights": str(weights), "weights_sha256": digest,
        "model": {"name": cfg.model.name, "width": cfg.model.width, "num_classes": cfg.data.num_classes},
        "input": "uint8 RGB [N, H, W, 3], 0..255, any H and W (the graph normalises)",
        "outputs": {"class_ids": "int32 [N, H, W] Cityscapes train ids",
                    "probabilities": "float32 [N, H, W, C], channel c is train id channel_train_ids[c]"},
        "classes": ClassReader.of(cfg.data.num_classes, e.protocol).metadata(),
        "normalization": {"mean": list(norm.mean), "std": list(norm.std), "bn_epsilon": norm.bn_epsilon}
        if norm else None,
        "test_passes": {"scales": list(e.scales), "flip": e.flip, "upsample": e.upsample, "long_side": e.long_side,
                        "input_scale": cfg.data.input_scale},
        "config": to_dict(cfg),
    }


def _archive(model: Any, cfg: Config, meta: dict, input_size: tuple[int, int] | None):
    """The :class:`keras.export.ExportArchive` with both endpoints (only ``serving_default``,
    at a fixed ``[1, H, W, 3]``, with ``input_size``) and the metadata variables."""
    import keras
    import tensorflow as tf

    from cbst_tf.export.graph import IMAGE_BYTES, IMAGES, serving_fns

    serve, serve_bytes = serving_fns(model, cfg)
    archive = keras.export.ExportArchive()
    archive.track(model)
    spec = IMAGES if input_size is None else tf.TensorSpec([1, *input_size, 3], tf.uint8, name="images")
    archive.add_endpoint("serving_default", serve, [spec])
    if input_size is None:
        archive.add_endpoint("serving_bytes", serve_bytes, [IMAGE_BYTES])
    classes = meta["classes"]
    norm = meta["normalization"] or {"mean": [0.0] * 3, "std": [1.0] * 3}
    for name, value, dtype in (("class_names", classes["channel_names"], tf.string),
                               ("channel_train_ids", classes["channel_train_ids"], tf.int32),
                               ("train_id_to_label_id", classes["train_id_to_label_id"], tf.int32),
                               ("normalization_mean", norm["mean"], tf.float32),
                               ("normalization_std", norm["std"], tf.float32),
                               ("metadata_json", json.dumps(meta), tf.string)):
        archive.add_variable_collection(name, [tf.Variable(value, dtype=dtype, trainable=False, name=name)])
    return archive, serve


def run_export(cfg: Config, out: str | Path, weights: str | Path | None = None, fmt: str = "saved_model",
               input_size: tuple[int, int] | None = None, command: str = "") -> dict[str, Any]:
    """``cbst-tf export``: write the SavedModel (or TFLite model) of ``weights`` into ``out``."""
    from cbst_tf import runtime
    from cbst_tf.evaluate.configured import load_model
    from cbst_tf.evaluate.run import latest_weights
    from cbst_tf.layout import require
    from cbst_tf.outdir import claim_marked_out
    from cbst_tf.predict.classes import ClassReader
    from cbst_tf.predict.run import file_digest, prediction_key

    if fmt not in FORMATS:
        raise ConfigError(f"--format {fmt!r}: expected saved_model or tflite")
    if (fmt == "tflite") != (input_size is not None):
        raise ConfigError("--input-size HxW: required with --format tflite (a TFLite model has one input size), "
                          "and only then")
    weights = require(Path(weights), "weights file", "check --weights") if weights else latest_weights(cfg)
    ClassReader.of(cfg.data.num_classes, cfg.eval.protocol)
    out = Path(out)
    digest = file_digest(weights)
    written = [VERSION] if fmt == "saved_model" else ["model.tflite", "metadata.json"]
    claim_marked_out(out, "export", {"command": command, "key": prediction_key(cfg, digest), "written": written})
    for stale in remove_stale_temps(out):
        log(f"removed {stale} left by a killed run")
    runtime.setup(cfg)
    model = load_model(cfg, weights)
    meta = metadata(cfg, weights, digest, model)
    archive, serve = _archive(model, cfg, meta, input_size)
    if fmt == "saved_model":
        with atomic_dir(out / VERSION) as tmp:
            archive.write_out(str(tmp), verbose=False)
            atomic_write_json(tmp / "assets.extra" / METADATA_FILE, meta)
        log(f"export: wrote the SavedModel of {weights} to {out / VERSION} "
            "(signatures serving_default, serving_bytes)")
        return {"format": fmt, "path": str(out / VERSION), "weights": str(weights)}
    return _tflite(archive, serve, model, cfg, meta, out, input_size, weights)


def _tflite(archive: Any, serve: Any, model: Any, cfg: Config, meta: dict, out: Path,
            input_size: tuple[int, int], weights: Path) -> dict[str, Any]:
    import tensorflow as tf

    from cbst_tf.export import tflite
    from cbst_tf.io import temp_tag

    # Named like every temporary (host~pid): the next export removes a killed run's copy.
    with tempfile.TemporaryDirectory(prefix=f".saved_model.tmp-{temp_tag()}-", dir=out) as tmp:
        archive.write_out(tmp, verbose=False)
        flatbuffer = tflite.convert(tmp, f"{cfg.model.name} (width {cfg.model.width})",
                                    [layer.name for layer in model.layers])
    image = np.random.default_rng(0).integers(0, 256, (1, *input_size, 3), dtype=np.uint8)
    checked = tflite.check(flatbuffer, serve(tf.constant(image)), image)
    meta = {**meta, "tflite": {"input_size": list(input_size), "dtype": "float32", "check": checked}}
    atomic_write_json(out / "metadata.json", meta)
    atomic_write_bytes(out / "model.tflite", flatbuffer)
    log(f"export: wrote {out / 'model.tflite'} ({len(flatbuffer) / 2**20:.1f} MB, input 1x{input_size[0]}x"
        f"{input_size[1]}x3 uint8); TFLite interpreter vs TensorFlow: max probability difference "
        f"{checked['max_probability_difference']:.1e}, {100 * checked['class_agreement']:.2f}% equal classes")
    return {"format": "tflite", "path": str(out / "model.tflite"), "weights": str(weights), **checked}
