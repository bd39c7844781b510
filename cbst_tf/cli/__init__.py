"""The ``cbst-tf`` command line: parse, load the config, call one library function.

Each command below names the library function it runs, imported lazily inside the command
(``--help`` and config errors need no TensorFlow); :mod:`cbst_tf.cli.common` holds the config
loading and the guard that maps failures to one line and an exit code (1; bad config 2; failed
quality gate 3; Ctrl-C 130), :mod:`cbst_tf.cli.tools` the ``data``, ``model``, ``weights`` and
``config`` tools. ``--debug`` shows tracebacks.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from cbst_tf import __version__, progress
from cbst_tf.bounds import quote
from cbst_tf.cli import tools  # noqa: F401 - registers the data, model, weights and config commands
from cbst_tf.cli.common import (
    STATE,
    ConfigOpt,
    SetOpt,
    Terminated,
    WorkdirOpt,
    app,
    call,
    fail,
    guard,
    parse_hw,
    parse_shard,
    quiet_tensorflow,
)
from cbst_tf.config import Config
from cbst_tf.errors import ConfigError

__all__ = ["app", "main"]


def _version(value: bool) -> None:
    if value:
        typer.echo(f"cbst-tf {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks.")] = False,
    no_progress: Annotated[bool, typer.Option("--no-progress", help="Log lines instead of bars.")] = False,
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True)] = False,
) -> None:
    STATE.update(debug=debug, cfg=None, config_name="")
    progress.configure(enabled=not no_progress)


# ----------------------------------------------------------------------------- the method's steps


@app.command()
def pretrain(config: ConfigOpt = None, set_: SetOpt = None, workdir: WorkdirOpt = None) -> None:
    """Supervised training on the labelled source domain (resumable)."""

    def go(cfg: Config) -> Path:
        from cbst_tf.train.steps import run_pretrain

        return run_pretrain(cfg)

    call(go, config, set_, workdir)


@app.command()
def priors(config: ConfigOpt = None, set_: SetOpt = None, workdir: WorkdirOpt = None) -> None:
    """Class-wise spatial priors from the source labels (section 4.4, Fig. 2)."""

    def go(cfg: Config) -> Path:
        from cbst_tf.selftrain.priors_step import run_priors

        return run_priors(cfg)

    call(go, config, set_, workdir)


@app.command()
def label(
    round_: Annotated[int, typer.Option("--round", "-r", min=1, help="Self-training round R.")],
    config: ConfigOpt = None,
    set_: SetOpt = None,
    workdir: WorkdirOpt = None,
    shard: Annotated[str | None, typer.Option("--shard", help="i/n: process one slice of the target.")] = None,
    phase: Annotated[str, typer.Option("--phase", help="all | stats | write")] = "all",
) -> None:
    """Pseudo-label the target for round R (Algorithms 1/2, Eqs. 5/8/9)."""
    if phase not in ("all", "stats", "write"):
        raise typer.BadParameter(f"--phase must be all, stats or write, got {quote(phase)}")

    def go(cfg: Config, **kwargs: Any) -> Path:
        from cbst_tf.selftrain.label_step import run_label

        return run_label(cfg, **kwargs)

    call(go, config, set_, workdir, round_=round_, shard=parse_shard(shard), phase=phase)


@app.command()
def finetune(
    round_: Annotated[int, typer.Option("--round", "-r", min=1, help="Self-training round R.")],
    config: ConfigOpt = None, set_: SetOpt = None, workdir: WorkdirOpt = None,
) -> None:
    """Network update of round R on source + pseudo-labelled target (resumable)."""

    def go(cfg: Config, **kwargs: Any) -> Path:
        from cbst_tf.train.steps import run_finetune

        return run_finetune(cfg, **kwargs)

    call(go, config, set_, workdir, round_=round_)


@app.command()
def selftrain(config: ConfigOpt = None, set_: SetOpt = None, workdir: WorkdirOpt = None) -> None:
    """All rounds: label, finetune, label, ... (resumes after the last finished step)."""

    def go(cfg: Config) -> Path:
        from cbst_tf.selftrain.driver import run_selftrain

        return run_selftrain(cfg)

    call(go, config, set_, workdir)


@app.command()
def evaluate(
    config: ConfigOpt = None, set_: SetOpt = None, workdir: WorkdirOpt = None,
    weights: Annotated[Path | None, typer.Option("--weights", "-w", help="Keras .weights.h5 file.")] = None,
    split: Annotated[Path | None, typer.Option("--split", help="Labelled TFRecord dir (data.target_eval).")] = None,
    scales: Annotated[str | None, typer.Option("--scales", help="e.g. 0.5,0.75,1.0")] = None,
    flip: Annotated[bool | None, typer.Option("--flip/--no-flip")] = None,
    out: Annotated[Path | None, typer.Option("--out", help="Output directory.")] = None,
    min_miou: Annotated[str | None, typer.Option("--min-miou", help="Exit 3 when mIoU is below.")] = None,
    save_predictions: Annotated[str | None, typer.Option("--save-predictions", help="N or all")] = None,
) -> None:
    """mIoU on the labelled target split under the configured protocol."""
    extra: list = []  # (flag, key, value): typed values, validated by the config, blamed on the flag
    if split is not None:
        extra.append(("--split", "data.target_eval", str(split)))
    if scales is not None:
        extra.append(("--scales", "eval.scales", [v.strip() for v in scales.split(",")]))
    if flip is not None:
        extra.append(("--flip", "eval.flip", flip))
    if min_miou is not None:
        extra.append(("--min-miou", "eval.min_miou", min_miou))
    if save_predictions is not None:
        if save_predictions != "all" and not (save_predictions.isdigit() and len(save_predictions) <= 10):
            fail(ConfigError(f"--save-predictions {quote(save_predictions)}: expected a number of images or 'all'"))
        extra.append(("--save-predictions", "eval.save_predictions",
                      -1 if save_predictions == "all" else int(save_predictions)))

    def go(cfg: Config, **kwargs: Any) -> dict:
        from cbst_tf.evaluate.run import run_evaluate

        return run_evaluate(cfg, **kwargs)

    call(go, config, set_, workdir, extra, weights=weights, out=out)


@app.command()
def crossval(
    city: Annotated[str, typer.Option("--city", help="NTHU city, e.g. Rome.")],
    config: ConfigOpt = None, set_: SetOpt = None, workdir: WorkdirOpt = None,
    min_miou: Annotated[str | None, typer.Option("--min-miou", help="Exit 3 when pooled mIoU is below.")] = None,
) -> None:
    """NTHU 10-fold cross-validation of source, ST and CBST on one city (Table 1)."""
    extra = [("--min-miou", "eval.min_miou", min_miou)] if min_miou is not None else []

    def go(cfg: Config, **kwargs: Any) -> dict:
        from cbst_tf.crossval import run_crossval

        return run_crossval(cfg, **kwargs)

    call(go, config, set_, workdir, extra, city=city)


@app.command()
def demo(
    out: Annotated[Path, typer.Option("--out", help="Output directory.")] = Path("demo_out"),
    seed: Annotated[int, typer.Option("--seed")] = 0,
    fast: Annotated[bool, typer.Option("--fast", help="A much smaller run (CI smoke test).")] = False,
    methods: Annotated[str | None, typer.Option("--methods", help="Self-training rows, e.g. st,cbst,cbst_sp,mrkld_sp "
                                                "(default st,cbst,cbst_sp; CRST: mrkld, mrent, mrl2, each also _sp).")] = None,
    config: ConfigOpt = None, set_: SetOpt = None,
) -> None:
    """The paper's ablation end to end on the embedded benchmark, with a report."""

    def go() -> dict:
        from cbst_tf.demo_report import parse_methods

        rows = parse_methods(methods)
        quiet_tensorflow()
        from cbst_tf.demo import run_demo

        return run_demo(config=config, overrides=list(set_ or []), out=out, seed=seed, fast=fast, methods=rows)

    guard(go)


