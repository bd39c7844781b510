"""`cbst-tf label`: end to end on a tiny target set, against a brute-force reference.

The reference recomputes the round's probabilities with the plain full-resolution model
(cbst_tf.inference), sorts every pixel's confidence (Algorithms 1/2 literally) and applies
Eq. 5 / Eq. 8 / Eq. 9 pixel by pixel; the label step (stride-logit cache, streaming
histograms, sharding) must agree with it.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import tensorflow as tf
from layouts import write_cityscapes

from cbst_tf.config import load_config
from cbst_tf.errors import CbstError
from cbst_tf.io import read_json
from cbst_tf.layout import pretrained_weights

SIZE = (24, 40)


@pytest.fixture(scope="module")
def target(tmp_path_factory):
    from cbst_tf.data.convert import convert_dataset

    root = tmp_path_factory.mktemp("cs")
    write_cityscapes(root / "raw", split="train", n=6, size=SIZE, seed=3)
    out = root / "tfr"
    convert_dataset(fmt="cityscapes", root=root / "raw", out=out, split="train", shards=2, skip_bad=False,
                    workers=1, command="test")
    return out


def make_cfg(workdir, target, method="cbst", extra=()):
    return load_config(None, [
        f"runtime.workdir={workdir}", f"data.target={target}", "model.width=0.0625", "model.dropout=0.0",
        f"selftrain.method={method}", "data.parallel_calls=1", "selftrain.prior_size=[12,20]", *extra])


def save_model(cfg, seed=0):
    from cbst_tf.models import build_model

    model = build_model(cfg.model.name, 19, width=cfg.model.width, dropout=0.0)
    # FCN score layers start at zero (uniform outputs, all ties): draw every trainable weight
    # at random instead so predictions span several classes and confidences are distinct.
    rng = np.random.default_rng(seed)
    for v in model.trainable_variables:
        fan_in = int(np.prod(v.shape[:-1])) if len(v.shape) > 1 else 1
        v.assign(rng.normal(0.0, 1.0 / np.sqrt(fan_in), v.shape).astype(np.float32))
    path = pretrained_weights(cfg)
    path.parent.mkdir(parents=True, exist_ok=True)
    model.save_weights(str(path))
    return model


def read_pseudo(label_dir):
    from cbst_tf.data.reader import eval_dataset

    cfg = load_config(None, ["data.parallel_calls=1"])
    return {ex["source_id"].decode(): ex["label"] for ex in
            eval_dataset(label_dir / "pseudo", cfg.data).as_numpy_iterator()}


def reference_labels(model, target, mode, portion, priors=None):
    """Algorithms 1/2 by sorting all pixels, Eq. 5/8/9 per pixel (float16 like the histograms)."""
    from cbst_tf.data.reader import eval_dataset
    from cbst_tf.inference import predict_probs
    from cbst_tf.models import build_model

    cfg = load_config(None, ["data.parallel_calls=1"])
    stride = build_model(cfg.model.name, 19, width=0.0625, dropout=0.0, upsample=False)
    stride.set_weights(model.get_weights())
    maps = {}
    for ex in eval_dataset(target, cfg.data).as_numpy_iterator():
        # The label step's cache contract: logits at the output stride rounded to float16,
        # then upsampled and soft-maxed; within 1e-2 of the float32 full-resolution model.
        logits = stride(ex["image"][None]).numpy().astype(np.float16).astype(np.float32)
        p = tf.nn.softmax(tf.image.resize(logits, SIZE, method="bilinear")[0], axis=-1).numpy()
        assert np.abs(p - predict_probs(model, ex["image"])).max() < 1e-2
        v = p if priors is None else p * priors
        maps[ex["source_id"].decode()] = v.astype(np.float16).astype(np.float64)
    allv = np.concatenate([m.reshape(-1, 19) for m in maps.values()])
    cls, top = allv.argmax(1), allv.max(1)
    thr = np.ones(19)
    for c in range(19):
        vals = np.sort(top if mode == "st" else top[cls == c])[::-1]
        k = int(np.floor(portion * len(vals)))
        thr[c] = vals[k - 1] if k > 0 else np.inf
    out = {}
    for sid, m in maps.items():
        flat = m.reshape(-1, 19)
        lab = np.full(len(flat), 255, np.uint8)
        for n, row in enumerate(flat):
            if mode == "st":
                c = int(row.argmax())
                if row[c] >= thr[0]:
                    lab[n] = c
            else:
                ratio = np.where(np.isinf(thr), 0, row / np.where(np.isinf(thr), 1, thr))
                c = int(ratio.argmax())
                if ratio[c] >= 1:
                    lab[n] = c
        out[sid] = lab.reshape(m.shape[:2])
    return out, thr


@pytest.mark.parametrize("method", ["st", "cbst"])
def test_label_step_matches_brute_force(tmp_path, target, method):
    from cbst_tf.selftrain.label_step import run_label

    cfg = make_cfg(tmp_path / "w", target, method)
    model = save_model(cfg)
    label_dir = run_label(cfg, 1)
    stats = read_json(label_dir / "stats.json")
    expected, thr = reference_labels(model, target, method, 0.2)
    got = read_pseudo(label_dir)
    assert set(got) == set(expected)
    for sid in expected:
        np.testing.assert_array_equal(got[sid], expected[sid], err_msg=sid)
    got_thr = np.array([np.inf if t is None else t for t in stats["thresholds"]])
    np.testing.assert_allclose(got_thr, thr)
    assert stats["round"] == 1 and stats["portion"] == 0.2 and stats["mode"] == method
    assert stats["num_images"] == 6
    assert sum(stats["predicted_pixels"]) == 6 * SIZE[0] * SIZE[1]
    sel = np.asarray(stats["selected_pixels"])
    pred = np.asarray(stats["predicted_pixels"])
    if method == "cbst":  # Algorithm 2: at least floor(p * N_c) of every predicted class (ties add)
        assert np.all(sel >= np.floor(0.2 * pred))
        assert (pred > 0).sum() >= 2  # a degenerate one-class model would test little
    else:  # Algorithm 1: at least floor(p * N) pixels over all classes
        assert sel.sum() >= np.floor(0.2 * pred.sum())
    assert sel.sum() <= 0.3 * pred.sum()
    assert (label_dir / "preview.png").is_file() and (label_dir / "DONE").is_file()
    assert not (label_dir / "cache").exists()
    manifest = read_json(label_dir / "pseudo" / "manifest.json")
    assert manifest["num_examples"] == 6 and manifest["labelled"]
    # Diagnostics: precision/recall of the pseudo-labels against the target's own labels.
    from cbst_tf.data.reader import eval_dataset

    truth = {ex["source_id"].decode(): ex["label"] for ex in
             eval_dataset(target, make_cfg(tmp_path, target).data).as_numpy_iterator()}
    selected, correct, true = np.zeros(19), np.zeros(19), np.zeros(19)
    for sid, lab in expected.items():
        known = truth[sid] < 19
        true += np.bincount(truth[sid][known], minlength=19)
        chosen = known & (lab < 19)
        selected += np.bincount(lab[chosen], minlength=19)
        correct += np.bincount(lab[chosen & (lab == truth[sid])], minlength=19)
    q = stats["pseudo_label_quality"]
    assert true.sum() > 0 and selected.sum() > 0
    np.testing.assert_array_equal(q["selected"], selected)
    np.testing.assert_array_equal(q["correct"], correct)
    np.testing.assert_array_equal(q["true"], true)
    assert q["overall_precision"] == pytest.approx(correct.sum() / selected.sum())


def test_four_shards_equal_unsharded(tmp_path, target):
    from cbst_tf.selftrain.label_step import run_label

    one = make_cfg(tmp_path / "one", target, "cbst", ["selftrain.portion_start=0.3"])
    save_model(one, seed=1)
    run_label(one, 1)
    four = make_cfg(tmp_path / "four", target, "cbst", ["selftrain.portion_start=0.3"])
    save_model(four, seed=1)
    for i in range(4):
        run_label(four, 1, shard=(i, 4), phase="stats")
    with pytest.raises(CbstError):  # nothing is written before every slice's stats exist
        run_label(make_cfg(tmp_path / "four2", target, "cbst"), 1, shard=(0, 4), phase="write")
    # A slice whose cache is gone (phases on different machines) recomputes the same logits.
    import shutil

    shutil.rmtree(tmp_path / "four" / "round_1" / "label" / "cache" / "1-of-4")
    for i in (2, 0, 3, 1):
        run_label(four, 1, shard=(i, 4), phase="write")
    a = read_json(tmp_path / "one" / "round_1" / "label" / "stats.json")
    b = read_json(tmp_path / "four" / "round_1" / "label" / "stats.json")
    for key in ("thresholds", "predicted_pixels", "selected_pixels", "rare_classes", "num_images"):
        assert a[key] == b[key], key
    la, lb = read_pseudo(tmp_path / "one" / "round_1" / "label"), read_pseudo(tmp_path / "four" / "round_1" / "label")
    assert set(la) == set(lb)
    for sid in la:
        np.testing.assert_array_equal(la[sid], lb[sid])


def test_write_phase_waits_for_missing_shards(tmp_path, target):
    from cbst_tf.selftrain.label_step import run_label

    cfg = make_cfg(tmp_path / "w", target)
    save_model(cfg)
    run_label(cfg, 1, shard=(0, 2), phase="stats")
    with pytest.raises(CbstError, match=r"shard\(s\) 1 of 2"):
        run_label(cfg, 1, shard=(0, 2), phase="write")


def test_priors_and_errors(tmp_path, target):
    from cbst_tf.selftrain.label_step import run_label

    cfg = make_cfg(tmp_path / "w", target, "cbst_sp")
    model = save_model(cfg)
    with pytest.raises(CbstError, match="spatial priors not found"):
        run_label(cfg, 1)
    rng = np.random.default_rng(0)
    priors = rng.uniform(0.1, 1.0, size=(*SIZE, 19)).astype(np.float32)
    priors /= priors.sum(axis=(0, 1), keepdims=True)
    path = tmp_path / "w" / "priors" / "priors.npy"
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, priors)
    label_dir = run_label(cfg, 1)
    expected, _ = reference_labels(model, target, "cbst", 0.2, priors=priors / priors.max())
    got = read_pseudo(label_dir)
    for sid in expected:
        np.testing.assert_array_equal(got[sid], expected[sid])
    with pytest.raises(CbstError, match="finetune --round 1"):
        run_label(cfg, 2)
    with pytest.raises(CbstError, match="makes no pseudo-labels"):
        run_label(make_cfg(tmp_path / "x", target, "source_only"), 1)


def test_prior_norm_classes_uses_the_per_pixel_class_frequency(tmp_path, target):
    """``selftrain.prior_norm=classes``: the label step's pseudo-labels equal the brute-force
    Eq. 9 labels with q_n(c) N_c / sum_c' q_n(c') N_c' computed here pixel by pixel."""
    from cbst_tf.selftrain.label_step import run_label

    cfg = make_cfg(tmp_path / "w", target, "cbst_sp", ["selftrain.prior_norm=classes"])
    model = save_model(cfg, seed=1)
    rng = np.random.default_rng(5)
    priors = rng.uniform(0.1, 1.0, size=(*SIZE, 19)).astype(np.float32)
    priors /= priors.sum(axis=(0, 1), keepdims=True)
    counts = rng.integers(1, 10**6, size=19).astype(float)
    path = tmp_path / "w" / "priors" / "priors.npy"
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, priors)
    with pytest.raises(CbstError, match=r"priors\.json: not found; selftrain\.prior_norm=classes"):
        run_label(cfg, 1)
    (path.parent / "priors.json").write_text(json.dumps({"class_pixel_counts_at_prior": counts.tolist()}))
    post = np.empty_like(priors, dtype=np.float64)
    for y in range(SIZE[0]):
        for x in range(SIZE[1]):
            joint = [float(priors[y, x, c]) * counts[c] for c in range(19)]
            post[y, x] = [j / sum(joint) for j in joint]
    post = post.astype(np.float32)
    expected, _ = reference_labels(model, target, "cbst", 0.2, priors=post / post.max())
    got = read_pseudo(run_label(cfg, 1))
    paper, _ = reference_labels(model, target, "cbst", 0.2, priors=priors / priors.max())
    assert any((expected[sid] != paper[sid]).any() for sid in expected)  # the option changes labels
    for sid in expected:
        np.testing.assert_array_equal(got[sid], expected[sid], err_msg=sid)


