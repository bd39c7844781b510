"""``cbst-tf demo``: the paper's ablation (Table 3 layout) end to end on the embedded benchmark.

synthesise -> convert -> pretrain a stand-in for ImageNet initialisation on a style-randomised
corpus (``synth.init_images``; skipped when 0 or when ``model.weights`` is given) -> pretrain a
source model from it -> spatial priors
-> ST, CBST, CBST-SP (3 rounds each, p = 20%, +5%/round) -> evaluate each, plus source-only
and a target-supervised oracle -> ``report.json``, ``report.md`` and figures. Every stage is
a normal library step with its own run directory under ``<out>/runs``, so an interrupted
demo resumes where it stopped and the runs can be inspected with the other commands.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from importlib import resources
from pathlib import Path
from typing import Any

from cbst_tf import environment, progress
from cbst_tf.config import Config, derive, load_config, save_resolved
from cbst_tf.demo_report import (
    METHODS,
    ROW_NAMES,
    ROWS,
    evaluate_all,
    has_quality,
    method_rounds,
    write_figures,
)
from cbst_tf.errors import CbstError, ConfigError
from cbst_tf.io import atomic_write_json, atomic_write_text
from cbst_tf.layout import DemoLayout, RunLayout, priors_file, weights_before_round


def demo_config(config: Path | None, overrides: list[str], out: Path, seed: int, fast: bool) -> Config:
    """Defaults, the built-in demo preset (and the fast one), the user's YAML, then ``--set``."""
    presets_dir = resources.files("cbst_tf") / "presets"
    presets = [Path(str(presets_dir / "demo.yaml"))]
    if fast:
        presets.append(Path(str(presets_dir / "demo_fast.yaml")))
    demo = DemoLayout(out)
    paths = [("--out", "data.source", str(demo.data("source"))), ("--out", "data.target", str(demo.data("target"))),
             ("--out", "data.target_eval", str(demo.data("target_val"))),
             ("--out", "runtime.workdir", str(demo.run("source"))), ("--seed", "runtime.seed", seed)]
    return load_config(config, paths + list(overrides), presets=tuple(presets))


def oracle_config(cfg: Config, out: Path) -> Config:
    """The target-supervised oracle row: source pretraining run on the labelled target train
    split (same network, preset and budget), under ``<out>/runs/oracle``."""
    return derive(cfg, {"runtime.workdir": str(DemoLayout(out).run("oracle")), "data.source": cfg.data.target},
                  "demo (oracle row)")


def init_config(cfg: Config, out: Path) -> Config | None:
    """The stand-in init's run (``synth.init_images``): source pretraining with the demo's
    network, preset and budget on the style-randomised corpus, under ``<out>/runs/init``, with
    its own fixed seed (``synth.init_seed``), as one set of ImageNet weights serves every run,
    and its own budget when ``synth.init_steps`` is set. None when there is no such stage:
    ``synth.init_images`` is 0, or the user gave ``model.weights`` (e.g. real ImageNet weights),
    which take precedence."""
    if cfg.synth.init_images <= 0 or cfg.model.weights:
        return None
    demo = DemoLayout(out)
    changes = {"runtime.workdir": str(demo.run("init")), "data.source": str(demo.data("stylized")),
               "runtime.seed": cfg.synth.init_seed, "model.weights": None}
    if cfg.synth.init_steps > 0:
        changes["train.steps"] = cfg.synth.init_steps
    return derive(cfg, changes, "demo (stand-in init)")


def with_init(cfg: Config, out: Path) -> tuple[Config, Config | None]:
    """``cfg`` (the source model's and the oracle's config) pointed at the stand-in init's weights
    when there is an init stage, and the init's config (:func:`init_config`, else None)."""
    icfg = init_config(cfg, out)
    if icfg is None:
        return cfg, None
    weights = str(RunLayout.final(RunLayout.of(icfg).pretrain))
    return derive(cfg, {"model.weights": weights}, "demo (the stand-in init's weights)"), icfg


def _stand_in_init(icfg: Config, out: Path) -> Path:
    from cbst_tf.synth.stylized import synthesize_stylized
    from cbst_tf.train.steps import run_pretrain

    s = icfg.synth
    raw = synthesize_stylized(DemoLayout(out).raw / "stylized", s.init_seed, s.size, s.init_images)
    _convert_once("gta5", raw, None, icfg.data.source, "the stylized init corpus", raw.parent / "stylized.json")
    return run_pretrain(icfg)


