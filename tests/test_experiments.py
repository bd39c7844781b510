"""Every experiment YAML: it loads, its first line is the command that runs it, it holds the
paper's hyper-parameters (appendix A) for its setting, the experiments it depends on exist,
and its network builds.

The first-line command is run through the real CLI with the library entry point replaced
by a recorder, so the command parses, loads this very file and reaches the right function.
"""

from __future__ import annotations

import copy
import importlib
import re
import shlex
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from cbst_tf import cli
from cbst_tf.config import Config, load_config

ROOT = Path(__file__).resolve().parents[1]
EXPERIMENTS = sorted((ROOT / "experiments").glob("*.yaml"))
BASES = sorted((ROOT / "experiments" / "base").glob("*.yaml"))
IDS = [p.stem for p in EXPERIMENTS]
METHODS = ("source_only", "st_sp", "st", "cbst_sp", "cbst")  # longest suffix first
# CRST experiments: <setting>_crst_<regularizer>[_sp] regularise cbst[_sp] (docs/CRST.md).
CRST_NAME = re.compile(r"_crst_(mrkld|mrent|mrl2|lrent)(_sp)?$")
# cli command -> the library function it must reach (cbst_tf/cli/__init__.py)
ENTRY = {"selftrain": ("cbst_tf.selftrain.driver", "run_selftrain"),
         "pretrain": ("cbst_tf.train.steps", "run_pretrain"),
         "evaluate": ("cbst_tf.evaluate.run", "run_evaluate"),
         "crossval": ("cbst_tf.crossval", "run_crossval")}

# Appendix A, per backbone.
PAPER_MODEL = {
    "fcn8s_vgg16": {"train.lr": 1e-6, "train.global_batch_size": 1, "data.crop_size": [500, 500],
                    "model.weights": "imagenet", "model.width": 1.0},
    "resnet38": {"train.lr": 1e-4, "train.global_batch_size": 2, "data.crop_size": [500, 500],
                 "data.scale_range": [0.7, 1.3], "data.flip": True, "model.freeze_bn": True,
                 "model.weights": None, "model.width": 1.0,
                 # official CBST normalisation and BN epsilon (what imported .params expect)
                 "data.image_mean": [123.675, 116.28, 103.53], "model.bn_epsilon": 1.001e-5},
}
# Appendix A, all settings (and section 4.4's 70x70 prior kernel).
PAPER_SCHEDULE = {"selftrain.rounds": 3, "selftrain.epochs_per_round": 2.0, "selftrain.portion_start": 0.2,
                  "selftrain.portion_step": 0.05, "selftrain.portion_max": 0.5, "train.momentum": 0.9,
                  "train.weight_decay": 5e-4}


def get(cfg: Config, key: str):
    obj = cfg
    for part in key.split("."):
        obj = getattr(obj, part)
    return obj


def first_line(path: Path) -> str:
    return path.read_text().splitlines()[0]


def run_first_line(path: Path, monkeypatch) -> dict:
    """Run the file's first-line command through the CLI; return what the library got."""
    line = first_line(path)
    assert line.startswith("# cbst-tf "), f"{path.name}: first line must be '# cbst-tf ...', got {line!r}"
    argv = shlex.split(line[len("# cbst-tf "):])
    calls = []
    for module, name in ENTRY.values():  # what each command's own import will find
        def record(cfg, module=module, name=name, **kwargs):
            calls.append({"module": module, "name": name, "cfg": cfg, "kwargs": kwargs})

        monkeypatch.setattr(importlib.import_module(module), name, record)
    monkeypatch.chdir(ROOT)
    result = CliRunner().invoke(cli.app, argv)
    assert result.exit_code == 0, f"{path.name}: `cbst-tf {' '.join(argv)}` failed: {result.output}"
    assert len(calls) == 1
    return {"argv": argv, **calls[0]}


@pytest.fixture(scope="module")
def loaded() -> dict[str, Config]:
    return {p.stem: load_config(p) for p in EXPERIMENTS}


def command_of(path: Path) -> list[str]:
    return shlex.split(first_line(path)[len("# cbst-tf "):])


def is_paper(cfg: Config) -> bool:
    return cfg.data.source.startswith("/data/")


# ----------------------------------------------------------------------------- loading


