"""``cbst-tf selftrain``: every step of an experiment, resumable.

source model (``pretrain``) -> spatial priors (``priors``, for ``*_sp`` methods) -> for
R = 1..rounds: pseudo-labels (``label``, step a of section 4.1) then the network update
(``finetune``, step b). Each step writes ``DONE`` last and is skipped when it exists, so
rerunning after an interruption resumes after the last finished step and never redoes
finished work; a step interrupted mid-way resumes from its own checkpoints or caches.
"""

from __future__ import annotations

from pathlib import Path

from cbst_tf import progress
from cbst_tf.config import Config, derive
from cbst_tf.errors import CbstError
from cbst_tf.io import atomic_write_json, read_json
from cbst_tf.layout import RunLayout, priors_file, weights_before_round
from cbst_tf.runs import is_done, step


def _require_source_model(cfg: Config) -> None:
    """``selftrain.source_weights`` names another experiment's model: say which one trains it."""
    path = cfg.selftrain.source_weights
    if not path or Path(path).is_file():
        return
    stem = cfg.name.removesuffix(f"_{cfg.selftrain.method}")
    guess = Path("experiments") / f"{stem}_source_only.yaml"
    how = f"cbst-tf pretrain --config {guess}" if guess.is_file() else "cbst-tf pretrain and its experiment"
    raise CbstError(f"{path}: source model not found (selftrain.source_weights); train it first: {how}")


def run_selftrain(cfg: Config) -> Path:
    """Run (or resume) the whole experiment; returns the final model's weights file."""
    _require_source_model(cfg)
    layout = RunLayout.of(cfg)
    # The run directory's own config.yaml; each step below has its own lifecycle (and DONE).
    with step(cfg, layout.root, "selftrain", resumable=False, lock=False):
        return _rounds(cfg, layout)


def run_method(cfg: Config, workdir: Path, method: str, source: Path, changes: dict | None = None,
               where: str = "derived config") -> Path:
    """Self-train ``method`` from the ``source`` model into its own run directory ``workdir``, with
    ``cfg``'s settings and ``changes`` (``{"a.b": value}``): the rows of the demo and of crossval's
    folds. The config is built by :func:`~cbst_tf.config.derive`, so it passes the checks a file would."""
    mcfg = derive(cfg, {"runtime.workdir": str(workdir), "selftrain.method": method,
                        "selftrain.source_weights": str(source), **(changes or {})}, where)
    return run_selftrain(mcfg)


def _rounds(cfg: Config, layout: RunLayout) -> Path:
    from cbst_tf.train.steps import run_finetune, run_pretrain

    method = cfg.selftrain.method
    if not cfg.selftrain.source_weights:
        run_pretrain(cfg)
    if method.endswith("_sp") and not priors_file(cfg).is_file():
        from cbst_tf.selftrain.priors_step import run_priors

        run_priors(cfg)
    rounds = 0 if method == "source_only" else cfg.selftrain.rounds
    summary = []
    for r in range(1, rounds + 1):
        if not is_done(layout.label(r)):
            from cbst_tf.selftrain.label_step import run_label

            run_label(cfg, r)
        if not is_done(layout.finetune(r)):
            run_finetune(cfg, r)
        stats = read_json(layout.stats(r))
        summary.append({k: stats[k] for k in ("round", "portion", "thresholds", "predicted_pixels",
                                              "selected_pixels", "rare_classes", "pseudo_label_quality")
                        if k in stats})
        progress.log(f"round {r}/{rounds} done")
    final = weights_before_round(cfg, rounds + 1)
    atomic_write_json(layout.selftrain_summary, {"method": method, "rounds": summary, "final_weights": str(final)})
    return final
