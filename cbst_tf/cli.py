"""The ``cbst-tf`` command line: parse, load the config, call one library function.

Expected failures (:class:`~cbst_tf.errors.CbstError`) print one line and exit with
their code (1; bad config 2; failed quality gate 3); Ctrl-C exits 130; ``--debug``
shows the traceback instead.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from cbst_tf import __version__, progress
from cbst_tf.bounds import quote
from cbst_tf.config import Config, load_config
from cbst_tf.errors import CbstError, ConfigError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Class-balanced self-training (CBST) for domain-adaptive segmentation.")
data_app = typer.Typer(no_args_is_help=True, help="Convert real datasets; synthesise the embedded benchmark.")
model_app = typer.Typer(no_args_is_help=True, help="Inspect the networks.")
config_app = typer.Typer(no_args_is_help=True, help="Show the resolved config or its reference.")
app.add_typer(data_app, name="data")
app.add_typer(model_app, name="model")
app.add_typer(config_app, name="config")
weights_app = typer.Typer(no_args_is_help=True, help="Convert released model weights.")
app.add_typer(weights_app, name="weights")

_STATE: dict[str, Any] = {"debug": False, "cfg": None}

ConfigOpt = Annotated[Path | None, typer.Option("--config", "-c", help="Experiment YAML.")]
SetOpt = Annotated[list[str] | None, typer.Option("--set", "-s", help="Override: a.b=value (repeatable).")]
WorkdirOpt = Annotated[Path | None, typer.Option("--workdir", help="Run directory (runtime.workdir).")]


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
    _STATE.update(debug=debug, cfg=None, config_name="")
    progress.configure(enabled=not no_progress)


def _pruning(fn: Any, *args: Any, **kwargs: Any) -> Any:
    """Run ``fn``; if it fails, remove the stub directories of steps it started (config.yaml only)."""
    if "cbst_tf.runs" in sys.modules:
        sys.modules["cbst_tf.runs"]._STARTED.clear()
    try:
        return fn(*args, **kwargs)
    except BaseException:
        if "cbst_tf.runs" in sys.modules:
            sys.modules["cbst_tf.runs"].prune_failed_steps()
        raise


def _guard(fn: Any, *args: Any, **kwargs: Any) -> Any:
    """Run a library call, mapping expected failures to one line and an exit code."""
    try:
        return _pruning(fn, *args, **kwargs)
    except CbstError as exc:
        if _STATE["debug"]:
            raise
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(exc.exit_code) from None
    except KeyboardInterrupt as exc:
        if _STATE["debug"]:
            raise
        terminated = isinstance(exc, Terminated)
        typer.echo("terminated" if terminated else "interrupted", err=True)
        raise typer.Exit(143 if terminated else 130) from None
    except Exception as exc:  # noqa: BLE001 - machine faults from TF/Keras are mapped; bugs re-raised
        _fault(exc)


def _raise(exc: BaseException) -> None:
    raise exc


def _fault(exc: BaseException) -> None:
    """A full disk, read-only directory, corrupt shard... as one line; a real bug re-raised."""
    from cbst_tf.faults import translate

    try:
        err = None if _STATE["debug"] else translate(exc, _datasets(), _STATE.get("config_name", ""))
    except Exception:  # noqa: BLE001 - the handler must never replace the error it is reporting
        err = None
    if err is None:
        raise exc
    typer.echo(f"error: {err}", err=True)
    raise typer.Exit(err.exit_code) from None


def _datasets() -> list[str]:
    """Dataset directories the current command may read (to name a corrupt shard)."""
    cfg = _STATE.get("cfg")
    if cfg is None:
        return []
    from cbst_tf.layout import RunLayout

    pseudo = [str(p) for p in RunLayout.of(cfg).pseudo_dirs()]
    return [d for d in (cfg.data.source, cfg.data.target, cfg.data.target_eval) if d] + pseudo


def _quiet_tensorflow() -> None:
    """Import TensorFlow with its C++ start-up lines muted (:mod:`cbst_tf.tfnoise`); shown with --debug."""
    if _STATE["debug"]:
        return
    from cbst_tf.tfnoise import quiet_import

    quiet_import()


def _library(module: str, name: str) -> Any:
    """Import a library entry point (lazily: ``--help`` and config errors need no TensorFlow)."""
    _quiet_tensorflow()
    return getattr(importlib.import_module(module), name)


def _config(config: Path | None, sets: list[str] | None, workdir: Path | None, extra: list[str] = ()) -> Config:
    overrides = list(sets or []) + list(extra)
    if workdir is not None:
        overrides.append(("--workdir", "runtime.workdir", str(workdir)))
    _STATE["config_name"] = f"config {config}" if config is not None else "the default config"
    cfg = load_config(config, overrides)
    _STATE["cfg"] = cfg
    progress.configure(log_every=cfg.runtime.log_every_items)
    return cfg


def _call(module: str, name: str, config: Path | None, sets: list[str] | None, workdir: Path | None,
          extra: list[str] = (), **kwargs: Any) -> Any:
    def go() -> Any:
        cfg = _config(config, sets, workdir, extra)
        return _library(module, name)(cfg, **kwargs)

    return _guard(go)


# ----------------------------------------------------------------------------- data


@data_app.command("convert")
def data_convert(
    fmt: Annotated[str, typer.Option("--format", "-f", help="cityscapes|gta5|synthia|nthu|bdd|folder")],
    root: Annotated[Path, typer.Option("--root", help="Dataset root in its original layout.")],
    out: Annotated[Path, typer.Option("--out", help="Output TFRecord directory.")],
    split: Annotated[str | None, typer.Option("--split", help="Split (train/val/test; NTHU: City/train).")] = None,
    shards: Annotated[int, typer.Option("--shards", min=1, max=100_000, help="Number of TFRecord shards.")] = 4,
    skip_bad: Annotated[bool, typer.Option("--skip-bad", help="Skip corrupt files instead of failing.")] = False,
    workers: Annotated[int, typer.Option("--workers", min=1, max=64, help="Decode threads.")] = 2,
    strict: Annotated[bool, typer.Option("--strict", help="Label ids the format does not define are an "
                                         "error (default: a warning; they become ignore).")] = False,
) -> None:
    """Convert a dataset folder in its real layout into sharded TFRecords + manifest.json."""
    fn = lambda: _library("cbst_tf.data.convert", "convert_dataset")(  # noqa: E731
        fmt=fmt, root=root, out=out, split=split, shards=shards, skip_bad=skip_bad, workers=workers, strict=strict,
        command=" ".join(["cbst-tf"] + sys.argv[1:]))
    manifest = _guard(fn)
    typer.echo(f"wrote {manifest['num_examples']} examples in {len(manifest['shards'])} shards to {out}")


@data_app.command("synth")
def data_synth(
    out: Annotated[Path, typer.Option("--out", help="Output root (GTA5/Cityscapes/NTHU layouts inside).")],
    seed: Annotated[int, typer.Option("--seed")] = 0,
    size: Annotated[str, typer.Option("--size", help="HxW of every image.")] = "128x256",
    n_source: Annotated[int, typer.Option("--n-source", min=1, max=1_000_000)] = 400,
    n_target: Annotated[int, typer.Option("--n-target", min=1, max=1_000_000)] = 200,
    n_val: Annotated[int, typer.Option("--n-val", min=1, max=1_000_000)] = 100,
    cities: Annotated[str, typer.Option("--cities", help="Comma-separated NTHU-style cities ('' for none).")] = "Rome,Rio,Tokyo,Taipei",
    n_city: Annotated[int | None, typer.Option("--n-city", min=1, max=1_000_000, help="Train and test images per city "
                                               "(default: --n-val; --cities '' renders none).")] = None,
) -> None:
    """Render the embedded street-scene domain-adaptation benchmark."""
    from cbst_tf import outdir

    hw = parse_hw(size)
    city_list = [c for c in cities.split(",") if c]

    def fn() -> str:
        claim = outdir.claim_out(out, "data synth")
        try:
            summary = _library("cbst_tf.synth.generate", "synthesize")(
                out=out, seed=seed, size=hw, n_source=n_source, n_target=n_target, n_val=n_val,
                cities=city_list, n_city=n_val if n_city is None else n_city)
        except BaseException:
            claim.release()
            raise
        claim.seal()
        return summary

    summary = _guard(fn)
    typer.echo(f"wrote the synthetic benchmark to {out}: {summary}")


def parse_hw(text: str) -> tuple[int, int]:
    """'128x256' -> (128, 256), with a one-line error otherwise."""
    try:
        h, w = (int(v) for v in text.lower().split("x"))
        if h <= 0 or w <= 0:
            raise ValueError
    except ValueError:
        raise typer.BadParameter(f"expected HxW with positive integers, got {quote(text)}") from None
    return h, w


# ----------------------------------------------------------------------------- model


@model_app.command("summary")
def model_summary(
    config: ConfigOpt = None,
    set_: SetOpt = None,
    input_hw: Annotated[str, typer.Option("--input", help="Input HxW.")] = "512x1024",
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON only.")] = False,
) -> None:
    """Layers, parameter count and FLOPs of the configured network at an input size."""
    hw = parse_hw(input_hw)
    _call("cbst_tf.models.summary", "print_summary", config, set_, None, input_hw=hw, as_json=as_json)


# ----------------------------------------------------------------------------- weights


@weights_app.command("import-mxnet")
def weights_import_mxnet(
    params: Annotated[Path, typer.Argument(help="Official MXNet .params file (e.g. gta_rna-a1_cls19_s8_ep-0000.params).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output .weights.h5 file.")],
    model: Annotated[str, typer.Option("--model", help="Network (only resnet38).")] = "resnet38",
    num_classes: Annotated[str, typer.Option("--num-classes", help="auto (from the file) or N.")] = "auto",
    freeze_bn: Annotated[bool, typer.Option("--freeze-bn/--no-freeze-bn",
                                            help="Must match model.freeze_bn of the experiment.")] = True,
) -> None:
    """Convert an official CBST/ResNet-38 MXNet model into a Keras .weights.h5."""
    if num_classes != "auto":
        try:
            num_classes = int(num_classes)
        except ValueError:
            raise typer.BadParameter(f"--num-classes expects 'auto' or an integer, got {quote(num_classes)}") from None
    report = _guard(lambda: _library("cbst_tf.models.import_mxnet", "import_mxnet")(
        params, out, model=model, num_classes=num_classes, freeze_bn=freeze_bn))
    typer.echo(report.summary())


# ----------------------------------------------------------------------------- config


@config_app.command("show")
def config_show(config: ConfigOpt = None, set_: SetOpt = None) -> None:
    """Print the fully resolved config as YAML."""
    from cbst_tf.config import dump_yaml

    typer.echo(dump_yaml(_guard(_config, config, set_, None)), nl=False)


@config_app.command("reference")
def config_reference(
    update: Annotated[Path | None, typer.Option("--update", help="Rewrite the block in this Markdown file.")] = None,
) -> None:
    """Print the config reference (Markdown table generated from the dataclasses)."""
    from cbst_tf.config import reference_markdown, update_reference_block

    if update is None:
        typer.echo(reference_markdown(), nl=False)
        return
    changed = _guard(update_reference_block, update)
    typer.echo(f"{update}: {'updated' if changed else 'already up to date'}")


# ----------------------------------------------------------------------------- steps


@app.command()
def pretrain(config: ConfigOpt = None, set_: SetOpt = None, workdir: WorkdirOpt = None) -> None:
    """Supervised training on the labelled source domain (resumable)."""
    _call("cbst_tf.train.steps", "run_pretrain", config, set_, workdir)


@app.command()
def priors(config: ConfigOpt = None, set_: SetOpt = None, workdir: WorkdirOpt = None) -> None:
    """Class-wise spatial priors from the source labels (section 4.4, Fig. 2)."""
    _call("cbst_tf.selftrain.priors_step", "run_priors", config, set_, workdir)


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
    _call("cbst_tf.selftrain.label_step", "run_label", config, set_, workdir,
          round_=round_, shard=parse_shard(shard), phase=phase)


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


@app.command()
def finetune(
    round_: Annotated[int, typer.Option("--round", "-r", min=1, help="Self-training round R.")],
    config: ConfigOpt = None, set_: SetOpt = None, workdir: WorkdirOpt = None,
) -> None:
    """Network update of round R on source + pseudo-labelled target (resumable)."""
    _call("cbst_tf.train.steps", "run_finetune", config, set_, workdir, round_=round_)


@app.command()
def selftrain(config: ConfigOpt = None, set_: SetOpt = None, workdir: WorkdirOpt = None) -> None:
    """All rounds: label, finetune, label, ... (resumes after the last finished step)."""
    _call("cbst_tf.selftrain.driver", "run_selftrain", config, set_, workdir)


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
            _guard(_raise, ConfigError(f"--save-predictions {quote(save_predictions)}: expected a number of images or 'all'"))
        extra.append(("--save-predictions", "eval.save_predictions",
                      -1 if save_predictions == "all" else int(save_predictions)))
    _call("cbst_tf.evaluate.run", "run_evaluate", config, set_, workdir, extra, weights=weights, out=out)


@app.command()
def crossval(
    city: Annotated[str, typer.Option("--city", help="NTHU city, e.g. Rome.")],
    config: ConfigOpt = None, set_: SetOpt = None, workdir: WorkdirOpt = None,
    min_miou: Annotated[str | None, typer.Option("--min-miou", help="Exit 3 when pooled mIoU is below.")] = None,
) -> None:
    """NTHU 10-fold cross-validation of source, ST and CBST on one city (Table 1)."""
    extra = [("--min-miou", "eval.min_miou", min_miou)] if min_miou is not None else []
    _call("cbst_tf.crossval", "run_crossval", config, set_, workdir, extra, city=city)


@app.command()
def demo(
    out: Annotated[Path, typer.Option("--out", help="Output directory.")] = Path("demo_out"),
    seed: Annotated[int, typer.Option("--seed")] = 0,
    fast: Annotated[bool, typer.Option("--fast", help="A much smaller run (CI smoke test).")] = False,
    config: ConfigOpt = None, set_: SetOpt = None,
) -> None:
    """The paper's ablation end to end on the embedded benchmark, with a report."""
    _guard(lambda: _library("cbst_tf.demo", "run_demo")(config=config, overrides=list(set_ or []), out=out,
                                                         seed=seed, fast=fast))


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

    _call("cbst_tf.predict.run", "run_predict", config, set_, workdir, input=input_, out=out, weights=weights,
          formats=_guard(parse_formats, formats), shard=parse_shard(shard), skip_bad=skip_bad,
          command=" ".join(["cbst-tf"] + sys.argv[1:]))


@app.command()
def export(
    out: Annotated[Path, typer.Option("--out", help="Output directory (TF Serving model base path).")],
    config: ConfigOpt = None, set_: SetOpt = None, workdir: WorkdirOpt = None,
    weights: Annotated[Path | None, typer.Option("--weights", "-w", help="Keras .weights.h5 file.")] = None,
    fmt: Annotated[str, typer.Option("--format", "-f", help="saved_model | tflite")] = "saved_model",
    input_size: Annotated[str | None, typer.Option("--input-size", help="HxW of the TFLite model's input.")] = None,
) -> None:
    """A SavedModel (TF Serving) or TFLite model with the test passes in the graph."""
    _call("cbst_tf.export.run", "run_export", config, set_, workdir, out=out, weights=weights, fmt=fmt,
          input_size=parse_hw(input_size) if input_size is not None else None,
          command=" ".join(["cbst-tf"] + sys.argv[1:]))


class Terminated(KeyboardInterrupt):
    """SIGTERM (``kill``, Kubernetes, Slurm): unwinds like Ctrl-C, so temporaries are removed."""


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


if __name__ == "__main__":
    main()