def test_there_are_experiments_and_bases():
    assert len(EXPERIMENTS) >= 20 and len(BASES) >= 3


@pytest.mark.parametrize("path", EXPERIMENTS + BASES, ids=lambda p: p.relative_to(ROOT / "experiments").as_posix())
def test_every_yaml_loads(path):
    """Base files are partial experiments, but every key in them must be valid too."""
    cfg = load_config(path)
    assert isinstance(cfg, Config)


@pytest.mark.parametrize("path", EXPERIMENTS, ids=IDS)
def test_first_line_runs_this_file(path, monkeypatch):
    call = run_first_line(path, monkeypatch)
    argv = call["argv"]
    assert argv[0] in ENTRY, f"{path.name}: unexpected command {argv[0]!r}"
    assert (call["module"], call["name"]) == ENTRY[argv[0]]
    config = argv[argv.index("--config") + 1]
    assert (ROOT / config).resolve() == path.resolve(), f"{path.name}: first line runs {config}"
    assert call["cfg"] == load_config(path), f"{path.name}: the CLI resolved a different config"
    lines = path.read_text().splitlines()
    assert len(lines) > 1 and lines[1].startswith("# "), f"{path.name}: no comment on what it reproduces"


@pytest.mark.parametrize("path", EXPERIMENTS, ids=IDS)
def test_name_workdir_and_method(path, loaded):
    cfg = loaded[path.stem]
    assert cfg.name == path.stem
    argv = command_of(path)
    if argv[0] in ("selftrain", "pretrain"):
        assert Path(cfg.runtime.workdir).name == path.stem, cfg.runtime.workdir
        crst = CRST_NAME.search(path.stem)
        if crst:
            method, regularizer = ("cbst_sp" if crst.group(2) else "cbst"), crst.group(1)
        else:
            method, regularizer = next(m for m in METHODS if path.stem.endswith("_" + m)), "none"
        assert (cfg.selftrain.method, cfg.selftrain.regularizer) == (method, regularizer)


@pytest.mark.parametrize("path", EXPERIMENTS, ids=IDS)
def test_data_and_run_paths_follow_the_convention(path, loaded):
    cfg = loaded[path.stem]
    if is_paper(cfg):
        for key in ("data.source", "data.target_eval"):
            assert re.fullmatch(r"/data/[a-z0-9]+/tfrecords/\S+", get(cfg, key)), (key, get(cfg, key))
        assert cfg.runtime.workdir.startswith("/runs/")
    else:  # the synthetic benchmark runs from the repository root
        for key in ("data.source", "data.target_eval"):
            assert get(cfg, key).startswith("data/synth/tfrecords/"), (key, get(cfg, key))
        assert cfg.runtime.workdir.startswith("runs/")


# ----------------------------------------------------------------------------- the paper's settings


@pytest.mark.parametrize("path", [p for p in EXPERIMENTS if not p.stem.startswith("synthetic")],
                         ids=[p.stem for p in EXPERIMENTS if not p.stem.startswith("synthetic")])
def test_paper_hyper_parameters(path, loaded):
    cfg = loaded[path.stem]
    assert is_paper(cfg)
    expected = {**PAPER_SCHEDULE, **PAPER_MODEL[cfg.model.name]}
    for key, value in expected.items():
        got = get(cfg, key)
        ok = got == pytest.approx(value) if isinstance(value, float) else got == value
        assert ok, f"{path.name}: {key} = {got!r}, paper: {value!r}"
    # Section 4.4's 70x70 kernel, given in source-image pixels.
    assert cfg.selftrain.prior_kernel == 70
    assert cfg.data.num_classes == 19


@pytest.mark.parametrize("path", EXPERIMENTS, ids=IDS)
def test_protocol_matches_the_setting(path, loaded):
    cfg = loaded[path.stem]
    stem = path.stem
    if "nthu" in stem:
        expected = "nthu13"
    elif stem.startswith("synthia"):
        expected = "synthia13" if stem.endswith("_synthia13") else "synthia16"
    else:
        expected = "cityscapes19"
    assert cfg.eval.protocol == expected


