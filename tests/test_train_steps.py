"""pretrain / finetune steps on tiny TFRecord datasets with the real FCN-8s at a tiny width."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from killing import kill_at_checkpoint

from cbst_tf.config import load_config
from cbst_tf.data.writer import DatasetWriter
from cbst_tf.errors import CbstError
from cbst_tf.train import steps


def _write(directory: Path, n: int, seed: int, labelled: bool = True, prefix: str = "img") -> Path:
    rng = np.random.default_rng(seed)
    with DatasetWriter(directory, num_items=n, shards=2, name=directory.name, fmt="test") as w:
        for i in range(n):
            image = rng.integers(0, 256, (24, 40, 3), dtype=np.uint8)
            label = (image[..., 0] // 64).astype(np.uint8) if labelled else None
            if label is not None:
                label[:2] = 255
            w.add(i, cv2.imencode(".png", image)[1].tobytes(), "png", 24, 40, f"{prefix}/{i:03d}.png", label)
        w.close()
    return directory


def _overrides(tmp_path: Path, source: Path, **extra) -> list[str]:
    sets = {"data.source": str(source), "data.num_classes": 4, "data.crop_size": [16, 16],
            "data.shuffle_buffer": 8, "data.parallel_calls": 1, "data.cycle_length": 1,
            "model.width": 0.03, "model.dropout": 0.0, "train.global_batch_size": 2, "train.steps": 4,
            "train.checkpoint_every": 2, "train.lr": 0.01, "train.classifier_lr_mult": 10.0,
            "runtime.workdir": str(tmp_path / "run"), "runtime.strategy": "default",
            "selftrain.epochs_per_round": 1.0, "selftrain.source_portion_start": 0.25,
            "selftrain.source_portion_step": 0.25, "selftrain.source_portion_max": 0.5}
    sets.update(extra)
    return [f"{k}={json.dumps(v)}" for k, v in sets.items()]


def test_source_subsets_are_nested_and_sized():
    cfg = load_config(None, ["runtime.seed=5"])
    ids = [f"s/{i:04d}" for i in range(1000)]
    rounds = [steps.source_subset(ids, r, cfg) for r in range(1, 16)]
    sizes = [len(s) for s in rounds]
    assert sizes[:3] == [30, 32, 35] and max(sizes) == 60 and sizes[-1] == 60
    for a, b in zip(rounds, rounds[1:], strict=False):
        assert b[: len(a)] == a
    assert rounds[0] != sorted(ids)[:30]  # a random subset, not the first ids


def test_source_portion_of_target_holds_the_ratio():
    """``source_portion_of: target``: 0.25 of 600 target images = 150 source images per round 1,
    whatever the source size; capped at every source image; nested like the official mode."""
    cfg = load_config(None, ["runtime.seed=5", "selftrain.source_portion_of=target",
                             "selftrain.source_portion_start=0.25", "selftrain.source_portion_step=0.021",
                             "selftrain.source_portion_max=0.5"])
    ids = [f"s/{i:04d}" for i in range(1000)]
    rounds = [steps.source_subset(ids, r, cfg, n_target=600) for r in (1, 2, 3, 20)]
    assert [len(s) for s in rounds] == [150, 162, 175, 300]
    assert rounds[1][:150] == rounds[0]
    assert len(steps.source_subset(ids[:100], 1, cfg, n_target=600)) == 100
    official = load_config(None, ["runtime.seed=5"])
    assert len(steps.source_subset(ids, 1, official, n_target=600)) == 30  # 3% of the source


def test_pretrain_then_finetune(tmp_path):
    source = _write(tmp_path / "src", 8, 0)
    cfg = load_config(None, _overrides(tmp_path, source))
    final = steps.run_pretrain(cfg)
    pre = final.parent
    assert final.is_file() and (pre / "config.yaml").is_file() and (pre / "DONE").read_text().startswith("steps=4")
    assert sorted(p.name for p in (pre / "ckpt").glob("*.index")) == ["ckpt-2.index", "ckpt-4.index"]
    assert list((pre / "tb").iterdir())
    stamp = final.stat().st_mtime_ns
    assert steps.run_pretrain(cfg) == final and final.stat().st_mtime_ns == stamp  # DONE: skipped

    with pytest.raises(CbstError, match=r"round_1/label/pseudo/manifest.json"):
        steps.run_finetune(cfg, 1)
    with pytest.raises(CbstError, match=r"round_1/finetune/final.weights.h5"):
        steps.run_finetune(cfg, 2)

    label = tmp_path / "run" / "round_1" / "label"
    _write(label / "pseudo", 6, 1, prefix="tgt")
    (label / "stats.json").write_text(json.dumps({"rare_classes": [3]}))
    plan = steps.finetune_plan(cfg, 1)
    assert len(plan["subset"]) == 2 and plan["n_target"] == 6 and plan["rare"] == [3]
    assert plan["steps"] == math.ceil(1.0 * (6 + 2) / 2)
    out = steps.run_finetune(cfg, 1)
    assert out == tmp_path / "run" / "round_1" / "finetune" / "final.weights.h5" and out.is_file()
    assert (out.parent / "DONE").read_text().startswith("steps=4")

    from cbst_tf.models import build_from_config
    a, b = build_from_config(cfg), build_from_config(cfg)
    a.load_weights(str(final))
    b.load_weights(str(out))
    assert any(not np.allclose(x, y) for x, y in zip(a.get_weights(), b.get_weights(), strict=True))


def test_bad_rare_classes_is_one_line_error(tmp_path):
    source = _write(tmp_path / "src", 4, 0)
    cfg = load_config(None, _overrides(tmp_path, source))
    (tmp_path / "run" / "pretrain").mkdir(parents=True)
    (tmp_path / "run" / "pretrain" / "final.weights.h5").write_bytes(b"x")
    label = tmp_path / "run" / "round_1" / "label"
    _write(label / "pseudo", 2, 1)
    (label / "stats.json").write_text(json.dumps({"rare_classes": ["car"]}))
    with pytest.raises(CbstError, match=r"stats.json: key 'rare_classes'"):
        steps.finetune_plan(cfg, 1)


@pytest.mark.slow
@pytest.mark.timeout(1200)  # starts/kills processes: a hang fails sooner
def test_cli_pretrain_sigkill_and_rerun_matches_uninterrupted(tmp_path):
    source = _write(tmp_path / "src", 8, 0)
    exe = Path(sys.executable).with_name("cbst-tf")
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")

    def cmd(workdir):
        sets = _overrides(tmp_path, source, **{"train.steps": 40, "train.checkpoint_every": 4,
                                               "data.crop_size": [32, 32], "runtime.deterministic": True})
        sets = [s for s in sets if not s.startswith("runtime.workdir")]
        return [str(exe), "--no-progress", "pretrain", "--workdir", str(workdir)] + \
            [a for s in sets for a in ("--set", s)]

    full = subprocess.run(cmd(tmp_path / "full"), env=env, capture_output=True, text=True, timeout=300)
    assert full.returncode == 0, full.stderr[-3000:]
    run = tmp_path / "killed"
    kill_at_checkpoint(cmd(run), env, run / "pretrain" / "ckpt" / "checkpoint", "ckpt-8", timeout=240)
    assert not (run / "pretrain" / "DONE").exists() and not (run / "pretrain" / "final.weights.h5").exists()
    again = subprocess.run(cmd(run), env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "resuming at step" in again.stderr
    assert (run / "pretrain" / "DONE").read_text().split()[0] == "steps=40"
    from cbst_tf.models import build_from_config
    cfg = load_config(None, _overrides(tmp_path, source))
    a, b = build_from_config(cfg), build_from_config(cfg)
    a.load_weights(str(tmp_path / "full" / "pretrain" / "final.weights.h5"))
    b.load_weights(str(run / "pretrain" / "final.weights.h5"))
    for x, y in zip(a.get_weights(), b.get_weights(), strict=True):
        np.testing.assert_array_equal(x, y)
