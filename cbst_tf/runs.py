"""Run directories: where each step of an experiment writes, and its completion markers."""

from __future__ import annotations

from pathlib import Path

from cbst_tf.config import Config, save_resolved
from cbst_tf.errors import CbstError
from cbst_tf.io import atomic_write_text


def step_dir(cfg: Config, *parts: str) -> Path:
    """``runtime.workdir/<parts...>``, created on demand."""
    workdir = Path(cfg.runtime.workdir)
    if workdir.exists() and not workdir.is_dir():
        raise CbstError(f"runtime.workdir: {workdir} exists and is not a directory")
    path = workdir.joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True)
    return path


def start_step(cfg: Config, *parts: str) -> Path:
    """Create a step's directory and write the fully resolved config into it."""
    path = step_dir(cfg, *parts)
    save_resolved(cfg, path)
    return path


def is_done(path: Path) -> bool:
    return (Path(path) / "DONE").is_file()


def mark_done(path: Path, summary: str = "") -> None:
    """Completion marker: written last, so its presence means the step finished."""
    atomic_write_text(Path(path) / "DONE", summary + "\n")


def round_dir(cfg: Config, round_: int, step: str) -> Path:
    """``<workdir>/round_R/<step>`` (step = ``label`` or ``finetune``), created on demand."""
    return step_dir(cfg, f"round_{round_}", step)


def pretrained_weights(cfg: Config) -> Path:
    """The source model: ``selftrain.source_weights`` or ``<workdir>/pretrain/final.weights.h5``."""
    if cfg.selftrain.source_weights:
        return Path(cfg.selftrain.source_weights)
    return Path(cfg.runtime.workdir) / "pretrain" / "final.weights.h5"


def weights_before_round(cfg: Config, round_: int) -> Path:
    """The model that round R labels with and finetunes from (block coordinate descent, sec. 4.1).

    Round 1 starts from the source model; round R > 1 from round R-1's finetuned model.
    """
    if round_ <= 1:
        return pretrained_weights(cfg)
    return Path(cfg.runtime.workdir) / f"round_{round_ - 1}" / "finetune" / "final.weights.h5"


def priors_file(cfg: Config) -> Path:
    """``selftrain.priors`` or ``<workdir>/priors/priors.npy``."""
    if cfg.selftrain.priors:
        return Path(cfg.selftrain.priors)
    return Path(cfg.runtime.workdir) / "priors" / "priors.npy"


def require(path: Path, what: str, hint: str) -> Path:
    """A one-line error naming a missing input file and the command that makes it."""
    if not Path(path).is_file():
        raise CbstError(f"{path}: {what} not found ({hint})")
    return Path(path)
