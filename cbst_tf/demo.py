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
import copy
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from cbst_tf import progress
from cbst_tf.config import Config, load_config, save_resolved
from cbst_tf.errors import CbstError
from cbst_tf.io import atomic_write_json, atomic_write_text, read_json
from cbst_tf.layout import RunLayout, priors_file, weights_before_round

METHODS = ("st", "cbst", "cbst_sp")
ROW_NAMES = {"source_only": "Source only", "st": "ST", "cbst": "CBST", "cbst_sp": "CBST-SP",
             "oracle": "Oracle (target labels)"}
PANEL_IMAGES = 4


def demo_config(config: Path | None, overrides: list[str], out: Path, seed: int, fast: bool) -> Config:
    """Defaults, the built-in demo preset (and the fast one), the user's YAML, then ``--set``."""
    presets_dir = resources.files("cbst_tf") / "presets"
    presets = [Path(str(presets_dir / "demo.yaml"))]
    if fast:
        presets.append(Path(str(presets_dir / "demo_fast.yaml")))
    data = out / "data"
    paths = [("--out", "data.source", str(data / "source")), ("--out", "data.target", str(data / "target")),
             ("--out", "data.target_eval", str(data / "target_val")),
             ("--out", "runtime.workdir", str(_method_dir(out, "source"))), ("--seed", "runtime.seed", seed)]
    return load_config(config, paths + list(overrides), presets=tuple(presets))


def _method_dir(out: Path, method: str) -> Path:
    """``<out>/runs/<method>``: the run directory (:class:`~cbst_tf.layout.RunLayout`) of one row."""
    return out / "runs" / method


def _with(cfg: Config, workdir: Path, **selftrain: Any) -> Config:
    c = copy.deepcopy(cfg)
    c.runtime.workdir = str(workdir)
    for key, value in selftrain.items():
        setattr(c.selftrain, key, value)
    return c


def oracle_config(cfg: Config, out: Path) -> Config:
    """The target-supervised oracle row: source pretraining run on the labelled target train
    split (same network, preset and budget), under ``<out>/runs/oracle``."""
    ocfg = _with(cfg, _method_dir(out, "oracle"))
    ocfg.data.source = cfg.data.target
    return ocfg


def init_config(cfg: Config, out: Path) -> Config | None:
    """The stand-in init's run (``synth.init_images``): source pretraining with the demo's
    network, preset and budget on the style-randomised corpus, under ``<out>/runs/init``, with
    its own fixed seed (``synth.init_seed``), as one set of ImageNet weights serves every run,
    and its own budget when ``synth.init_steps`` is set. None when there is no such stage:
    ``synth.init_images`` is 0, or the user gave ``model.weights`` (e.g. real ImageNet weights),
    which take precedence."""
    if cfg.synth.init_images <= 0 or cfg.model.weights:
        return None
    icfg = _with(cfg, _method_dir(out, "init"))
    icfg.data.source = str(out / "data" / "stylized")
    icfg.runtime.seed = cfg.synth.init_seed
    icfg.model.weights = None
    if cfg.synth.init_steps > 0:
        icfg.train.steps = cfg.synth.init_steps
    return icfg


def _stand_in_init(icfg: Config, out: Path) -> Path:
    from cbst_tf.synth.stylized import synthesize_stylized
    from cbst_tf.train.steps import run_pretrain

    s = icfg.synth
    raw = synthesize_stylized(out / "raw" / "stylized", s.init_seed, s.size, s.init_images)
    _convert_once("gta5", raw, None, icfg.data.source, "the stylized init corpus")
    return run_pretrain(icfg)


@contextlib.contextmanager
def _oracle_beside(cfg: Config, out: Path) -> Iterator[Callable[[], Path]]:
    """Pretrain the oracle as ``cbst-tf pretrain`` in a second process while the block runs;
    yields ``wait()``, which returns its final weights or raises a one-line error naming its
    log. Leaving the block early stops the process (the step resumes on the next run).

    It needs only the converted data and the init, so it runs beside the source model and the
    self-training stages: one TensorFlow process leaves part of the 2 cores idle, and the
    pretraining step seeds and configures its own process, so its result is the same as in
    this one (``runtime.deterministic``)."""
    ocfg = oracle_config(cfg, out)
    conf = save_resolved(ocfg, out / "runs", "oracle_config.yaml")
    log = out / "runs" / "oracle.log"
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


