"""Whether a step's existing state may be reused: the settings and input files it was made with.

A finished step (``DONE``) is skipped, saying which result-changing settings
(:func:`config_differences`) or input files (:func:`changed_inputs`, digests in ``inputs.json``)
differ from the run that made it. An interrupted step resumes from its partial results only with
the same settings (:func:`refuse_changed_resume`) and the same input files (otherwise
:func:`discard_stale` deletes them, with a log line). Used by the lifecycle in :mod:`cbst_tf.runs`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from cbst_tf.config import Config
from cbst_tf.errors import CbstError
from cbst_tf.progress import log

LOCK = ".lock"

INPUTS = "inputs.json"  # digests of the files a step read (cbst_tf.io.file_digest): what its results are keyed by


def changed_inputs(path: Path, now: dict[str, str]) -> list[str]:
    """The inputs whose digest differs from the ones step ``path`` recorded ([] if none recorded)."""
    from cbst_tf.io import read_json

    if not (Path(path) / INPUTS).is_file():
        return []
    try:
        old = read_json(Path(path) / INPUTS)
    except CbstError:
        old = {}
    old = old if isinstance(old, dict) else {}
    return [name for name, digest in now.items() if old.get(name) != digest]


def discard_stale(path: Path, what: str, now: dict[str, str], partial: tuple[str, ...]) -> None:
    """Partial results (checkpoints, caches, histograms, parts: the entries named ``partial``)
    made from other input files are not resumed from: they are deleted, with a log line naming
    the inputs that changed. Anything else in the step directory is left alone."""
    import shutil

    changed = changed_inputs(path, now)
    if not changed or not resumable_state(path):
        return
    log(f"{what}: discarding the partial results in {path}: made from another {', '.join(changed)}")
    for name in partial:
        entry = Path(path) / name
        if not os.path.lexists(entry):
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)


def resumable_state(path: Path) -> bool:
    """Whether a step directory holds anything to resume from (a checkpoint, cache or partial
    output), beyond its ``config.yaml``, lock, temporaries and empty TensorBoard logs."""
    from cbst_tf.io import is_temp_name

    try:
        entries = {p.name: p for p in path.iterdir() if not is_temp_name(p.name)}
    except OSError:
        return False
    if not set(entries) <= {"config.yaml", "tb", LOCK, "DONE", INPUTS}:
        return True
    tb = entries.get("tb")
    try:
        return tb is not None and any(not f.name.startswith("events.out.tfevents") for f in tb.rglob("*"))
    except OSError:
        return True


# Keys that never change a step's result: a rerun that differs only in them is not reported.
NO_EFFECT = _NO_EFFECT = ("name", "runtime.workdir", "runtime.log_every_items", "train.log_every", "train.keep_checkpoints",
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


def refuse_changed_resume(cfg: Config, path: Path, what: str, ignore: tuple[str, ...] = (),
                          skip: tuple[str, ...] = _NO_EFFECT) -> None:
    """A step interrupted mid-way resumes from its checkpoints, caches or partial outputs; with
    settings that change its result it would silently mix two runs: refuse, naming the keys
    (all but the ``skip`` and ``ignore`` prefixes)."""
    from cbst_tf.errors import ConfigError

    if not (Path(path) / "config.yaml").is_file() or not resumable_state(Path(path)):
        return
    differs = config_differences(cfg, path, ignore + _RESUME_MAY_CHANGE, skip=skip)
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
