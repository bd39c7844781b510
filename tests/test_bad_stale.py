"""Silent wrong results from stale work (issue 28, section 2): caches and partial results are
keyed by what determines them, a resume with other settings is refused, a DONE step whose
outputs are gone is not done, and a config cannot give a key twice."""

from __future__ import annotations

import json
import shutil

import numpy as np
from badcase import check, reset_debug, run  # noqa: F401 - reset_debug: autouse fixture
from test_bad_runs import _copy, trained, write_dataset  # noqa: F401 - the shared trained-run fixture
from test_label_step import make_cfg, read_pseudo, save_model, target  # noqa: F401 - target: fixture

from cbst_tf.config import load_config
from cbst_tf.errors import ConfigError


def _label(workdir, target, weights, *extra):  # noqa: F811 - target: the fixture's value
    return run("label", "--round", "1", "--workdir", workdir, "--set", f"data.target={target}",
               "--set", "model.width=0.0625", "--set", "model.dropout=0.0", "--set", "selftrain.method=cbst",
               "--set", "data.parallel_calls=1", "--set", f"selftrain.source_weights={weights}", *extra)


def _stats(workdir):
    return json.loads((workdir / "round_1" / "label" / "stats.json").read_text())


def test_the_label_step_never_reuses_another_models_cache(tmp_path, target):  # noqa: F811
    a, b = tmp_path / "a.weights.h5", tmp_path / "b.weights.h5"
    for path, seed in ((a, 0), (b, 5)):
        save_model(make_cfg(tmp_path / "x", target, extra=[f"selftrain.source_weights={path}"]), seed=seed)
    work = tmp_path / "w"
    assert _label(work, target, a, "--phase", "stats")[0] == 0  # model A's cache and histograms
    # Another model by name: the step's settings differ; refused, nothing of A's is reused.
    check("label-other-model-refused", *_label(work, target, b), tmp_path)
    assert not (work / "round_1" / "label" / "DONE").exists()
    # Another model under the same name (weights replaced in place): A's partial results are discarded.
    shutil.copy(a, tmp_path / "a0.weights.h5")
    shutil.copy(b, a)
    code, out = _label(work, target, a)
    check("label-cache-other-weights", code, out, tmp_path)
    for fresh, weights in ((tmp_path / "only_b", b), (tmp_path / "only_a", tmp_path / "a0.weights.h5")):
        assert _label(fresh, target, weights)[0] == 0
    got, only_b, only_a = _stats(work), _stats(tmp_path / "only_b"), _stats(tmp_path / "only_a")
    assert got["selected_pixels"] == only_b["selected_pixels"] and got["thresholds"] == only_b["thresholds"]
    assert got["selected_pixels"] != only_a["selected_pixels"]  # A's statistics would have been wrong
    mine, theirs = read_pseudo(work / "round_1" / "label"), read_pseudo(tmp_path / "only_b" / "round_1" / "label")
    assert mine.keys() == theirs.keys()
    for sid in mine:
        np.testing.assert_array_equal(mine[sid], theirs[sid])


def test_a_resume_with_other_settings_is_refused(tmp_path, trained):  # noqa: F811
    exp, work = _copy(trained, tmp_path)
    (work / "pretrain" / "DONE").unlink()  # interrupted after its checkpoints
    shutil.copytree(tmp_path / "src", tmp_path / "src2")
    check("resume-config-differs", *run("pretrain", "-c", exp, "--set", f"data.source={tmp_path / 'src2'}",
                                        "--set", "train.lr=0.02", "--set", "runtime.seed=7"), tmp_path)
    assert not (work / "pretrain" / "DONE").exists()
    code, out = run("pretrain", "-c", exp, "--set", "train.steps=6")  # a longer run of the same settings resumes
    assert code == 0 and "resuming at step 4" in out, out


