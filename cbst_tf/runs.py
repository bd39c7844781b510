"""Run directories: where each step of an experiment writes, and its completion markers."""

from __future__ import annotations

from pathlib import Path

from cbst_tf.config import Config, save_resolved
from cbst_tf.io import atomic_write_text


def step_dir(cfg: Config, *parts: str) -> Path:
    """``runtime.workdir/<parts...>``, created on demand."""
    path = Path(cfg.runtime.workdir).joinpath(*parts)
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
