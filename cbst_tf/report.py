"""Figures of the demo report: pseudo-label selection and quality per class and round, panels.

Matplotlib (Agg backend, no display) for the selection plot; the panels are plain image
mosaics in the Cityscapes palette like the paper's Figs. 3-4.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from cbst_tf.io import atomic_path, atomic_write_bytes
from cbst_tf.labels import CLASS_NAMES, colorize


def plot_selection(rounds_by_method: dict[str, list[dict]], path: Path, title: str = "") -> Path:
    """Grouped bars: share of each class's predicted pixels selected as pseudo-labels, per round.

    ``rounds_by_method`` maps a method name to its per-round label stats (``selected_pixels`` and
    ``predicted_pixels`` per class). The paper's claim (section 4.2): ST starves the hard,
    low-confidence classes while CBST selects about p of every class.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    methods = list(rounds_by_method)
    n_rounds = max(len(r) for r in rounds_by_method.values())
    num_classes = len(next(iter(rounds_by_method.values()))[0]["selected_pixels"])
    fig, axes = plt.subplots(n_rounds, 1, figsize=(12, 2.6 * n_rounds), squeeze=False, sharex=True)
    x = np.arange(num_classes)
    width = 0.8 / len(methods)
    for r in range(n_rounds):
        ax = axes[r][0]
        for m, method in enumerate(methods):
            if r >= len(rounds_by_method[method]):
                continue
            stats = rounds_by_method[method][r]
            selected = np.asarray(stats["selected_pixels"], float)
            predicted = np.maximum(np.asarray(stats["predicted_pixels"], float), 1)
            ax.bar(x + (m - (len(methods) - 1) / 2) * width, 100 * selected / predicted, width, label=method)
        ax.set_ylabel(f"round {r + 1}\n% selected")
        ax.axhline(100 * rounds_by_method[methods[0]][min(r, len(rounds_by_method[methods[0]]) - 1)]["portion"],
                   color="gray", lw=0.8, ls="--")
        ax.set_ylim(0, 100)
    axes[-1][0].set_xticks(x, CLASS_NAMES[:num_classes], rotation=45, ha="right")
    axes[0][0].legend(ncol=len(methods), loc="upper right")
    if title:
        axes[0][0].set_title(title)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=90)
    plt.close(fig)
    return Path(path)


def plot_quality(rounds_by_method: dict[str, list[dict]], path: Path, title: str = "") -> Path:
    """Precision (left) and recall (right) of the pseudo-labels per class, one row per round.

    ``rounds_by_method`` maps a method name to its per-round label stats, each with the
    ``pseudo_label_quality`` of :func:`cbst_tf.algos.quality.quality_summary`. This is what
    tells whether a method's premise holds: CBST helps a class when its selected pixels are
    mostly right (precision) and it reaches more of them (recall) than ST does.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    methods = list(rounds_by_method)
    n_rounds = max(len(r) for r in rounds_by_method.values())
    first = next(iter(rounds_by_method.values()))[0]["pseudo_label_quality"]
    num_classes = len(first["precision"])
    fig, axes = plt.subplots(n_rounds, 2, figsize=(18, 2.6 * n_rounds), squeeze=False, sharex=True)
    x = np.arange(num_classes)
    width = 0.8 / len(methods)
    for r in range(n_rounds):
        for col, key in enumerate(("precision", "recall")):
            ax = axes[r][col]
            for m, method in enumerate(methods):
                if r >= len(rounds_by_method[method]):
                    continue
                values = rounds_by_method[method][r]["pseudo_label_quality"][key]
                # Undefined (nothing selected / no true pixels) draws no bar, not a 0% one.
                heights = [np.nan if v is None else 100.0 * v for v in values]
                ax.bar(x + (m - (len(methods) - 1) / 2) * width, heights, width, label=method)
            ax.set_ylim(0, 100)
            ax.set_ylabel(f"round {r + 1}\n% {key}")
    for col in range(2):
        axes[-1][col].set_xticks(x, CLASS_NAMES[:num_classes], rotation=45, ha="right")
    axes[0][0].legend(ncol=len(methods), loc="upper right")
    axes[0][0].set_title("precision: selected pixels of the class that are right")
    axes[0][1].set_title("recall: true pixels of the class given a right pseudo-label")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=80)
    plt.close(fig)
    return Path(path)


def quality_table(rounds_by_method: dict[str, list[dict]]) -> str:
    """Markdown: overall pseudo-label precision / recall (%) per method and round, then
    per class for the last round (``precision / recall``; ``-`` where undefined)."""
    def pct(v: float | None) -> str:
        return "-" if v is None else f"{100 * v:.0f}"

    lines = ["| Method | " + " | ".join(f"round {r + 1}" for r in range(max(map(len, rounds_by_method.values()))))
             + " |", "| --- |" + " ---: |" * max(map(len, rounds_by_method.values()))]
    for method, rounds in rounds_by_method.items():
        cells = [f"{pct(r['pseudo_label_quality']['overall_precision'])} / "
                 f"{pct(r['pseudo_label_quality']['overall_recall'])}" for r in rounds]
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    num_classes = len(next(iter(rounds_by_method.values()))[0]["pseudo_label_quality"]["precision"])
    lines += ["", "| Method (last round) | " + " | ".join(CLASS_NAMES[:num_classes]) + " |",
              "| --- |" + " ---: |" * num_classes]
    for method, rounds in rounds_by_method.items():
        q = rounds[-1]["pseudo_label_quality"]
        lines.append(f"| {method} | " + " | ".join(f"{pct(p)} / {pct(r)}" for p, r in
                                                   zip(q["precision"], q["recall"], strict=True)) + " |")
    return "\n".join(lines)


def _label_tile(text: str, width: int) -> np.ndarray:
    tile = np.full((18, width, 3), 255, np.uint8)
    cv2.putText(tile, text, (3, 13), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 1, cv2.LINE_AA)
    return tile


def image_row(tiles: dict[str, np.ndarray]) -> np.ndarray:
    """One row of named RGB images of one size, each under its name, 2 px apart."""
    named = [np.concatenate([_label_tile(name, rgb.shape[1]), rgb], axis=0) for name, rgb in tiles.items()]
    gap = np.full((named[0].shape[0], 2, 3), 255, np.uint8)
    row = []
    for t in named:
        row += [t, gap]
    return np.concatenate(row[:-1], axis=1)


def qualitative_panels(image: np.ndarray, columns: dict[str, np.ndarray]) -> np.ndarray:
    """One row: the RGB image, then each named train-id map colourised (paper Figs. 3-4)."""
    rgb = np.clip(image, 0, 255).astype(np.uint8)
    return image_row({"image": rgb, **{name: colorize(ids) for name, ids in columns.items()}})


def save_rgb_png(path: Path, rgb: np.ndarray) -> Path:
    ok, buf = cv2.imencode(".png", cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2BGR))
    if not ok:
        raise ValueError(f"{path}: cannot encode PNG")
    return atomic_write_bytes(path, buf.tobytes())