@contextlib.contextmanager
def oracle_beside(cfg: Config, out: Path) -> Iterator[Callable[[], Path]]:
    """Pretrain the oracle as ``cbst-tf pretrain`` in a second process while the block runs;
    yields ``wait()``, which returns its final weights or raises a one-line error naming its
    log. Leaving the block early stops the process (the step resumes on the next run).

    It needs only the converted data and the init, so it runs beside the source model and the
    self-training stages: one TensorFlow process leaves part of the 2 cores idle, and the
    pretraining step seeds and configures its own process, so its result is the same as in
    this one (``runtime.deterministic``)."""
    ocfg = oracle_config(cfg, out)
    runs = DemoLayout(out).runs
    conf = save_resolved(ocfg, runs, "oracle_config.yaml")
    log = runs / "oracle.log"
    with log.open("w") as sink:
        proc = subprocess.Popen([sys.executable, "-m", "cbst_tf.cli", "--no-progress", "pretrain", "--config",
                                 str(conf)], stdout=sink, stderr=subprocess.STDOUT)

    def wait() -> Path:
        code = proc.wait()
        if code != 0:
            raise CbstError(f"demo: the oracle's pretraining failed (exit {code}); see {log}")
        return RunLayout.final(RunLayout.of(ocfg).pretrain)

    try:
        yield wait
    finally:
        if proc.poll() is None:
            proc.terminate()
            proc.wait()


def _convert_once(fmt: str, root: Path, split: str | None, dest: str, what: str, made_by: Path) -> None:
    """Convert ``root`` into ``dest`` unless an earlier run converted the same raw data: the
    manifest's command records the digest of ``made_by`` (the renderer's completion marker, which
    holds its parameters), so data rendered again differently is converted again."""
    import hashlib

    from cbst_tf.data.convert import convert_dataset
    from cbst_tf.data.manifest import read_manifest

    digest = hashlib.sha256(made_by.read_bytes()).hexdigest()[:16]
    command = f"cbst-tf demo (convert {what}; raw {digest})"
    if (Path(dest) / "manifest.json").is_file():
        try:
            if read_manifest(dest)["command"] == command:
                return
        except CbstError:
            pass
        progress.log(f"demo: {dest} was converted from other raw data; converting it again")
    convert_dataset(fmt=fmt, root=root, out=Path(dest), split=split, shards=2, skip_bad=False,
                    workers=2, command=command)


def prepare_data(cfg: Config, out: Path, seed: int) -> None:
    from cbst_tf.synth.generate import synthesize

    raw = DemoLayout(out).raw
    s = cfg.synth
    synthesize(out=raw, seed=seed, size=tuple(s.size), n_source=s.n_source, n_target=s.n_target,
               n_val=s.n_val, cities=[], n_city=1)
    jobs = [("gta5", raw / "gta5", None, cfg.data.source),
            ("cityscapes", raw / "cityscapes", "train", cfg.data.target),
            ("cityscapes", raw / "cityscapes", "val", cfg.data.target_eval)]
    for fmt, root, split, dest in jobs:
        _convert_once(fmt, root, split, dest, f"{fmt} {split or ''}", raw / "synth.json")


def run_demo(config: Path | None = None, overrides: list[str] | None = None, out: Path = Path("demo_out"),
             seed: int = 0, fast: bool = False, methods: tuple[str, ...] = METHODS) -> dict:
    """Run (or resume) the whole demo; returns the report dict also written to ``report.json``.
    ``methods``: the self-training rows (:data:`cbst_tf.demo_report.ROWS`); a rerun in the same
    ``out`` with more rows reuses every finished stage and runs only the new rows.

    ``out`` is claimed like every output directory (:mod:`cbst_tf.outdir`): only an earlier demo
    made with the same settings is resumed or redone there."""
    from cbst_tf.outdir import claim_out

    start = time.monotonic()
    out = Path(out)
    cfg = demo_config(config, list(overrides or []), out, seed, fast)  # validated before anything is written
    inputs = {"--config": config, "model.weights": None if cfg.model.weights == "imagenet" else cfg.model.weights}
    cfg, icfg = with_init(cfg, out)
    claim = claim_out(out, "demo", inputs)
    try:
        _same_config(cfg, out)
        save_resolved(cfg, out, "demo_config.yaml")
        report = _run(cfg, icfg, out, seed, fast, start, methods)
    except BaseException:
        claim.release()
        raise
    claim.seal()
    return report


