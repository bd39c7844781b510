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
                owner = lock.read_bytes()[:200].decode("utf-8", "replace").strip()
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

        atomic_write_json(path / _INPUTS, inputs)
    _STARTED.append(path)
    return path


_INPUTS = "inputs.json"  # digests of the files a step read (cbst_tf.io.file_digest): what its results are keyed by


def _changed_inputs(path: Path, now: dict[str, str]) -> list[str]:
    """The inputs whose digest differs from the ones step ``path`` recorded ([] if none recorded)."""
    from cbst_tf.io import read_json

    if not (Path(path) / _INPUTS).is_file():
        return []
    try:
        old = read_json(Path(path) / _INPUTS)
    except CbstError:
        old = {}
    old = old if isinstance(old, dict) else {}
    return [name for name, digest in now.items() if old.get(name) != digest]


def _discard_stale(path: Path, what: str, now: dict[str, str]) -> None:
    """Partial results (checkpoints, caches, histograms, parts) made from other input files are
    not resumed from: they are deleted, with a log line naming the inputs that changed."""
    import shutil

    changed = _changed_inputs(path, now)
    if not changed or not _resumable_state(path):
        return
    log(f"{what}: discarding the partial results in {path}: made from another {', '.join(changed)}")
    for entry in path.iterdir():
        if entry.name in ("config.yaml", _LOCK):
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)


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
         record: bool = True, inputs: Callable[[], dict[str, str]] | None = None) -> Iterator[Step]:
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
    partial results of an interrupted one made from other files are discarded (with a log line)
    instead of being resumed. A resume with other result-changing settings is refused.
    """
    from cbst_tf.runtime import setup

    path = Path(path)
    rt = setup(cfg)
    if resumable and (path / "DONE").is_file():
        missing = missing_outputs(path)
        if not missing:
            report_done(cfg, path, what, ignore, _changed_inputs(path, inputs()) if inputs else [])
            yield Step(path, rt, done=True)
            return
        log(f"{what}: {path / 'DONE'} is there but {path / missing[0]} is missing; running the step again")
        (path / "DONE").unlink(missing_ok=True)
    if resumable:
        refuse_changed_resume(cfg, path, what, ignore)
    plan = prepare(rt) if prepare is not None else None
    now = inputs() if inputs is not None else None
    if resumable and now is not None:
        _discard_stale(path, what, now)
    if record:
        _start(cfg, path, lock, now)
    run = Step(path, rt, done=False, plan=plan)
    yield run
    if run.summary is not None:
        mark_done(path, run.summary, run.outputs)


def _resumable_state(path: Path) -> bool:
    """Whether a step directory holds anything to resume from (a checkpoint, cache or partial
    output), beyond its ``config.yaml``, lock, temporaries and empty TensorBoard logs."""
    from cbst_tf.io import _TEMP

    try:
        entries = {p.name: p for p in path.iterdir() if not _TEMP.match(p.name)}
    except OSError:
        return False
    if not set(entries) <= {"config.yaml", "tb", _LOCK, "DONE", _INPUTS}:
        return True
    tb = entries.get("tb")
    try:
        return tb is not None and any(not f.name.startswith("events.out.tfevents") for f in tb.rglob("*"))
    except OSError:
        return True


def prune_failed_steps() -> list[Path]:
    """After a failure: delete the directories of steps this process started that hold nothing
    but their ``config.yaml`` and empty TensorBoard logs (no checkpoint, cache or output to resume from)."""
    removed = []
    while _STARTED:
        path = _STARTED.pop()
        try:
            if (path / "DONE").exists() or _resumable_state(path) or not path.is_dir():
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


# Keys that never change a step's result: a rerun that differs only in them is not reported.
_NO_EFFECT = ("name", "runtime.workdir", "runtime.log_every_items", "train.log_every", "train.keep_checkpoints",
              "data.parallel_calls", "data.cycle_length", "data.prefetch", "eval.", "synth.")
# A resumed training step may be given another length (it then trains to the new train.steps).
_RESUME_MAY_CHANGE = ("train.steps",)


def config_differences(cfg: Config, path: Path, ignore: tuple[str, ...] = (), name: str = "config.yaml",
                       skip: tuple[str, ...] = _NO_EFFECT) -> list[str]:
    """Keys whose value in ``cfg`` differs from the ``config.yaml`` (``name``) that step ``path``
    ran with, except the ``skip`` and ``ignore`` prefixes."""
    from cbst_tf.config import Config, to_dict
    from cbst_tf.errors import ConfigError
    from cbst_tf.yamlio import load_yaml, read_text_file

    try:
        old = load_yaml(read_text_file(Path(path) / name), str(Path(path) / name)) or {}
    except ConfigError:
        return []
    if not isinstance(old, dict):
        return []

    def flat(tree: Any, prefix: str = "") -> dict[str, Any]:
        if not isinstance(tree, dict):
            return {prefix.rstrip("."): tree}
        out: dict[str, Any] = {}
        for key, value in tree.items():
            out.update(flat(value, f"{prefix}{key}."))
        return out

    # A key the old config.yaml lacks (added in a later version) held its default then.
    new_flat, old_flat, default = flat(to_dict(cfg)), flat(old), flat(to_dict(Config()))
    skip = tuple(skip) + tuple(ignore)
    return [k for k in new_flat
            if not k.startswith(skip) and k != "name" and new_flat[k] != old_flat.get(k, default.get(k))]


def refuse_changed_resume(cfg: Config, path: Path, what: str, ignore: tuple[str, ...] = ()) -> None:
    """A step interrupted mid-way resumes from its checkpoints, caches or partial outputs; with
    settings that change its result it would silently mix two runs: refuse, naming the keys."""
    from cbst_tf.errors import ConfigError

    if not (Path(path) / "config.yaml").is_file() or not _resumable_state(Path(path)):
        return
    differs = config_differences(cfg, path, ignore + _RESUME_MAY_CHANGE)
    if differs:
        shown = ", ".join(differs[:8]) + (f" and {len(differs) - 8} more" if len(differs) > 8 else "")
        raise ConfigError(f"{what}: {path} was started with other settings (differs in: {shown}); "
                          f"rerun with those to resume it, or delete {path} to start over")


def report_done(cfg: Config, path: Path, what: str, ignore: tuple[str, ...] = (),
                changed_inputs: list[str] = ()) -> None:
    """Say that a step is skipped because it is DONE, and which settings (or input files) it was
    NOT run with."""
    differs = config_differences(cfg, path, ignore)
    if changed_inputs:
        also = f" and its config differs in: {', '.join(differs)}" if differs else ""
        log(f"{what}: already done, but from another {', '.join(changed_inputs)}{also}; "
            f"delete {Path(path) / 'DONE'} to redo")
    elif differs:
        log(f"{what}: already done (config differs in: {', '.join(differs)}); delete {Path(path) / 'DONE'} to redo")
    else:
        log(f"{what}: already done ({path})")
