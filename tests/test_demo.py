"""`cbst-tf demo --fast`: the whole pipeline end to end, its report, and reproducibility."""

from __future__ import annotations

import hashlib
import json
import math

import pytest
import yaml
from typer.testing import CliRunner

from cbst_tf import cli


@pytest.mark.slow
def test_fast_demo_writes_a_complete_reproducible_report(tmp_path):
    runner = CliRunner()
    result = runner.invoke(cli.app, ["--no-progress", "demo", "--fast", "--out", str(tmp_path / "a"), "--seed", "3"])
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "a" / "report.json").read_text())
    assert report["seed"] == 3 and report["fast"] is True
    assert report["wall_seconds"] > 0
    assert set(report["methods"]) == {"source_only", "st", "cbst", "cbst_sp"}  # --fast skips the oracle
    for name, method in report["methods"].items():
        assert isinstance(method["miou"], float) and math.isfinite(method["miou"]), name
        assert 0.0 <= method["miou"] <= 100.0
        assert len(method["iou"]) == 19
    md = (tmp_path / "a" / "report.md").read_text()
    for row in ("| Source only |", "| ST |", "| CBST |", "| CBST-SP |"):
        assert row in md
    for figure in ("selection_per_class.png", "pseudo_label_quality.png", "spatial_priors.png", "qualitative.png",
                   "adapted_model.png"):
        assert (tmp_path / "a" / figure).stat().st_size > 1000, figure
    # The adapted model in use: exported as a SavedModel, predict overlays of it and of the source model.
    use = report["use"]
    assert (tmp_path / "a" / "export" / "cbst_sp" / "1" / "saved_model.pb").is_file()
    assert use["saved_model"] == str(tmp_path / "a" / "export" / "cbst_sp" / "1")
    for method in ("source_only", "cbst_sp"):
        assert len(list((tmp_path / "a" / "use" / method / "overlay").rglob("*_overlay.png"))) == 3, method
    assert "## Use the adapted model" in md and "![adapted_model.png](adapted_model.png)" in md
    assert list(report["timings"])[-2:] == ["evaluate", "use"]
    # ST and CBST selection statistics behind the plot: CBST selects >= floor(p * N_c) of every class.
    stats = json.loads((tmp_path / "a" / "runs" / "cbst" / "round_1" / "label" / "stats.json").read_text())
    for sel, pred in zip(stats["selected_pixels"], stats["predicted_pixels"], strict=True):
        assert sel >= math.floor(0.2 * pred)

    # Pseudo-label precision/recall against the target-train labels, per method and round.
    quality = report["pseudo_label_quality"]
    assert set(quality) == {"st", "cbst", "cbst_sp"} and all(len(r) == 3 for r in quality.values())
    q = stats["pseudo_label_quality"]
    assert quality["cbst"][0] == q
    # Only pixels with a known label count (the ego vehicle is ignored): fewer than all selected.
    assert 0 < sum(q["correct"]) <= sum(q["selected"]) <= sum(stats["selected_pixels"])
    assert "Pseudo-label precision / recall" in md

    # The environment that produced the table, with the digests of the weights it compared.
    env = report["environment"]
    assert set(env["weights"]) == {"init", "source_only", "st", "cbst", "cbst_sp"}
    init_file = tmp_path / "a" / "runs" / "init" / "pretrain" / "final.weights.h5"
    assert env["weights"]["init"] == "sha256:" + hashlib.sha256(init_file.read_bytes()).hexdigest()[:16]
    assert f"oneDNN {'on' if env['onednn'] else 'off'}" in md and "Environment: tensorflow 2.21" in md

    # The stand-in init (synth.init_images) ran first on its own corpus and seed, and the
    # source model started from its weights.
    assert list(report["timings"])[:3] == ["data", "init", "pretrain"]
    init = tmp_path / "a" / "runs" / "init" / "pretrain" / "final.weights.h5"
    assert (init.parent / "DONE").read_text().startswith("steps=150")
    init_cfg = yaml.safe_load((init.parent / "config.yaml").read_text())
    assert init_cfg["data"]["source"] == str(tmp_path / "a" / "data" / "stylized")
    assert init_cfg["runtime"]["seed"] == 100 and init_cfg["model"]["weights"] is None
    source_cfg = yaml.safe_load((tmp_path / "a" / "runs" / "source" / "pretrain" / "config.yaml").read_text())
    assert source_cfg["model"]["weights"] == str(init)
    assert len(list((tmp_path / "a" / "raw" / "stylized" / "gta5" / "images").iterdir())) == 120

    # Same seed, fresh directory: the same table (runtime.deterministic is on in the preset).
    again = runner.invoke(cli.app, ["--no-progress", "demo", "--fast", "--out", str(tmp_path / "b"), "--seed", "3"])
    assert again.exit_code == 0, again.output
    report2 = json.loads((tmp_path / "b" / "report.json").read_text())
    assert report2["methods"] == report["methods"]

    # A rerun in the first directory skips every finished stage and gives the same table.
    source = tmp_path / "a" / "runs" / "source" / "pretrain" / "final.weights.h5"
    written = {w: w.stat().st_mtime_ns for w in (init, source)}
    resumed = runner.invoke(cli.app, ["--no-progress", "demo", "--fast", "--out", str(tmp_path / "a"), "--seed", "3"])
    assert resumed.exit_code == 0, resumed.output
    report3 = json.loads((tmp_path / "a" / "report.json").read_text())
    assert report3["methods"] == report["methods"]
    assert {w: w.stat().st_mtime_ns for w in written} == written

    # --methods adds CRST rows to the same directory: only those rows run. MRKLD-SP's round-1 labels
    # are CBST-SP's (same source model and label step); MRKLD then finetunes to another model.
    # LRENT selects a superset of CBST's pixels with CBST's classes and trains on soft labels.
    more = runner.invoke(cli.app, ["--no-progress", "demo", "--fast", "--out", str(tmp_path / "a"), "--seed", "3",
                                   "--methods", "st,cbst,cbst_sp,mrkld_sp,lrent"])
    assert more.exit_code == 0, more.output
    report4 = json.loads((tmp_path / "a" / "report.json").read_text())
    assert {k: v for k, v in report4["methods"].items() if k not in ("mrkld_sp", "lrent")} == report["methods"]
    md4 = (tmp_path / "a" / "report.md").read_text()
    assert {"mrkld_sp", "lrent"} <= set(report4["methods"]) and "MRKLD-SP" in md4 and "LRENT" in md4
    assert {w: w.stat().st_mtime_ns for w in written} == written
    runs = tmp_path / "a" / "runs"
    stats = [json.loads((runs / m / "round_1" / "label" / "stats.json").read_text()) for m in ("cbst_sp", "mrkld_sp")]
    assert stats[0]["selected_pixels"] == stats[1]["selected_pixels"]
    assert "regularizer: mrkld" in (runs / "mrkld_sp" / "round_1" / "finetune" / "config.yaml").read_text()
    final = [(runs / m / "round_1" / "finetune" / "final.weights.h5").read_bytes() for m in ("cbst_sp", "mrkld_sp")]
    assert final[0] != final[1]
    cbst, lrent = (json.loads((runs / m / "round_1" / "label" / "stats.json").read_text()) for m in ("cbst", "lrent"))
    assert lrent["thresholds"] == cbst["thresholds"] and lrent["lr_weight"] == 0.25
    assert sum(lrent["selected_pixels"]) >= sum(cbst["selected_pixels"])
    assert json.loads((runs / "lrent" / "round_1" / "label" / "pseudo" / "manifest.json").read_text())["soft_labels"]
    bad = runner.invoke(cli.app, ["--no-progress", "demo", "--fast", "--out", str(tmp_path / "a"),
                                  "--methods", "cbst,lrkld"])
    assert bad.exit_code == 2 and "--methods: unknown row 'lrkld'" in bad.output



