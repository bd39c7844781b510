"""What every ``cbst-tf`` command shares: the Typer apps and options, config loading, and the
guard that turns expected failures into one line and an exit code (1; bad config 2; failed
quality gate 3; Ctrl-C 130; SIGTERM 143); ``--debug`` shows the traceback instead."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from cbst_tf import progress
from cbst_tf.bounds import quote
from cbst_tf.config import Config, load_config
from cbst_tf.errors import CbstError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Class-balanced self-training (CBST) for domain-adaptive segmentation.")
data_app = typer.Typer(no_args_is_help=True, help="Convert real datasets; synthesise the embedded benchmark.")
model_app = typer.Typer(no_args_is_help=True, help="Inspect the networks.")
config_app = typer.Typer(no_args_is_help=True, help="Show the resolved config or its reference.")
weights_app = typer.Typer(no_args_is_help=True, help="Convert released model weights.")
app.add_typer(data_app, name="data")
app.add_typer(model_app, name="model")
app.add_typer(config_app, name="config")
app.add_typer(weights_app, name="weights")

#: Process state of one command line: ``--debug``, the loaded config (to name a corrupt shard).
STATE: dict[str, Any] = {"debug": False, "cfg": None, "config_name": ""}

ConfigOpt = Annotated[Path | None, typer.Option("--config", "-c", help="Experiment YAML.")]
SetOpt = Annotated[list[str] | None, typer.Option("--set", "-s", help="Override: a.b=value (repeatable).")]
WorkdirOpt = Annotated[Path | None, typer.Option("--workdir", help="Run directory (runtime.workdir).")]


class Terminated(KeyboardInterrupt):
    """SIGTERM (``kill``, Kubernetes, Slurm): unwinds like Ctrl-C, so temporaries are removed."""


def guard(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Run a library call, mapping expected failures to one line and an exit code; the stub
    directories of steps it started are removed when it fails (:func:`cbst_tf.runs.pruning_failed_steps`)."""
    from cbst_tf.runs import pruning_failed_steps

    try:
        with pruning_failed_steps():
            return fn(*args, **kwargs)
    except CbstError as exc:
        if STATE["debug"]:
            raise
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(exc.exit_code) from None
    except KeyboardInterrupt as exc:
        if STATE["debug"]:
            raise
        terminated = isinstance(exc, Terminated)
        typer.echo("terminated" if terminated else "interrupted", err=True)
        raise typer.Exit(143 if terminated else 130) from None
    except Exception as exc:  # noqa: BLE001 - machine faults from TF/Keras are mapped; bugs re-raised
        _fault(exc)


def fail(exc: BaseException) -> None:
    """Report ``exc`` (found while parsing flags) exactly like a library failure."""

    def raise_it() -> None:
        raise exc

    guard(raise_it)


def _fault(exc: BaseException) -> None:
    """A full disk, read-only directory, corrupt shard... as one line; a real bug re-raised."""
    from cbst_tf.faults import translate

    try:
        err = None if STATE["debug"] else translate(exc, _datasets(), STATE.get("config_name", ""))
    except Exception:  # noqa: BLE001 - the handler must never replace the error it is reporting
        err = None
    if err is None:
        raise exc
    typer.echo(f"error: {err}", err=True)
    raise typer.Exit(err.exit_code) from None


def _datasets() -> list[str]:
    """Dataset directories the current command may read (to name a corrupt shard)."""
    cfg = STATE.get("cfg")
    if cfg is None:
        return []
    from cbst_tf.layout import RunLayout

    pseudo = [str(p) for p in RunLayout.of(cfg).pseudo_dirs()]
    return [d for d in (cfg.data.source, cfg.data.target, cfg.data.target_eval) if d] + pseudo


def quiet_tensorflow() -> None:
    """Import TensorFlow with its C++ start-up lines muted (:mod:`cbst_tf.tfnoise`); shown with
    --debug. Called before a command imports its library, which is imported lazily: ``--help``
    and config errors need no TensorFlow."""
    if STATE["debug"]:
        return
    from cbst_tf.tfnoise import quiet_import

    quiet_import()


def configure(config: Path | None, sets: list[str] | None, workdir: Path | None, extra: list = ()) -> Config:
    """The command's config: defaults, ``--config``, ``--set``, then its flags (``extra``)."""
    overrides = list(sets or []) + list(extra)
    if workdir is not None:
        overrides.append(("--workdir", "runtime.workdir", str(workdir)))
    STATE["config_name"] = f"config {config}" if config is not None else "the default config"
    cfg = load_config(config, overrides)
    STATE["cfg"] = cfg
    progress.configure(log_every=cfg.runtime.log_every_items)
    return cfg


def call(entry: Callable[..., Any], config: Path | None, sets: list[str] | None, workdir: Path | None,
         extra: list = (), **kwargs: Any) -> Any:
    """Load the config, then run ``entry(cfg, **kwargs)``, guarded. ``entry`` is the command's own
    small function that imports its library function and calls it."""

    def go() -> Any:
        cfg = configure(config, sets, workdir, extra)
        quiet_tensorflow()
        return entry(cfg, **kwargs)

    return guard(go)


def parse_hw(text: str) -> tuple[int, int]:
    """'128x256' -> (128, 256), with a one-line error otherwise."""
    try:
        h, w = (int(v) for v in text.lower().split("x"))
        if h <= 0 or w <= 0:
            raise ValueError
    except ValueError:
        raise typer.BadParameter(f"expected HxW with positive integers, got {quote(text)}") from None
    return h, w


def parse_shard(text: str | None) -> tuple[int, int]:
    """'2/8' -> (2, 8); None -> (0, 1)."""
    if text is None:
        return 0, 1
    try:
        i, n = (int(v) for v in text.split("/"))
        if not 0 <= i < n <= 100_000:
            raise ValueError
    except ValueError:
        raise typer.BadParameter(f"--shard expects i/n with 0 <= i < n <= 100000, got {quote(text)}") from None
    return i, n
