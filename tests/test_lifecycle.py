"""One step lifecycle (cbst_tf.runs.step) and one run layout (cbst_tf.layout.RunLayout).

Issue 16's bugs: a DONE pretrain returned before the runtime was set up, and the label step
never set it up, so a resumed selftrain or a standalone `cbst-tf label` labelled without the
configured precision policy, op determinism and seed. And typed CLI values were re-parsed as
YAML (`--workdir 2024` was the number 2024).
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import keras
import numpy as np
import pytest
from badcase import reset_debug, run  # noqa: F401 - reset_debug is an autouse fixture

from cbst_tf.config import load_config, save_resolved
from cbst_tf.layout import RunLayout


@pytest.fixture
def policy():
    """Leave the process's global precision policy as it was found."""
    before = keras.mixed_precision.global_policy().name
    yield
    keras.mixed_precision.set_global_policy(before)


def test_run_layout_spells_every_path_once(tmp_path):
    layout = RunLayout(tmp_path)
    assert layout.final(layout.pretrain) == tmp_path / "pretrain" / "final.weights.h5"
    assert layout.priors_file == tmp_path / "priors" / "priors.npy"
    assert layout.pseudo(3) == tmp_path / "round_3" / "label" / "pseudo"
    assert layout.stats(3) == tmp_path / "round_3" / "label" / "stats.json"
    assert layout.final(layout.finetune(2)) == tmp_path / "round_2" / "finetune" / "final.weights.h5"
    assert layout.eval("round_2") == tmp_path / "eval" / "round_2"
    for r in (10, 2):
        layout.finetune(r).mkdir(parents=True)
        layout.final(layout.finetune(r)).write_bytes(b"x")
    (tmp_path / "round_x" / "finetune").mkdir(parents=True)
    (tmp_path / "round_x" / "finetune" / "final.weights.h5").write_bytes(b"x")
    assert [r for r, _ in layout.finetuned_rounds()] == [2, 10]  # numeric order, junk ignored
    assert not (tmp_path / "pretrain").exists()  # the layout creates nothing


def test_done_pretrain_still_applies_the_runtime(tmp_path, policy):
    """Before issue 16, run_pretrain returned before runtime.setup when DONE."""
    from cbst_tf.train.steps import run_pretrain

    cfg = load_config(None, [f"runtime.workdir={tmp_path}", "runtime.precision=float32", "runtime.seed=7"])
    pre = RunLayout.of(cfg).pretrain
    pre.mkdir()
    save_resolved(cfg, pre)
    (pre / "DONE").write_text("steps=4\n")
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    np.random.seed(123)
    assert run_pretrain(cfg) == pre / "final.weights.h5"
    assert keras.mixed_precision.global_policy().name == "float32"
    assert np.random.rand() == np.random.RandomState(7).rand()  # seeded like an uninterrupted run


def test_label_applies_the_runtime(tmp_path, policy):
    """Before issue 16, run_label never called runtime.setup: it checked its inputs under
    whatever policy the process had."""
    from cbst_tf.errors import CbstError
    from cbst_tf.selftrain.label_step import run_label

    cfg = load_config(None, [f"runtime.workdir={tmp_path}", "runtime.precision=mixed_bfloat16",
                             "selftrain.method=cbst"])
    keras.mixed_precision.set_global_policy("float32")
    with pytest.raises(CbstError):  # no model, no target: fails, but after the setup
        run_label(cfg, 1)
    assert keras.mixed_precision.global_policy().name == "mixed_bfloat16"


@pytest.mark.parametrize("workdir", ["2024", "on", "null", "[1]"])
def test_cli_workdir_is_a_path_whatever_it_looks_like(tmp_path, monkeypatch, workdir):
    """Typed CLI values are assigned, not re-parsed as YAML (`--workdir 2024` was an int)."""
    monkeypatch.chdir(tmp_path)
    code, out = run("pretrain", "--workdir", workdir)
    assert code == 1, out
    assert out.strip() == "error: data.source: no source TFRecord directory configured"


