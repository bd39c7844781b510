"""What round R's label step is made from, and so what its cached and partial results are keyed by.

The logit cache, the per-slice histograms and the pseudo-label parts depend on the round's
model, the target data, the spatial priors (``*_sp`` methods) and every setting that changes
the probabilities or their statistics (the network, the test passes, the input scale, the
precision, the subsampling). :func:`label_key` digests all of them; a result carrying another
key was made by another model, data or settings and is discarded, never reused.
"""

from __future__ import annotations

from cbst_tf.config import Config
from cbst_tf.errors import CbstError
from cbst_tf.layout import priors_file, weights_before_round

METHOD_MODE = {"st": "st", "st_sp": "st", "cbst": "cbst", "cbst_sp": "cbst"}


def method_mode(cfg: Config) -> tuple[str, bool]:
    """(``st`` | ``cbst``, uses spatial priors) for ``selftrain.method``."""
    method = cfg.selftrain.method
    if method not in METHOD_MODE:
        raise CbstError(f"selftrain.method={method!r} makes no pseudo-labels (choose st, st_sp, cbst or cbst_sp)")
    return METHOD_MODE[method], method.endswith("_sp")


def lrent_weight(cfg: Config) -> float | None:
    """LRENT's ``alpha`` (``selftrain.lr_weight``) when the round's labels are soft, else None.

    ``lr_weight: 0`` is LRENT's limit ``alpha -> 0``: Eq. 8's hard labels and the plain
    cross-entropy, i.e. CBST exactly (docs/CRST.md)."""
    st = cfg.selftrain
    return float(st.lr_weight) if st.regularizer == "lrent" and st.lr_weight > 0 else None


#: Settings that do not change round R's pseudo-labels (training, the other rounds).
LABEL_IGNORES = ("train.", "selftrain.rounds", "selftrain.source_portion", "selftrain.mine_port",
                 "selftrain.epochs_per_round", "selftrain.lr", "selftrain.schedule", "data.source", "data.target_eval",
                 "data.crop_size", "data.scale_range", "data.flip", "data.shuffle_buffer")


def label_inputs(cfg: Config, round_: int) -> dict[str, str]:
    """Digests of the files round R's labels are made from: its model, the target, the priors."""
    from cbst_tf.data.manifest import dataset_digest
    from cbst_tf.io import file_digest

    found = {"model": file_digest(weights_before_round(cfg, round_)), "data.target": dataset_digest(cfg.data.target)}
    if method_mode(cfg)[1]:
        found["priors"] = file_digest(priors_file(cfg))
    return found


def label_key(cfg: Config, round_: int) -> str:
    """The key of every cached or partial result of round R's label step: its inputs' digests
    and the settings that change the network's probabilities or their statistics."""
    import dataclasses
    import hashlib
    import json

    model = {k: v for k, v in dataclasses.asdict(cfg.model).items() if k not in ("weights", "dropout")}
    st, d = cfg.selftrain, cfg.data
    settings = {"inputs": label_inputs(cfg, round_), "model": model, "num_classes": d.num_classes,
                "image_mean": d.image_mean, "input_scale": d.input_scale, "skip_bad": d.skip_bad,
                "passes": [st.test_scales, st.test_flip], "precision": cfg.runtime.precision,
                "subsample": st.subsample, "method": method_mode(cfg), "prior_norm": st.prior_norm}
    if lrent_weight(cfg) is not None:  # LRENT's records (selection and stored logits) differ from CBST's
        settings["lrent"] = lrent_weight(cfg)
    if st.target_subset is not None:  # the images (chosen by the inputs above and the portion)
        settings["target_subset"] = st.target_subset
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()