def test_every_paper_setting_is_covered(loaded):
    """The rows of Tables 1-4 (and the synthetic ablation) each have an experiment."""
    def dataset(directory: str) -> str:
        """/data/<name>/tfrecords/... -> name; data/synth/tfrecords/<name>/... -> synth-<name>."""
        match = re.fullmatch(r"(?:/data/(\w+)|data/synth)/tfrecords/(\w+).*", directory)
        assert match, directory
        return match.group(1) or f"synth-{match.group(2)}"

    have = {(dataset(c.data.source), dataset(c.data.target_eval), c.model.name, c.selftrain.method)
            for c in loaded.values()}
    want = set()
    for model in ("fcn8s_vgg16", "resnet38"):
        want |= {("gta5", "cityscapes", model, m) for m in ("source_only", "st", "cbst", "cbst_sp")}
        want |= {("synthia", "cityscapes", model, m) for m in ("source_only", "st", "cbst")}
    want |= {("gta5", "bdd", "resnet38", m) for m in ("source_only", "st", "st_sp", "cbst", "cbst_sp")}
    want |= {("synth-gta5", "synth-cityscapes", "fcn8s_vgg16", m) for m in ("source_only", "st", "st_sp", "cbst", "cbst_sp")}
    assert want <= have, sorted(want - have)
    cities = {command_of(p)[command_of(p).index("--city") + 1]
              for p in EXPERIMENTS if command_of(p)[0] == "crossval" and is_paper(loaded[p.stem])}
    assert cities == {"Rome", "Rio", "Tokyo", "Taipei"}
    mst = [c for c in loaded.values() if c.eval.scales == [0.5, 0.75, 1.0] and c.selftrain.method == "cbst_sp"]
    assert mst, "no CBST-SP+MST evaluation (Table 3)"
    crst = {(dataset(c.data.source), c.selftrain.method, c.selftrain.regularizer) for c in loaded.values()}
    assert {(d, "cbst_sp", r) for d in ("gta5", "synthia") for r in ("mrkld", "lrent")} <= crst  # CRST (issue 30)


@pytest.mark.parametrize("path", [p for p in EXPERIMENTS if CRST_NAME.search(p.stem)],
                         ids=[p.stem for p in EXPERIMENTS if CRST_NAME.search(p.stem)])
def test_crst_experiments_are_their_cbst_twin_plus_the_official_weight(path, loaded):
    """A CRST row differs from the CBST row it regularises only in the regulariser (official weights)."""
    cfg = loaded[path.stem]
    assert (cfg.selftrain.mr_weight, cfg.selftrain.lr_weight) == (0.1, 0.25)  # mrkld.sh, lrent.sh
    twin = copy.deepcopy(cfg)
    twin.selftrain.regularizer = "none"
    ours = {k: v for k, v in _flat(twin).items() if k not in ("name", "runtime.workdir")}
    cbst = [c for c in loaded.values() if c.selftrain.regularizer == "none" and c.selftrain.method in
            ("cbst", "cbst_sp") and (c.data.source, c.data.target, c.data.target_eval, c.model.name) ==
            (cfg.data.source, cfg.data.target, cfg.data.target_eval, cfg.model.name)
            and command_of(ROOT / "experiments" / f"{c.name}.yaml")[0] == "selftrain"]
    assert cbst, f"{path.name}: no CBST experiment on the same data and network"
    for other in cbst:
        theirs = {k: v for k, v in _flat(other).items() if k not in ("name", "runtime.workdir")}
        diff = {k for k in ours if ours[k] != theirs.get(k)}
        assert diff <= {"selftrain.method"}, f"{path.name} differs from {other.name} in {sorted(diff)}"


def _flat(cfg: Config) -> dict:
    from cbst_tf.config import to_dict

    out = {}

    def walk(tree, prefix=""):
        for key, value in tree.items():
            if isinstance(value, dict):
                walk(value, f"{prefix}{key}.")
            else:
                out[f"{prefix}{key}"] = value

    walk(to_dict(cfg))
    return out


@pytest.mark.parametrize("path", [p for p in EXPERIMENTS if command_of(p)[0] == "crossval"],
                         ids=[p.stem for p in EXPERIMENTS if command_of(p)[0] == "crossval"])
