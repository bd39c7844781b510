"""The one lifecycle every step goes through (:func:`step`): runtime setup, the DONE check
(naming the config keys that differ), the step ``.lock``, stale-temporary cleanup, the
resolved ``config.yaml``, and ``DONE`` at the end. Where a step writes: :mod:`cbst_tf.layout`."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cbst_tf.config import Config, save_resolved
from cbst_tf.errors import CbstError
from cbst_tf.io import atomic_write_text, remove_stale_temps
from cbst_tf.layout import (  # noqa: F401 - the run layout, re-exported for existing callers
    FINAL,
    RunLayout,
    pretrained_weights,
    priors_file,
    require,
    weights_before_round,
)
from cbst_tf.progress import log

_LOCK = ".lock"
_HELD: list[Path] = []


def _lock(path: Path) -> None:
    """Take ``<step>/.lock`` (``host~pid``): a second process on the same step would interleave
    checkpoints and outputs. A lock of a dead process on this host is taken over; one held on
    another host must be removed by hand (its owner cannot be checked from here)."""
    import atexit
    import os

    from cbst_tf.io import _pid_alive, temp_tag

    if os.environ.get("TF_CONFIG"):  # multi-worker: every worker runs the step in this directory
        return
    lock = path / _LOCK
    for _ in range(2):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            try:
                owner = lock.read_text().strip()
            except OSError:
                owner = ""
            host, _, pid = owner.rpartition("~")
            mine = temp_tag().rpartition("~")[0]
            if host == mine and (not pid.isdigit() or int(pid) == os.getpid() or not _pid_alive(int(pid))):
                lock.unlink(missing_ok=True)  # its process is gone
                continue
            raise CbstError(f"{path}: another cbst-tf process ({owner or 'unknown'}) is running this step; "
                            f"wait for it, or delete {lock} if it is no longer running") from None
        with os.fdopen(fd, "w") as fh:
            fh.write(temp_tag() + "\n")
        if not _HELD:
            atexit.register(release_locks)
        _HELD.append(lock)
        return


def release_locks() -> None:
    """Remove the step locks this process holds (at exit, or when a step finishes)."""
    while _HELD:
        _HELD.pop().unlink(missing_ok=True)


_STARTED: list[Path] = []  # step directories this process started (pruned if the step fails early)


def _start(cfg: Config, path: Path, lock: bool) -> Path:
    workdir = Path(cfg.runtime.workdir)
    if workdir.exists() and not workdir.is_dir():
        raise CbstError(f"runtime.workdir: {workdir} exists and is not a directory")
    path.mkdir(parents=True, exist_ok=True)
    if lock:
        _lock(path)
    if path != workdir:  # the workdir root holds the other steps' directories: each cleans its own
        for stale in remove_stale_temps(path):
            log(f"removed {stale} left by a killed run")
    save_resolved(cfg, path)
    _STARTED.append(path)
    return path


@dataclass
class Step:
    """A step inside :func:`step`: its directory, the runtime it runs under, whether it was
    already DONE, what ``prepare`` returned, and the ``DONE`` summary the body sets when it finishes."""

    path: Path
    runtime: Any  # cbst_tf.runtime.Runtime
    done: bool
    plan: Any = None
    summary: str | None = None

    def finish(self, summary: str) -> None:
        """Write ``DONE`` (with ``summary``) when the ``with`` block ends without an error."""
        self.summary = summary


@contextlib.contextmanager
def step(cfg: Config, path: Path, what: str, *, prepare: Callable[[Any], Any] | None = None,
         ignore: tuple[str, ...] = (), lock: bool = True, resumable: bool = True,
         record: bool = True) -> Iterator[Step]:
    """The lifecycle of every ``run_*``: one place, so no step runs without the runtime settings.

    1. ``runtime.setup(cfg)`` (strategy, precision policy, seeds, op determinism), ALSO when
       the step is already done: a resumed run then continues exactly like an uninterrupted one;
    2. ``resumable`` and ``DONE`` present: say so (and which config keys differ), yield
       ``done=True``; the body returns the existing outputs;
    3. ``prepare(runtime)``: check the inputs before anything is created (its result is ``plan``);
    4. ``record``: create the directory, take ``.lock`` (``lock``; not for steps run in slices
       on several machines), remove temporaries of killed runs, write the resolved ``config.yaml``;
    5. after the body: ``DONE`` with the summary it gave :meth:`Step.finish` (a step that
       writes its own ``DONE``, like the sliced label step, gives none).
    """
    from cbst_tf.runtime import setup

    path = Path(path)
    rt = setup(cfg)
    if resumable and is_done(path):
        report_done(cfg, path, what, ignore)
        yield Step(path, rt, done=True)
        return
    plan = prepare(rt) if prepare is not None else None
    if record:
        _start(cfg, path, lock)
    run = Step(path, rt, done=False, plan=plan)
    yield run
    if run.summary is not None:
        mark_done(path, run.summary)


def prune_failed_steps() -> list[Path]:
    """After a failure: delete the directories of steps this process started that hold nothing
    but their ``config.yaml`` and empty TensorBoard logs (no checkpoint, cache or output to resume from)."""
    removed = []
    while _STARTED:
        path = _STARTED.pop()
        try:
            entries = {p.name: p for p in path.iterdir()}
        except OSError:
            continue
        if "DONE" in entries or not set(entries) <= {"config.yaml", "tb", _LOCK}:
            continue
        tb = entries.get("tb")
        if tb is not None and any(not f.name.startswith("events.out.tfevents") for f in tb.rglob("*")):
            continue
        import shutil

        if path / _LOCK in _HELD:
            _HELD.remove(path / _LOCK)
        shutil.rmtree(path, ignore_errors=True)
        removed.append(path)
        if path.parent.name.startswith("round_"):  # round_R/ when its only step was this one
            try:
                path.parent.rmdir()
            except OSError:
                pass
    return removed


def is_done(path: Path) -> bool:
    return (Path(path) / "DONE").is_file()


def mark_done(path: Path, summary: str = "") -> None:
    """Completion marker: written last, so its presence means the step finished."""
    atomic_write_text(Path(path) / "DONE", summary + "\n")
    lock = Path(path) / _LOCK
    if lock in _HELD:
        _HELD.remove(lock)
        lock.unlink(missing_ok=True)


# Keys that never change a step's result: a rerun that differs only in them is not reported.
_NO_EFFECT = ("name", "runtime.workdir", "runtime.log_every_items", "train.log_every", "data.parallel_calls",
              "data.cycle_length", "data.prefetch", "eval.", "synth.")


def config_differences(cfg: Config, path: Path, ignore: tuple[str, ...] = ()) -> list[str]:
    """Keys whose value in ``cfg`` differs from the ``config.yaml`` that step ``path`` ran with."""
    import yaml

    from cbst_tf.config import to_dict

    try:
        old = yaml.safe_load((Path(path) / "config.yaml").read_text()) or {}
    except (OSError, yaml.YAMLError):
        return []

    def flat(tree: Any, prefix: str = "") -> dict[str, Any]:
        if not isinstance(tree, dict):
            return {prefix.rstrip("."): tree}
        out: dict[str, Any] = {}
        for key, value in tree.items():
            out.update(flat(value, f"{prefix}{key}."))
        return out

    new_flat, old_flat = flat(to_dict(cfg)), flat(old)
    skip = _NO_EFFECT + tuple(ignore)
    return [k for k in new_flat if not k.startswith(skip) and k != "name" and new_flat[k] != old_flat.get(k)]


def report_done(cfg: Config, path: Path, what: str, ignore: tuple[str, ...] = ()) -> None:
    """Say that a step is skipped because it is DONE, and which settings it was NOT run with."""
    differs = config_differences(cfg, path, ignore)
    if differs:
        log(f"{what}: already done (config differs in: {', '.join(differs)}); delete {Path(path) / 'DONE'} to redo")
    else:
        log(f"{what}: already done ({path})")