def _same_config(cfg: Config, out: Path) -> None:
    """An earlier demo in ``out`` with other settings would be reused silently (its finished
    stages are skipped): refuse, naming the settings that differ."""
    from cbst_tf.reuse import config_differences

    if not (out / "demo_config.yaml").is_file():
        return
    differs = config_differences(cfg, out, name="demo_config.yaml", skip=("name", "runtime.log_every_items",
                                                                           "train.log_every", "data.parallel_calls",
                                                                           "data.cycle_length", "data.prefetch"))
    if differs:
        shown = ", ".join(differs[:8]) + (f" and {len(differs) - 8} more" if len(differs) > 8 else "")
        raise ConfigError(f"--out {out}: holds a demo made with other settings (differs in: {shown}); "
                          "choose another --out, or delete it to start over")


def _run(cfg: Config, icfg: Config | None, out: Path, seed: int, fast: bool, start: float,
         methods: tuple[str, ...]) -> dict:
    from cbst_tf.demo_use import report_section, use_adapted_model
    from cbst_tf.evaluate.report import format_table, print_table
    from cbst_tf.selftrain.driver import run_method
    from cbst_tf.selftrain.priors_step import run_priors
    from cbst_tf.train.steps import run_pretrain

    timings: dict[str, float] = {}

    def stage(name: str, fn, *args) -> Any:
        t = time.monotonic()
        progress.log(f"demo: {name}")
        result = fn(*args)
        timings[name] = round(time.monotonic() - t, 1)
        return result

    stage("data", prepare_data, cfg, out, seed)
    if icfg is not None:
        stage("init", _stand_in_init, icfg, out)
    with contextlib.ExitStack() as stack:
        oracle = stack.enter_context(oracle_beside(cfg, out)) if cfg.synth.oracle else None
        stage("pretrain", run_pretrain, cfg)
        stage("priors", run_priors, cfg)
        source = weights_before_round(cfg, 1)
        weights = {"source_only": source}
        for row in methods:
            method, regularizer = ROWS[row]
            weights[row] = stage(row, run_method, cfg, DemoLayout(out).run(row), method, source,
                                 {"selftrain.priors": str(priors_file(cfg)), "selftrain.regularizer": regularizer},
                                 f"demo ({row} row)")
        if oracle is not None:  # the wait for the second process (it ran beside the stages above)
            weights["oracle"] = stage("oracle", oracle)
    results, panels = stage("evaluate", evaluate_all, cfg, weights, DemoLayout(out))
    figures = write_figures(out, cfg, panels, methods)
    use = stage("use", use_adapted_model, cfg, out, weights,
                DemoLayout(out).raw / "cityscapes" / "leftImg8bit" / "val")

    rows = {ROW_NAMES[k]: v for k, v in results.items()}
    table = format_table(rows, cfg.eval.protocol)
    report = {
        "seed": seed, "fast": fast, "wall_seconds": round(time.monotonic() - start, 1), "timings": timings,
        "protocol": cfg.eval.protocol,
        "methods": {k: {"miou": v["miou"], "iou": v["iou"]} for k, v in results.items()},
        "figures": figures, "use": use,
        "environment": environment.describe({"init": cfg.model.weights, **weights}),
    }
    rounds = method_rounds(out, methods)
    quality_section: list[str] = []
    if has_quality(rounds):
        from cbst_tf.report import quality_table

        report["pseudo_label_quality"] = {m: [r["pseudo_label_quality"] for r in v] for m, v in rounds.items()}
        quality_section = ["Pseudo-label precision / recall (%) against the target-train labels "
                           "(diagnostics: the methods never see these labels):", "",
                           quality_table({ROW_NAMES[k]: v for k, v in rounds.items()}), ""]
    atomic_write_json(out / "report.json", report)
    atomic_write_text(out / "report.md", "\n".join([
        f"# cbst-tf demo (seed {seed}{', fast' if fast else ''})", "",
        "Embedded synthetic benchmark: game-style source (GTA5 layout) -> real-style target (Cityscapes layout).",
        f"IoU per class and mIoU (%) on the labelled target split; protocol `{cfg.eval.protocol}`.", "",
        table, "", *quality_section, *[f"![{f}]({f})" for f in figures], "", *report_section(use, out),
        "", f"Wall time: {report['wall_seconds']} s; stages: {timings}", "",
        environment.markdown(report["environment"]), ""]))
    print_table(rows, cfg.eval.protocol, title=f"cbst-tf demo, seed {seed}")
    return report