@app.command()
def predict(
    input_: Annotated[Path, typer.Option("--input", "-i", help="An image, a folder of images (recursive) or a "
                                         "converted TFRecord directory.")],
    out: Annotated[Path, typer.Option("--out", help="Output directory (one folder per format).")],
    config: ConfigOpt = None, set_: SetOpt = None, workdir: WorkdirOpt = None,
    weights: Annotated[Path | None, typer.Option("--weights", "-w", help="Keras .weights.h5 file.")] = None,
    formats: Annotated[str | None, typer.Option("--format", "-f", help="Comma-separated: trainids, labelids, "
                                                "color, overlay, confidence (default labelids,color).")] = None,
    shard: Annotated[str | None, typer.Option("--shard", help="i/n: process one slice of the images.")] = None,
    skip_bad: Annotated[bool, typer.Option("--skip-bad", help="Skip unreadable images instead of failing.")] = False,
) -> None:
    """Segment new images under the configured test protocol (same classes as evaluate)."""
    from cbst_tf.predict.outputs import parse_formats


    def go(cfg: Config, **kwargs: Any) -> dict:
        from cbst_tf.predict.run import run_predict

        return run_predict(cfg, **kwargs)

    call(go, config, set_, workdir, input=input_, out=out, weights=weights, formats=guard(parse_formats, formats),
         shard=parse_shard(shard), skip_bad=skip_bad, command=" ".join(["cbst-tf"] + sys.argv[1:]))


@app.command()
def export(
    out: Annotated[Path, typer.Option("--out", help="Output directory (TF Serving model base path).")],
    config: ConfigOpt = None, set_: SetOpt = None, workdir: WorkdirOpt = None,
    weights: Annotated[Path | None, typer.Option("--weights", "-w", help="Keras .weights.h5 file.")] = None,
    fmt: Annotated[str, typer.Option("--format", "-f", help="saved_model | tflite")] = "saved_model",
    input_size: Annotated[str | None, typer.Option("--input-size", help="HxW of the TFLite model's input.")] = None,
) -> None:
    """A SavedModel (TF Serving) or TFLite model with the test passes in the graph."""

    def go(cfg: Config, **kwargs: Any) -> dict:
        from cbst_tf.export.run import run_export

        return run_export(cfg, **kwargs)

    call(go, config, set_, workdir, out=out, weights=weights, fmt=fmt,
         input_size=parse_hw(input_size) if input_size is not None else None,
         command=" ".join(["cbst-tf"] + sys.argv[1:]))


def _on_sigterm(signum: int, frame: Any) -> None:
    raise Terminated()


def main() -> None:
    """Console-script entry: accept --debug/--no-progress anywhere on the line."""
    import signal

    signal.signal(signal.SIGTERM, _on_sigterm)
    argv = sys.argv[1:]
    front = [a for a in argv if a in ("--debug", "--no-progress")]
    rest = [a for a in argv if a not in ("--debug", "--no-progress")]
    if "--debug" not in front:
        from cbst_tf.tfnoise import filter_stderr

        filter_stderr()  # TF's harmless E0000 lines of every round (make demo)
    app(args=front + rest, prog_name="cbst-tf")