def test_cli_typed_flags_reach_the_config(tmp_path):
    """--scales/--flip/--save-predictions/--split are typed values; a bad one still names its flag."""
    code, out = run("evaluate", "--split", "7", "--scales", "0.5, 1", "--no-flip", "--save-predictions", "all",
                    "--weights", tmp_path / "missing.weights.h5")
    assert code == 1 and "missing.weights.h5: weights file not found" in out, out
    code, out = run("evaluate", "--scales", "0.5,x")
    assert code == 2 and out.strip().startswith("error: --scales: key 'eval.scales[1]' expects float"), out


def _examples(path: Path) -> list[dict]:
    import tensorflow as tf

    out = []
    for record in tf.data.TFRecordDataset(str(path)).as_numpy_iterator():
        example = tf.train.Example.FromString(record)
        out.append({k: v.SerializeToString(deterministic=True) for k, v in example.features.feature.items()})
    return out


TINY = """
from cbst_tf.config import load_config
from cbst_tf.train.steps import run_pretrain
from cbst_tf.selftrain.label_step import run_label
cfg = load_config(None, {sets!r})
run_pretrain(cfg)
if {label}:
    run_label(cfg, 1)
"""


def _process(sets: list[str], label: bool) -> None:
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    code = textwrap.dedent(TINY.format(sets=sets, label=label))
    subprocess.run([sys.executable, "-c", code], check=True, env=env, timeout=900, capture_output=True)


@pytest.mark.slow
def test_resumed_label_is_bit_identical_to_an_uninterrupted_run(tmp_path):
    """pretrain + label in one process == pretrain in one process, then (pretrain DONE) label
    in a fresh one: the same pseudo-label TFRecords, histograms, thresholds and stats, bit for
    bit. Run under mixed_bfloat16, so a label step without the configured policy labels
    differently (it did before issue 16)."""
    from layouts import write_cityscapes

    from cbst_tf.data.convert import convert_dataset

    data = {}
    for name, seed in (("source", 1), ("target", 2)):
        write_cityscapes(tmp_path / "raw" / name, split="train", n=4, size=(24, 40), seed=seed)
        data[name] = tmp_path / name
        convert_dataset(fmt="cityscapes", root=tmp_path / "raw" / name, out=data[name], split="train", shards=1,
                        skip_bad=False, workers=1, command="test")

    def sets(workdir: Path) -> list[str]:
        return [f"runtime.workdir={workdir}", f"data.source={data['source']}", f"data.target={data['target']}",
                "model.width=0.0625", "model.dropout=0.0", "data.crop_size=[16,16]", "data.parallel_calls=1",
                "data.cycle_length=1", "data.shuffle_buffer=4", "train.global_batch_size=2", "train.steps=2",
                "train.checkpoint_every=2", "runtime.precision=mixed_bfloat16", "runtime.deterministic=true",
                "runtime.strategy=default", "selftrain.method=cbst"]

    _process(sets(tmp_path / "once"), label=True)
    _process(sets(tmp_path / "resumed"), label=False)
    _process(sets(tmp_path / "resumed"), label=True)  # pretrain DONE: skipped, then label
    a, b = RunLayout(tmp_path / "once").label(1), RunLayout(tmp_path / "resumed").label(1)
    files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file() and p.name not in ("config.yaml",))
    assert [p for p in files if p.suffix == ".tfrecord"] and (a / "stats.json").is_file()
    assert files == sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file() and p.name != "config.yaml")
    for rel in files:
        if rel.suffix == ".npz":  # zip entries carry their write time: compare the arrays
            with np.load(a / rel) as left, np.load(b / rel) as right:
                assert sorted(left.files) == sorted(right.files)
                for key in left.files:
                    np.testing.assert_array_equal(left[key], right[key], err_msg=f"{rel}:{key}")
            continue
        if rel.suffix == ".tfrecord":  # protobuf map order is not fixed: compare the parsed examples
            assert _examples(a / rel) == _examples(b / rel), rel
            continue
        left, right = (a / rel).read_bytes(), (b / rel).read_bytes()
        if rel.name in ("stats.json", "DONE", "manifest.json"):  # they name their own run directory
            left = left.replace(str(tmp_path / "once").encode(), b"RUN")
            right = right.replace(str(tmp_path / "resumed").encode(), b"RUN")
        assert left == right, rel