def test_multiscale_flip_label_step_equals_numpy_reference(tmp_path, target):
    """Test-time passes (scales 0.75/1.0, flip): the device path equals the numpy reference
    (compute_thresholds + assign_pseudo_labels) on the mean probabilities of all passes."""
    from cbst_tf.algos import assign_pseudo_labels, compute_thresholds
    from cbst_tf.data.reader import eval_dataset
    from cbst_tf.models import build_model
    from cbst_tf.selftrain.label_step import run_label
    from cbst_tf.selftrain.logit_cache import StrideLogits, probs_from_logits

    cfg = make_cfg(tmp_path / "w", target, "cbst", ["selftrain.test_scales=[0.75,1.0]", "selftrain.test_flip=true"])
    model = save_model(cfg, seed=2)
    label_dir = run_label(cfg, 1)
    stride = build_model(cfg.model.name, 19, width=cfg.model.width, dropout=0.0, upsample=False)
    stride.set_weights(model.get_weights())
    infer = StrideLogits(stride, [0.75, 1.0], True)
    assert len(infer.passes) == 4
    maps = {ex["source_id"].decode(): probs_from_logits([x.numpy() for x in infer(ex["image"])], SIZE).numpy()
            for ex in eval_dataset(target, cfg.data).as_numpy_iterator()}
    thresholds = compute_thresholds(list(maps.values()), 0.2, "cbst")
    stats = read_json(label_dir / "stats.json")
    np.testing.assert_array_equal([np.inf if t is None else t for t in stats["thresholds"]], thresholds)
    got = read_pseudo(label_dir)
    selected = 0
    for sid, p in maps.items():
        want = assign_pseudo_labels(p, thresholds, "cbst")
        np.testing.assert_array_equal(got[sid], want, err_msg=sid)
        selected += int((want != 255).sum())
    assert 0 < selected == sum(stats["selected_pixels"])
