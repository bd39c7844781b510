"""The one lifecycle every step goes through (:func:`step`): runtime setup, the DONE check
(naming the config keys and input files that differ; outputs listed in ``DONE`` must exist),
the resume checks (:mod:`cbst_tf.reuse`), the step ``.lock``, stale-temporary cleanup, the
resolved ``config.yaml`` and ``inputs.json``, and ``DONE`` at the end. Where a step writes:
:mod:`cbst_tf.layout`."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cbst_tf.config import Config, save_resolved
from cbst_tf.errors import CbstError
from cbst_tf.io import atomic_write_text, remove_stale_temps
from cbst_tf.progress import log
from cbst_tf.reuse import (
    INPUTS,
    LOCK,
    changed_inputs,
    discard_stale,
    refuse_changed_resume,
    report_done,
    resumable_state,
)

_LOCK = LOCK
_HELD: list[Path] = []


def _lock(path: Path) -> None:
    """Take ``<step>/.lock`` (``host~pid``): a second process on the same step would interleave
    checkpoints and outputs. A lock of a dead process on this host is taken over; one held on
    another host must be removed by hand (its owner cannot be checked from here)."""
    import atexit
    import os

    from cbst_tf.io import temp_tag, writer_gone

    if os.environ.get("TF_CONFIG"):  # multi-worker: every worker runs the step in this directory
        return
    lock = path / _LOCK
    for _ in range(2):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            try:
                owner = lock.read_bytes()[:200].decode("utf-8", "replace").strip()
            except OSError:
                owner = ""
            if writer_gone(owner):
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


def _start(cfg: Config, path: Path, lock: bool, inputs: dict[str, str] | None = None) -> Path:
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
    if inputs is not None:
        from cbst_tf.io import atomic_write_json

        atomic_write_json(path / INPUTS, inputs)
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
    outputs: tuple[str, ...] = ()

    def finish(self, summary: str, outputs: tuple[str, ...] = ()) -> None:
        """Write ``DONE`` (with ``summary`` and the ``outputs`` it vouches for, relative to the
        step directory) when the ``with`` block ends without an error."""
        self.summary, self.outputs = summary, tuple(outputs)


@contextlib.contextmanager
def step(cfg: Config, path: Path, what: str, *, prepare: Callable[[Any], Any] | None = None,
         ignore: tuple[str, ...] = (), lock: bool = True, resumable: bool = True,
         record: bool = True, inputs: Callable[[], dict[str, str]] | None = None,
         partial: tuple[str, ...] = (), resume_skip: tuple[str, ...] | None = None) -> Iterator[Step]:
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

    ``inputs()`` returns ``{name: digest}`` of the files the step reads (weights, datasets,
    priors), recorded in ``inputs.json``: a DONE step made from other files says so, and the
    partial results of an interrupted one made from other files (its entries named ``partial``)
    are discarded (with a log line) instead of being resumed. A resume with other result-changing
    settings is refused: for ``resumable`` steps, and for ``resume_skip`` (the prefixes of keys
    that do not change its result) when given, as for cross-validation whose folds resume.
    """
    from cbst_tf.runtime import setup

    path = Path(path)
    rt = setup(cfg)
    if resumable and (path / "DONE").is_file():
        missing = missing_outputs(path)
        if not missing:
            report_done(cfg, path, what, ignore, changed_inputs(path, inputs()) if inputs else [])
            yield Step(path, rt, done=True)
            return
        log(f"{what}: {path / 'DONE'} is there but {path / missing[0]} is missing; running the step again")
        (path / "DONE").unlink(missing_ok=True)
    if resumable or resume_skip is not None:
        refuse_changed_resume(cfg, path, what, ignore, *(() if resume_skip is None else (resume_skip,)))
    plan = prepare(rt) if prepare is not None else None
    now = inputs() if inputs is not None else None
    if resumable and now is not None:
        discard_stale(path, what, now, partial)
    if record:
        _start(cfg, path, lock, now)
    run = Step(path, rt, done=False, plan=plan)
    yield run
    if run.summary is not None:
        mark_done(path, run.summary, run.outputs)


@contextlib.contextmanager
def pruning_failed_steps() -> Iterator[None]:
    """Around one command: if it fails, :func:`prune_failed_steps` removes the stub directories of
    the steps it started (only those: the list starts empty)."""
    _STARTED.clear()
    try:
        yield
    except BaseException:
        prune_failed_steps()
        raise


def prune_failed_steps() -> list[Path]:
    """After a failure: delete the directories of steps this process started that hold nothing
    but their ``config.yaml`` and empty TensorBoard logs (no checkpoint, cache or output to resume from)."""
    removed = []
    while _STARTED:
        path = _STARTED.pop()
        try:
            if (path / "DONE").exists() or resumable_state(path) or not path.is_dir():
                continue
        except OSError:
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


_OUTPUTS = "outputs: "


def missing_outputs(path: Path) -> list[str]:
    """The outputs a step's ``DONE`` vouches for that no longer exist (relative to the step)."""
    import json

    try:
        lines = (Path(path) / "DONE").read_bytes()[:65536].decode("utf-8", "replace").splitlines()
    except OSError:
        return []
    listed: list = []
    for line in lines:
        if line.startswith(_OUTPUTS):
            try:
                listed = json.loads(line[len(_OUTPUTS):])
            except ValueError:
                listed = []
    return [name for name in listed if isinstance(name, str) and not (Path(path) / name).exists()]


def is_done(path: Path) -> bool:
    """``DONE`` exists and every output it lists does: a step whose outputs were deleted is not done."""
    return (Path(path) / "DONE").is_file() and not missing_outputs(path)


def mark_done(path: Path, summary: str = "", outputs: tuple[str, ...] | list[str] = ()) -> None:
    """Completion marker: written last, so its presence means the step finished. ``outputs``
    (paths relative to the step) must exist for the step to count as done later."""
    import json

    listed = f"{_OUTPUTS}{json.dumps(list(outputs))}\n" if outputs else ""
    atomic_write_text(Path(path) / "DONE", summary + "\n" + listed)
    lock = Path(path) / _LOCK
    if lock in _HELD:
        _HELD.remove(lock)
        lock.unlink(missing_ok=True)