def test_partial_and_done_results_from_other_input_files_are_not_reused(tmp_path, trained):  # noqa: F811
    exp, work = _copy(trained, tmp_path)
    shutil.rmtree(tmp_path / "src")
    write_dataset(tmp_path / "src", seed=11)  # the same path, other images
    check("done-inputs-changed", *run("pretrain", "-c", exp), tmp_path)
    (work / "pretrain" / "DONE").unlink()
    code, out = run("pretrain", "-c", exp, "--set", "train.steps=6")
    check("resume-inputs-changed", code, out, tmp_path)
    assert "resuming" not in out and "step 6/6" in out
    assert (work / "pretrain" / "DONE").read_text().startswith("steps=6")


def test_a_done_step_whose_outputs_are_gone_is_not_done(tmp_path, trained):  # noqa: F811
    exp, work = _copy(trained, tmp_path)
    final = work / "pretrain" / "final.weights.h5"
    before = final.read_bytes()
    final.unlink()
    code, out = run("pretrain", "-c", exp)
    check("done-outputs-missing", code, out, tmp_path)
    assert final.read_bytes()[:8] == before[:8] and (work / "pretrain" / "DONE").is_file()


def test_duplicate_yaml_keys_are_errors_at_every_level(tmp_path):
    exp = tmp_path / "exp.yaml"
    exp.write_text("train:\n  steps: 5\ndata:\n  flip: true\ntrain:\n  lr: 0.1\n")
    check("yaml-duplicate-key", *run("config", "show", "-c", exp), tmp_path)
    exp.write_text("train:\n  lr: 0.1\n  steps: 3\n  lr: 0.2\n")
    check("yaml-duplicate-nested-key", *run("config", "show", "-c", exp), tmp_path)
    base = tmp_path / "base.yaml"
    base.write_text("model:\n  width: 0.5\n  width: 0.25\n")
    exp.write_text("base: base.yaml\n")
    try:
        load_config(exp)
        raise AssertionError("a duplicate key in the base file was accepted")
    except ConfigError as exc:
        assert str(exc) == f"{base}: line 3: duplicate key 'width' (first at line 2)"
    code, out = run("config", "show", "--set", "train={lr: 1, lr: 2}")
    assert code == 2 and "error: --set train: line 1: duplicate key 'lr' (first at line 1)" in out, out
    # Merge keys are not duplicates: an explicit key overrides the merged one, as YAML says.
    exp.write_text("train:\n  <<: {lr: 0.5, steps: 7}\n  lr: 0.25\n")
    cfg = load_config(exp)
    assert (cfg.train.lr, cfg.train.steps) == (0.25, 7)


def test_a_demo_directory_of_other_settings_is_not_resumed(tmp_path, no_demo_work):
    from cbst_tf import outdir
    from cbst_tf.config import save_resolved
    from cbst_tf.demo import demo_config, with_init

    out = tmp_path / "d"
    outdir.claim_out(out, "demo")  # an interrupted seed-0 demo
    cfg = demo_config(None, [], out, 0, True)
    cfg, _ = with_init(cfg, out)
    save_resolved(cfg, out, "demo_config.yaml")
    check("demo-other-settings", *run("demo", "--fast", "--out", out, "--seed", "1"), tmp_path)


def test_finetuning_with_lrent_on_cbst_labels_is_refused(tmp_path, target):  # noqa: F811
    """CRST (issue 30): LRENT finetuning needs the LRENT label step's records (soft labels are rebuilt
    from their stored logits); on CBST's it would silently train CBST under LRENT's name."""
    weights = tmp_path / "a.weights.h5"
    save_model(make_cfg(tmp_path / "x", target, extra=[f"selftrain.source_weights={weights}"]), seed=0)
    work = tmp_path / "w"
    assert _label(work, target, weights)[0] == 0
    code, out = run("finetune", "--round", "1", "--workdir", work, "--set", f"data.target={target}",
                    "--set", "model.width=0.0625", "--set", "model.dropout=0.0", "--set", "selftrain.method=cbst",
                    "--set", "data.parallel_calls=1", "--set", f"selftrain.source_weights={weights}",
                    "--set", "selftrain.regularizer=lrent")
    check("finetune-lrent-on-hard-labels", code, out, tmp_path)
    assert not (work / "round_1" / "finetune" / "DONE").exists()
