"""One run layout: every path of a run directory (``runtime.workdir``) spelled in one place.

Steps, the driver, evaluation, cross-validation, the CLI and the demo ask :class:`RunLayout`
(or the config-aware helpers below, which honour ``selftrain.source_weights`` and
``selftrain.priors``) instead of joining ``round_R``, ``final.weights.h5`` or ``pseudo/`` by hand.
Below the top level, a round's label step (:class:`LabelLayout`), the spatial priors
(:class:`PriorsLayout`) and a crossval fold (:class:`FoldLayout`) are typed directories too: the
step that writes a file and every reader of it name it through the same property.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from cbst_tf.config import Config
from cbst_tf.errors import CbstError

_FINAL_STEM = "final"
FINAL = f"{_FINAL_STEM}.weights.h5"
_FINETUNE = "finetune"
_WEIGHT_SUFFIXES = (".weights.h5", ".h5", ".keras")


@dataclass(frozen=True)
class LabelLayout:
    """One round's label step, ``round_R/label``: partial results (``cache/<i>-of-<n>/`` logits,
    ``hist/`` per-slice histograms, ``parts/`` per-slice summaries), ``thresholds.json``, the
    pseudo-labelled dataset ``pseudo/`` and ``stats.json``, ``preview.png``."""

    root: Path

    #: Every entry the step writes before ``DONE``: what a refused or restarted step may clear.
    PARTIAL = ("cache", "hist", "parts", "pseudo", "thresholds.json", "stats.json", "preview.png")

    @property
    def caches(self) -> Path:
        return self.root / "cache"

    def cache(self, i: int, n: int) -> Path:
        """Slice i of n's logit cache (:mod:`cbst_tf.selftrain.logit_cache`)."""
        return self.caches / f"{i}-of-{n}"

    @property
    def hists(self) -> Path:
        return self.root / "hist"

    def hist(self, i: int, n: int) -> Path:
        return self.hists / f"shard-{i:05d}-of-{n:05d}.npz"

    def part(self, i: int, n: int) -> Path:
        """Slice i of n's part summary; it exists only once the slice's TFRecord is complete."""
        return self.root / "parts" / f"part-{i:05d}-of-{n:05d}.json"

    @property
    def thresholds(self) -> Path:
        return self.root / "thresholds.json"

    @property
    def pseudo(self) -> Path:
        """The pseudo-labelled target (a TFRecord directory with ``manifest.json``)."""
        return self.root / "pseudo"

    def pseudo_shard(self, i: int, n: int) -> Path:
        return self.pseudo / f"pseudo-{i:05d}-of-{n:05d}.tfrecord"

    @property
    def pseudo_manifest(self) -> Path:
        return self.pseudo / "manifest.json"

    @property
    def stats(self) -> Path:
        return self.root / "stats.json"

    @property
    def preview(self) -> Path:
        return self.root / "preview.png"


@dataclass(frozen=True)
class PriorsLayout:
    """The spatial priors step, ``priors/``: ``priors.npy`` (Eq. 9's q), ``priors.json``, one heat map
    per class in ``heatmaps/`` and all classes in ``heatmaps_grid.png``."""

    root: Path

    #: Every entry the step writes before ``DONE``.
    PARTIAL = ("heatmaps", "heatmaps_grid.png", "priors.json", "priors.npy")

    @property
    def priors(self) -> Path:
        return self.root / "priors.npy"

    @property
    def summary(self) -> Path:
        return self.root / "priors.json"

    def heatmap(self, c: int, name: str) -> Path:
        return self.root / "heatmaps" / f"{c}_{name}.png"

    @property
    def grid(self) -> Path:
        return self.root / "heatmaps_grid.png"


@dataclass(frozen=True)
class FoldLayout:
    """One crossval fold, ``crossval/<city>/fold_<k>``: its unlabelled train and labelled test
    TFRecords under ``data/``, and per method a run directory with its ``result.json``."""

    root: Path

    @property
    def train(self) -> Path:
        return self.root / "data" / "train"

    @property
    def test(self) -> Path:
        return self.root / "data" / "test"

    def method(self, method: str) -> Path:
        """The method's run directory (a :class:`RunLayout` root)."""
        return self.root / method

    def result(self, method: str) -> Path:
        return self.method(method) / "result.json"


