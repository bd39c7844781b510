"""Inputs that used to be accepted silently or blamed on the wrong place: NaN/inf numbers, an
empty workdir, errors caused by --set or a CLI flag, a missing base: file, a hand-edited
manifest.json, label ids a format does not define, rerunning a DONE step with another config."""

from __future__ import annotations

import json

import layouts
import numpy as np
import pytest
from badcase import check, reset_debug, run  # noqa: F401 - reset_debug: autouse fixture
from PIL import Image


def test_nan_and_inf_are_rejected_wherever_a_number_is_expected(tmp_path):
    check("set-lr-nan", *run("config", "show", "--set", "train.lr=nan"))
    check("set-portion-inf", *run("config", "show", "--set", "selftrain.portion_step=.inf"))
    check("min-miou-nan", *run("evaluate", "--min-miou", "nan", "--weights", tmp_path / "w.weights.h5"))
    exp = tmp_path / "exp.yaml"
    exp.write_text("train:\n  momentum: .nan\n")
    check("yaml-nan", *run("config", "show", "-c", exp), tmp_path)


def test_empty_workdir_is_rejected():
    check("workdir-empty", *run("config", "show", "--set", "runtime.workdir="))
    assert run("config", "show", "--set", "runtime.workdir=.")[0] == 0


def test_errors_name_the_set_or_flag_that_caused_them(tmp_path):
    exp = tmp_path / "exp.yaml"
    exp.write_text("data:\n  crop_size: [64, 64]\n")
    check("set-blamed-not-yaml", *run("config", "show", "-c", exp, "--set", "data.crop_size=[0,0]"), tmp_path)
    exp.write_text("data:\n  crop_size: [0, 64]\n")
    check("yaml-blamed", *run("config", "show", "-c", exp), tmp_path)
    check("flag-save-predictions", *run("evaluate", "-c", exp, "--save-predictions", "lots"), tmp_path)
    check("flag-scales", *run("evaluate", "--scales", "0,1"), tmp_path)


def test_missing_base_names_the_file_that_refers_to_it(tmp_path):
    exp = tmp_path / "exp.yaml"
    exp.write_text("base: base/missing.yaml\n")
    check("base-missing", *run("config", "show", "-c", exp), tmp_path)


@pytest.mark.parametrize(("case", "key", "value"), [
    ("manifest-num-examples", "num_examples", 1000),
    ("manifest-num-classes-type", "num_classes", "nineteen"),
    ("manifest-labelled-type", "labelled", "yes"),
])
def test_edited_manifest_is_validated(tmp_path, case, key, value):
    layouts.write_gta5(tmp_path / "gta5", n=2)
    assert run("data", "convert", "-f", "gta5", "--root", tmp_path / "gta5", "--out", tmp_path / "o")[0] == 0
    path = tmp_path / "o" / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest[key] = value
    path.write_text(json.dumps(manifest))
    check(case, *run("pretrain", "--set", f"data.source={tmp_path / 'o'}", "--workdir", tmp_path / "run"), tmp_path)


def _junk_gta5(root):
    layouts.write_gta5(root, n=3)
    path = root / "labels" / "00002.png"
    with Image.open(path) as img:
        ids = np.array(img)
        palette = img.getpalette()
    ids[:2, :3] = 250  # 6 pixels of an id no Cityscapes label has
    out = Image.fromarray(ids, mode="P")
    out.putpalette(palette)
    out.save(path)


def test_label_ids_outside_the_format_are_reported_and_strict_refuses(tmp_path):
    _junk_gta5(tmp_path / "gta5")
    args = ["data", "convert", "-f", "gta5", "--root", tmp_path / "gta5", "--out", tmp_path / "o"]
    check("convert-unknown-label-ids", *run(*args), tmp_path)
    check("convert-unknown-label-ids-strict", *run(*args, "--out", tmp_path / "o2", "--strict"), tmp_path)
    assert not (tmp_path / "o2").exists()


def test_readme_synth_commands_write_what_the_synthetic_experiments_read():
    """A new user following the README's embedded-benchmark block must reach pretrain and selftrain."""
    import re
    import shlex
    from pathlib import Path

    from cbst_tf.config import load_config

    root = Path(__file__).resolve().parents[1]
    text = (root / "README.md").read_text()
    block = text.split("## The embedded benchmark", 1)[1].split("```bash", 1)[1].split("```", 1)[0]
    commands = [shlex.split(line.split("#")[0]) for line in block.strip().splitlines()]
    outs = {c[c.index("--out") + 1] for c in commands if c[1:3] == ["data", "convert"]}
    configs = [c[c.index("--config") + 1] for c in commands if "--config" in c]
    assert configs[0] == "experiments/synthetic_source_only.yaml" and commands[4][1] == "pretrain"
    for config in configs:
        cfg = load_config(root / config)
        assert {cfg.data.source, cfg.data.target, cfg.data.target_eval} <= outs, config
    source = load_config(root / configs[0])
    for path in sorted((root / "experiments").glob("synthetic_*.yaml")):
        cfg = load_config(path)
        if cfg.selftrain.source_weights:  # trained by synthetic_source_only
            assert cfg.selftrain.source_weights == f"{source.runtime.workdir}/pretrain/final.weights.h5"
            assert "synthetic_source_only.yaml" in path.read_text().splitlines()[1], path
    assert re.search(r"experiments/synthetic_\*\.yaml", text)


def test_synthetic_experiments_finetune_like_the_demo():
    """The default rounds destroy the source model (docs/RESEARCH_LOG.md); the demo's settings are used."""
    from pathlib import Path

    from cbst_tf.config import load_config

    root = Path(__file__).resolve().parents[1]
    demo = load_config(None, presets=(root / "cbst_tf" / "presets" / "demo.yaml",)).selftrain
    keys = ("lr", "schedule", "epochs_per_round", "source_portion_of", "source_portion_start",
            "source_portion_step", "source_portion_max")
    for path in sorted((root / "experiments").glob("synthetic_*.yaml")):
        st = load_config(path).selftrain
        assert {k: getattr(st, k) for k in keys} == {k: getattr(demo, k) for k in keys}, path


def test_tensorflow_start_up_noise_is_muted_unless_debug(tmp_path):
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    env = {k: v for k, v in os.environ.items() if not k.startswith("TF_CPP")}
    env["PYTHONPATH"] = str(root)
    args = [sys.executable, "-m", "cbst_tf.cli", "data", "convert", "-f", "gta5", "--root", str(tmp_path / "none"),
            "--out", str(tmp_path / "o")]
    proc = subprocess.run(args, capture_output=True, text=True, env=env, timeout=120)
    check("tf-noise", proc.returncode, proc.stdout + proc.stderr, tmp_path)
    assert (proc.stdout + proc.stderr).strip().count("\n") == 0, proc.stderr
    debug = subprocess.run(args[:3] + ["--debug"] + args[3:], capture_output=True, text=True, env=env, timeout=120)
    assert "Traceback" in debug.stderr


def test_selftrain_before_the_source_model_names_the_config_that_trains_it(tmp_path, monkeypatch):
    from pathlib import Path

    monkeypatch.chdir(Path(__file__).resolve().parents[1])  # a fresh clone: no runs/ yet
    missing = tmp_path / "runs" / "final.weights.h5"
    check("selftrain-no-source-model", *run("selftrain", "-c", "experiments/synthetic_cbst.yaml", "--set",
                                            f"selftrain.source_weights={missing}", "--workdir", tmp_path / "w"),
          tmp_path)
    assert not (tmp_path / "w").exists()