def _convert_once(fmt: str, root: Path, split: str | None, dest: str, what: str) -> None:
    """Convert ``root`` into ``dest`` unless an earlier run already did (its manifest exists)."""
    from cbst_tf.data.convert import convert_dataset

    if not (Path(dest) / "manifest.json").is_file():
        convert_dataset(fmt=fmt, root=root, out=Path(dest), split=split, shards=2, skip_bad=False,
                        workers=2, command=f"cbst-tf demo (convert {what})")


def _prepare_data(cfg: Config, out: Path, seed: int) -> None:
    from cbst_tf.synth.generate import synthesize

    raw = out / "raw"
    s = cfg.synth
    synthesize(out=raw, seed=seed, size=tuple(s.size), n_source=s.n_source, n_target=s.n_target,
               n_val=s.n_val, cities=[], n_city=1)
    jobs = [("gta5", raw / "gta5", None, cfg.data.source),
            ("cityscapes", raw / "cityscapes", "train", cfg.data.target),
            ("cityscapes", raw / "cityscapes", "val", cfg.data.target_eval)]
    for fmt, root, split, dest in jobs:
        _convert_once(fmt, root, split, dest, f"{fmt} {split or ''}")  # the manifests' command as before


def _evaluate_all(cfg: Config, weights: dict[str, Path]) -> tuple[dict, dict]:
    """mIoU of every model on the labelled target split, and panels for the first images."""
    from cbst_tf.data.reader import eval_dataset, read_manifest
    from cbst_tf.evaluate.evaluator import evaluate_model
    from cbst_tf.evaluate.run import load_model

    total = int(read_manifest(cfg.data.target_eval)["num_examples"])
    results, panels = {}, {}
    for name, path in weights.items():
        cache = Path(cfg.runtime.workdir).parent.parent / "eval" / f"{name}.json"  # <out>/eval
        kept: list = []

        def keep(example: dict, gt: np.ndarray, pred: np.ndarray, kept: list = kept) -> None:
            if len(kept) < PANEL_IMAGES:
                kept.append((example["image"], gt, pred))

        result = evaluate_model(load_model(cfg, path), eval_dataset(cfg.data.target_eval, cfg.data),
                                cfg.eval.protocol, cfg.eval.scales, cfg.eval.flip, input_scale=cfg.data.input_scale,
                                total=total, on_prediction=keep, description=f"evaluate {name}",
                                upsample=cfg.eval.upsample, long_side=cfg.eval.long_side)
        result["weights"] = str(path)
        atomic_write_json(cache, result)
        results[name], panels[name] = result, kept
    return results, panels


def _method_rounds(out: Path) -> dict[str, list[dict]]:
    """Per-round label stats of each finished self-training method, by method id."""
    rounds = {}
    for method in METHODS:
        summary = RunLayout(_method_dir(out, method)).selftrain_summary
        if summary.is_file():
            rounds[method] = read_json(summary)["rounds"]
    return rounds


def _has_quality(rounds: dict[str, list[dict]]) -> bool:
    return bool(rounds) and all(r and all("pseudo_label_quality" in s for s in r) for r in rounds.values())