@dataclass(frozen=True)
class RunLayout:
    """Every path of one run directory (``runtime.workdir``), spelled in one place.

    ``pretrain/``, ``priors/``, ``round_R/label/`` (``pseudo/``, ``stats.json``),
    ``round_R/finetune/``, ``eval/<name>/``, ``crossval/<city>/``, ``selftrain.json``.
    Nothing is created here; :func:`step` creates a step's directory when it starts.
    """

    root: Path

    @classmethod
    def of(cls, cfg: Config) -> RunLayout:
        return cls(Path(cfg.runtime.workdir))

    @property
    def pretrain(self) -> Path:
        return self.root / "pretrain"

    @property
    def priors(self) -> Path:
        return self.root / "priors"

    @property
    def priors_step(self) -> PriorsLayout:
        return PriorsLayout(self.priors)

    @property
    def priors_file(self) -> Path:
        return self.priors_step.priors

    @property
    def target_subset(self) -> Path:
        """CRST's class-balanced target subset (``selftrain.target_subset``), made once from the source model."""
        return self.root / "target_subset.json"

    def round(self, round_: int) -> Path:
        return self.root / f"round_{round_}"

    def label(self, round_: int) -> Path:
        return self.label_step(round_).root

    def label_step(self, round_: int) -> LabelLayout:
        """Round R's label step, typed (:class:`LabelLayout`)."""
        return LabelLayout(self.round(round_) / "label")

    def pseudo(self, round_: int) -> Path:
        """Round R's pseudo-labelled target (a TFRecord directory with ``manifest.json``)."""
        return self.label_step(round_).pseudo

    def stats(self, round_: int) -> Path:
        return self.label_step(round_).stats

    def finetune(self, round_: int) -> Path:
        return self.round(round_) / _FINETUNE

    @staticmethod
    def final(step: Path) -> Path:
        """A training step's exported model."""
        return Path(step) / FINAL

    def eval(self, name: str) -> Path:
        return self.root / "eval" / name

    def crossval(self, city: str) -> Path:
        return self.root / "crossval" / city

    def fold(self, city: str, k: int) -> FoldLayout:
        """Fold k of ``city``'s cross-validation (:class:`FoldLayout`)."""
        return FoldLayout(self.crossval(city) / f"fold_{k}")

    @property
    def selftrain_summary(self) -> Path:
        return self.root / "selftrain.json"

    def finetuned_rounds(self) -> list[tuple[int, Path]]:
        """``(R, round_R/finetune/final.weights.h5)`` of every round whose model exists, sorted."""
        found = []
        for path in self.root.glob(f"round_*/finetune/{FINAL}"):
            match = re.fullmatch(r"round_(\d+)", path.parent.parent.name)
            if match and path.is_file():
                found.append((int(match.group(1)), path))
        return sorted(found)

    def pseudo_dirs(self) -> list[Path]:
        return sorted(self.root.glob("round_*/label/pseudo"))

    @staticmethod
    def run_name(weights: Path) -> str:
        """A short name for weights: ``round_3`` / ``pretrain`` for a step's final weights (this
        layout's names), else the file name without its Keras suffix."""
        path = Path(weights)
        name = path.name
        for suffix in _WEIGHT_SUFFIXES:
            if name.endswith(suffix) and len(name) > len(suffix):
                name = name[: -len(suffix)]
                break
        if name == _FINAL_STEM:
            step = path.parent
            return step.parent.name if step.name == _FINETUNE and step.parent.name else step.name or name
        return name


@dataclass(frozen=True)
class DemoLayout:
    """``cbst-tf demo --out``: ``raw/`` (the rendered datasets), ``data/`` (their TFRecords),
    ``runs/<row>`` (one run directory per row of the table, plus ``init``), ``eval/<row>.json``,
    and the report and figures at the top."""

    root: Path

    @property
    def raw(self) -> Path:
        """The rendered datasets in their real layouts (``gta5/``, ``cityscapes/``, ``stylized/``)."""
        return self.root / "raw"

    def data(self, name: str) -> Path:
        return self.root / "data" / name

    @property
    def runs(self) -> Path:
        return self.root / "runs"

    def run(self, row: str) -> Path:
        """The row's run directory (a :class:`RunLayout` root)."""
        return self.runs / row

    def eval(self, row: str) -> Path:
        return self.root / "eval" / f"{row}.json"


def pretrained_weights(cfg: Config) -> Path:
    """The source model: ``selftrain.source_weights`` or ``<workdir>/pretrain/final.weights.h5``."""
    if cfg.selftrain.source_weights:
        return Path(cfg.selftrain.source_weights)
    layout = RunLayout.of(cfg)
    return layout.final(layout.pretrain)


def weights_before_round(cfg: Config, round_: int) -> Path:
    """The model that round R labels with and finetunes from (block coordinate descent, sec. 4.1).

    Round 1 starts from the source model; round R > 1 from round R-1's finetuned model.
    """
    if round_ <= 1:
        return pretrained_weights(cfg)
    layout = RunLayout.of(cfg)
    return layout.final(layout.finetune(round_ - 1))


def priors_file(cfg: Config) -> Path:
    """``selftrain.priors`` or ``<workdir>/priors/priors.npy``."""
    if cfg.selftrain.priors:
        return Path(cfg.selftrain.priors)
    return RunLayout.of(cfg).priors_file


def require(path: Path, what: str, hint: str) -> Path:
    """A one-line error naming a missing input file and the command that makes it."""
    if not Path(path).is_file():
        raise CbstError(f"{path}: {what} not found ({hint})")
    return Path(path)