@pytest.mark.slow
def test_oracle_runs_in_a_second_process_with_the_same_result(tmp_path):
    """The demo pretrains the oracle as `cbst-tf pretrain` in a second process beside the other
    stages; its weights equal those of the same step run in this process."""
    import h5py

    from cbst_tf.config import load_config
    from cbst_tf.train.steps import run_pretrain

    runner = CliRunner()
    out = tmp_path / "a"
    result = runner.invoke(cli.app, ["--no-progress", "demo", "--fast", "--out", str(out), "--seed", "1",
                                     "--set", "synth.oracle=true", "--set", "synth.init_images=0",
                                     "--set", "train.steps=60"])
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    assert "oracle" in report["methods"] and list(report["timings"])[-3:] == ["oracle", "evaluate", "use"]
    assert "pretrain: step 60/60" in (out / "runs" / "oracle.log").read_text()
    ocfg = load_config(out / "runs" / "oracle_config.yaml")
    assert ocfg.data.source == ocfg.data.target  # trained on the labelled target split
    ocfg.runtime.workdir = str(tmp_path / "in_process")
    here = run_pretrain(ocfg)

    def arrays(path):
        with h5py.File(path, "r") as f:
            found = {}
            f.visititems(lambda name, obj: found.update({name: obj[()]}) if isinstance(obj, h5py.Dataset) else None)
            return found

    there, mine = arrays(out / "runs" / "oracle" / "pretrain" / "final.weights.h5"), arrays(here)
    assert there.keys() == mine.keys() and len(there) > 10
    for name, value in there.items():
        assert (value == mine[name]).all(), name
