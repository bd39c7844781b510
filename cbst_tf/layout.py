"""One run layout: every path of a run directory (``runtime.workdir``) spelled in one place.

Steps, the driver, evaluation, cross-validation, the CLI and the demo ask :class:`RunLayout`
(or the config-aware helpers below, which honour ``selftrain.source_weights`` and
``selftrain.priors``) instead of joining ``round_R``, ``final.weights.h5`` or ``pseudo/`` by hand.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from cbst_tf.config import Config
from cbst_tf.errors import CbstError

FINAL = "final.weights.h5"


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
    def priors_file(self) -> Path:
        return self.priors / "priors.npy"

    def round(self, round_: int) -> Path:
        return self.root / f"round_{round_}"

    def label(self, round_: int) -> Path:
        return self.round(round_) / "label"

    def pseudo(self, round_: int) -> Path:
        """Round R's pseudo-labelled target (a TFRecord directory with ``manifest.json``)."""
        return self.label(round_) / "pseudo"

    def stats(self, round_: int) -> Path:
        return self.label(round_) / "stats.json"

    def finetune(self, round_: int) -> Path:
        return self.round(round_) / "finetune"

    @staticmethod
    def final(step: Path) -> Path:
        """A training step's exported model."""
        return Path(step) / FINAL

    def eval(self, name: str) -> Path:
        return self.root / "eval" / name

    def crossval(self, city: str) -> Path:
        return self.root / "crossval" / city

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


