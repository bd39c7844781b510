"""Checkpoints of a training run and the atomic export of its final weights.

Under MultiWorkerMirroredStrategy every worker must take part in ``save`` (variables may need
collective reads), but only the chief's files are kept: the others write into a private
temporary directory that is removed right after (the tf.distribute multi-worker recipe).
Every worker restores from the chief's directory.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import keras
import tensorflow as tf

from cbst_tf.errors import CbstError
from cbst_tf.io import atomic_path
from cbst_tf.progress import log


class RunCheckpoint:
    """Model + optimiser + step counter in ``directory``, keeping the newest ``keep`` checkpoints."""

    def __init__(self, directory: str | Path, keep: int, *, is_chief: bool = True, worker_index: int = 0,
                 **objects):
        self.directory = Path(directory)
        self.is_chief = is_chief
        self.checkpoint = tf.train.Checkpoint(**objects)
        if is_chief:  # a save killed or stopped by a full disk leaves its TF temp directory behind
            for stale in self.directory.glob("ckpt-*_temp"):
                shutil.rmtree(stale, ignore_errors=True)
        write_dir = self.directory if is_chief else self.directory / f".worker-{worker_index}"
        self._write_dir = write_dir
        self.manager = tf.train.CheckpointManager(self.checkpoint, str(write_dir), max_to_keep=keep,
                                                  checkpoint_name="ckpt")

    @property
    def latest(self) -> str | None:
        """Path prefix of the chief's newest checkpoint (None before the first save)."""
        return tf.train.latest_checkpoint(str(self.directory))

    def restore_latest(self) -> str | None:
        """Restore the newest readable checkpoint; a damaged newest one falls back to the one before.

        A checkpoint that no longer fits the model (a changed ``model.*`` setting) is a one-line
        error saying how to start fresh, not a page of Keras matching errors.
        """
        latest = self.latest
        if not latest:
            return None
        state = tf.train.get_checkpoint_state(str(self.directory))
        candidates = list(reversed(state.all_model_checkpoint_paths)) if state else [latest]
        if latest not in candidates:
            candidates.insert(0, latest)
        failures = []
        for path in candidates:
            try:
                self.checkpoint.restore(path).assert_existing_objects_matched()
            except (tf.errors.OpError, ValueError, AssertionError, IndexError, KeyError) as exc:
                failures.append((path, exc))
                continue
            for bad, exc in failures:
                log(f"warning: checkpoint {bad} is unreadable ({_reason(exc)}); resuming from {path} instead")
            return path
        path, exc = failures[0]
        tf.get_logger().setLevel("ERROR")  # else TF lists every unrestored value at exit
        if any(isinstance(e, (ValueError, AssertionError)) for _, e in failures):
            raise CbstError(f"{self.directory}: the checkpoints were written with a different model or optimiser "
                            f"({_reason(exc)}); delete {self.directory.parent} or use another runtime.workdir "
                            "to start fresh") from None
        raise CbstError(f"{self.directory}: no readable checkpoint ({Path(path).name}: {_reason(exc)}); "
                        f"delete {self.directory} to start this step from scratch") from None

    def save(self, step: int) -> str:
        path = self.manager.save(checkpoint_number=step)
        if not self.is_chief:
            shutil.rmtree(self._write_dir, ignore_errors=True)
        return path


def _reason(exc: BaseException) -> str:
    text = str(getattr(exc, "message", exc)).strip()
    first = text.splitlines()[0] if text else type(exc).__name__
    return first[:160]


def export_weights(model: keras.Model, path: str | Path) -> Path:
    """Write ``model``'s weights to ``path`` atomically (Keras needs the ``.weights.h5`` suffix).

    The temporary file keeps the suffix (:func:`cbst_tf.io.atomic_path` with ``keep_suffix``).
    """
    path = Path(path)
    if not path.name.endswith(".weights.h5"):
        raise ValueError(f"{path}: Keras weights files must end in .weights.h5")
    with atomic_path(path, keep_suffix=True) as tmp:
        model.save_weights(str(tmp))
    return path
