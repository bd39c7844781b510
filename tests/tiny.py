"""A tiny real network, its weights and an experiment YAML, for the predict / export tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np

WIDTH = 0.0625
MEAN = (123.68, 116.78, 103.94)


def save_weights(path: Path, name: str = "fcn8s_vgg16", num_classes: int = 19, seed: int = 0) -> Path:
    """Randomly initialised ``name`` at width 0.0625, saved as ``path`` (a .weights.h5 file)."""
    import keras

    from cbst_tf.models import build_model

    keras.utils.set_random_seed(seed)
    model = build_model(name, num_classes, width=WIDTH, dropout=0.0, mean=MEAN)
    rng = np.random.default_rng(seed)
    for layer in model.layers:  # FCN zero-initialises its score layers: it would predict one class
        if layer.name.startswith("score"):
            kernel, bias = layer.get_weights()
            layer.set_weights([rng.normal(0, 0.3, kernel.shape).astype(np.float32),
                               rng.normal(0, 0.05, bias.shape).astype(np.float32)])
    path.parent.mkdir(parents=True, exist_ok=True)
    model.save_weights(path)
    return path


def write_config(path: Path, name: str = "fcn8s_vgg16", **sections: dict) -> Path:
    """An experiment YAML for the tiny network; ``sections``: extra keys per section."""
    import yaml

    cfg = {"model": {"name": name, "width": WIDTH, "dropout": 0.0},
           "data": {"prefetch": 0, "parallel_calls": 1}}
    for section, keys in sections.items():
        cfg.setdefault(section, {}).update(keys)
    path.write_text(yaml.safe_dump(cfg))
    return path


def random_image(rng: np.random.Generator, hw: tuple[int, int]) -> np.ndarray:
    """Smooth-ish random RGB (blocks of 4 px) so the network predicts several classes."""
    small = rng.integers(0, 256, (-(-hw[0] // 4), -(-hw[1] // 4), 3), dtype=np.uint8)
    return np.repeat(np.repeat(small, 4, 0), 4, 1)[: hw[0], : hw[1]].copy()