def test_crossval_reads_the_city_it_names(path, loaded):
    cfg = loaded[path.stem]
    argv = command_of(path)
    city = argv[argv.index("--city") + 1]
    test_dir = cfg.data.target_eval.format(city=city)
    assert f"/{city}/" in test_dir + "/", (city, test_dir)
    assert cfg.eval.protocol == "nthu13"
    if is_paper(cfg):
        assert cfg.model.name == "resnet38"  # Table 1 reports ResNet-38


# ----------------------------------------------------------------------------- dependencies


def _trained_here(loaded) -> dict[str, Config]:
    """Experiments that train models into their own workdir (selftrain/pretrain commands)."""
    return {p.stem: loaded[p.stem] for p in EXPERIMENTS if command_of(p)[0] in ("selftrain", "pretrain")}


@pytest.mark.parametrize("path", EXPERIMENTS, ids=IDS)
def test_source_weights_come_from_a_source_only_experiment(path, loaded):
    cfg = loaded[path.stem]
    if not cfg.selftrain.source_weights:
        return
    if cfg.selftrain.source_weights.startswith("/models/"):
        # A released official model, converted by `cbst-tf weights import-mxnet` (README):
        # only the evaluation of such a model may start from one, with the official settings.
        assert command_of(path)[0] == "evaluate" and cfg.model.name == "resnet38"
        assert (cfg.eval.upsample, cfg.eval.long_side, cfg.eval.flip) == ("bicubic_probs", 2048, True)
        return
    producers = [c for c in _trained_here(loaded).values() if c.selftrain.method == "source_only"
                 and not c.selftrain.source_weights
                 and str(Path(c.runtime.workdir) / "pretrain" / "final.weights.h5") == cfg.selftrain.source_weights]
    assert len(producers) == 1, f"{path.name}: no source_only experiment writes {cfg.selftrain.source_weights}"
    src = producers[0]
    # The same network on the same labelled source data.
    for key in ("model.name", "model.width", "model.freeze_bn", "data.num_classes", "data.source",
                "data.image_mean"):
        assert get(src, key) == get(cfg, key), f"{path.name}: {key} differs from {src.name}"


@pytest.mark.parametrize("path", [p for p in EXPERIMENTS if command_of(p)[0] == "evaluate"],
                         ids=[p.stem for p in EXPERIMENTS if command_of(p)[0] == "evaluate"])
def test_evaluations_score_a_model_another_experiment_trains(path, loaded):
    cfg = loaded[path.stem]
    trained = _trained_here(loaded)
    same_workdir = [c for c in trained.values() if c.runtime.workdir == cfg.runtime.workdir]
    if same_workdir:  # a variant of a trained experiment: same network, same data
        (parent,) = same_workdir
        for key in ("model.name", "model.width", "data.source", "data.target_eval", "selftrain.method"):
            assert get(parent, key) == get(cfg, key), key
        argv = command_of(path)
        assert "--out" in argv, f"{path.name}: would overwrite {parent.name}'s eval/ outputs"
        assert Path(argv[argv.index("--out") + 1]).parent == Path(cfg.runtime.workdir)
    else:  # a source model scored on another target
        assert cfg.selftrain.method == "source_only" and cfg.selftrain.source_weights


# ----------------------------------------------------------------------------- the networks

_BUILT: dict[tuple, tuple] = {}


@pytest.mark.parametrize("path", EXPERIMENTS, ids=IDS)
def test_experiment_model_builds(path, loaded):
    """Each experiment's network at a tiny width (weights not loaded), 32x48 -> 32x48 logits.
    Identical model sections are built once."""
    from cbst_tf.models import build_from_config

    cfg = copy.deepcopy(loaded[path.stem])
    cfg.model.width = 0.0625
    cfg.model.weights = None
    key = (cfg.model.name, cfg.model.dropout, cfg.model.freeze_bn, cfg.data.num_classes, tuple(cfg.data.image_mean))
    if key not in _BUILT:
        model = build_from_config(cfg)
        out = model(np.full((1, 32, 48, 3), 128.0, np.float32), training=False)
        _BUILT[key] = (tuple(out.shape), str(out.dtype.name if hasattr(out.dtype, "name") else out.dtype),
                       bool(np.isfinite(np.asarray(out)).all()))
    shape, dtype, finite = _BUILT[key]
    assert shape == (1, 32, 48, cfg.data.num_classes)
    assert dtype == "float32" and finite