def _figures(out: Path, cfg: Config, panels: dict) -> list[str]:
    import shutil

    from cbst_tf.report import plot_quality, plot_selection, qualitative_panels, save_rgb_png

    made = []
    rounds = {ROW_NAMES[k]: v for k, v in _method_rounds(out).items()}
    selection = {k: v for k, v in rounds.items() if k in (ROW_NAMES["st"], ROW_NAMES["cbst"])}
    if selection and all(selection.values()):
        plot_selection(selection, out / "selection_per_class.png",
                       "Pseudo-label pixels selected per class and round (ST vs CBST)")
        made.append("selection_per_class.png")
    if _has_quality(rounds):
        plot_quality(rounds, out / "pseudo_label_quality.png",
                     "Pseudo-labels against the target-train labels (never used by the methods)")
        made.append("pseudo_label_quality.png")
    grid = Path(priors_file(cfg)).parent / "heatmaps_grid.png"
    if grid.is_file():
        shutil.copyfile(grid, out / "spatial_priors.png")
        made.append("spatial_priors.png")
    columns = [m for m in ("source_only", "st", "cbst", "cbst_sp") if m in panels]
    if columns:
        rows = []
        for i in range(min(len(panels[c]) for c in columns)):
            image, gt, _ = panels[columns[0]][i]
            named = {"ground truth": gt}
            named.update({ROW_NAMES[c]: panels[c][i][2] for c in columns})
            rows.append(qualitative_panels(image, named))
        save_rgb_png(out / "qualitative.png", np.concatenate(rows, axis=0))
        made.append("qualitative.png")
    return made


def run_demo(config: Path | None = None, overrides: list[str] | None = None, out: Path = Path("demo_out"),
             seed: int = 0, fast: bool = False) -> dict:
    """Run (or resume) the whole demo; returns the report dict also written to ``report.json``."""
    from cbst_tf.demo_use import report_section, use_adapted_model
    from cbst_tf.evaluate.report import format_table, print_table
    from cbst_tf.selftrain.driver import run_selftrain
    from cbst_tf.selftrain.priors_step import run_priors
    from cbst_tf.train.steps import run_pretrain

    start = time.monotonic()
    out = Path(out)
    cfg = demo_config(config, list(overrides or []), out, seed, fast)
    icfg = init_config(cfg, out)
    if icfg is not None:  # the source model and the oracle start from it
        cfg.model.weights = str(RunLayout.final(RunLayout.of(icfg).pretrain))
    save_resolved(cfg, out, "demo_config.yaml")
    timings: dict[str, float] = {}

    def stage(name: str, fn, *args) -> Any:
        t = time.monotonic()
        progress.log(f"demo: {name}")
        result = fn(*args)
        timings[name] = round(time.monotonic() - t, 1)
        return result

    stage("data", _prepare_data, cfg, out, seed)
    if icfg is not None:
        stage("init", _stand_in_init, icfg, out)
    with contextlib.ExitStack() as stack:
        oracle = stack.enter_context(_oracle_beside(cfg, out)) if cfg.synth.oracle else None
        stage("pretrain", run_pretrain, cfg)
        stage("priors", run_priors, cfg)
        source = weights_before_round(cfg, 1)
        weights = {"source_only": source}
        for method in METHODS:
            mcfg = _with(cfg, _method_dir(out, method), method=method, source_weights=str(source),
                         priors=str(priors_file(cfg)))
            weights[method] = stage(method, run_selftrain, mcfg)
        if oracle is not None:  # the wait for the second process (it ran beside the stages above)
            weights["oracle"] = stage("oracle", oracle)
    results, panels = stage("evaluate", _evaluate_all, cfg, weights)
    figures = _figures(out, cfg, panels)
    use = stage("use", use_adapted_model, cfg, out, weights, out / "raw" / "cityscapes" / "leftImg8bit" / "val")

    rows = {ROW_NAMES[k]: v for k, v in results.items()}
    table = format_table(rows, cfg.eval.protocol)
    report = {
        "seed": seed, "fast": fast, "wall_seconds": round(time.monotonic() - start, 1), "timings": timings,
        "protocol": cfg.eval.protocol,
        "methods": {k: {"miou": v["miou"], "iou": v["iou"]} for k, v in results.items()},
        "figures": figures, "use": use,
    }
    rounds = _method_rounds(out)
    quality_section: list[str] = []
    if _has_quality(rounds):
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
        "", f"Wall time: {report['wall_seconds']} s; stages: {timings}", ""]))
    print_table(rows, cfg.eval.protocol, title=f"cbst-tf demo, seed {seed}")
    return report
