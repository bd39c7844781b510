"""``cbst-tf data | model | weights | config``: the tools around the method's steps (dataset
conversion and the embedded benchmark, network summaries, released weights, the config)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from cbst_tf.bounds import quote
from cbst_tf.cli.common import (
    ConfigOpt,
    SetOpt,
    call,
    config_app,
    configure,
    data_app,
    guard,
    model_app,
    parse_hw,
    quiet_tensorflow,
    weights_app,
)
from cbst_tf.config import Config


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
    def go() -> dict:
        quiet_tensorflow()
        from cbst_tf.data.convert import convert_dataset

        return convert_dataset(fmt=fmt, root=root, out=out, split=split, shards=shards, skip_bad=skip_bad,
                               workers=workers, strict=strict, command=" ".join(["cbst-tf"] + sys.argv[1:]))

    manifest = guard(go)
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

    def go() -> str:
        quiet_tensorflow()
        from cbst_tf.synth.generate import synthesize

        claim = outdir.claim_out(out, "data synth")
        try:
            summary = synthesize(
                out=out, seed=seed, size=hw, n_source=n_source, n_target=n_target, n_val=n_val,
                cities=city_list, n_city=n_val if n_city is None else n_city)
        except BaseException:
            claim.release()
            raise
        claim.seal()
        return summary

    summary = guard(go)
    typer.echo(f"wrote the synthetic benchmark to {out}: {summary}")


@model_app.command("summary")
def model_summary(
    config: ConfigOpt = None,
    set_: SetOpt = None,
    input_hw: Annotated[str, typer.Option("--input", help="Input HxW.")] = "512x1024",
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON only.")] = False,
) -> None:
    """Layers, parameter count and FLOPs of the configured network at an input size."""
    hw = parse_hw(input_hw)

    def go(cfg: Config, **kwargs: Any) -> None:
        from cbst_tf.models.summary import print_summary

        print_summary(cfg, **kwargs)

    call(go, config, set_, None, input_hw=hw, as_json=as_json)


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

    def go() -> Any:
        quiet_tensorflow()
        from cbst_tf.models.import_mxnet import import_mxnet

        return import_mxnet(params, out, model=model, num_classes=num_classes, freeze_bn=freeze_bn)

    report = guard(go)
    typer.echo(report.summary())


@config_app.command("show")
def config_show(config: ConfigOpt = None, set_: SetOpt = None) -> None:
    """Print the fully resolved config as YAML."""
    from cbst_tf.config import dump_yaml

    typer.echo(dump_yaml(guard(configure, config, set_, None)), nl=False)


@config_app.command("reference")
def config_reference(
    update: Annotated[Path | None, typer.Option("--update", help="Rewrite the block in this Markdown file.")] = None,
) -> None:
    """Print the config reference (Markdown table generated from the dataclasses)."""
    from cbst_tf.config import reference_markdown, update_reference_block

    if update is None:
        typer.echo(reference_markdown(), nl=False)
        return
    changed = guard(update_reference_block, update)
    typer.echo(f"{update}: {'updated' if changed else 'already up to date'}")
