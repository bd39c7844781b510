"""cbst_tf.synth.stylized: the style-randomised corpus behind the demo's stand-in init."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cbst_tf.data.formats import gta5
from cbst_tf.demo import demo_config, init_config
from cbst_tf.synth import probe, stylized
from cbst_tf.synth.domains import SOURCE_STYLE
from cbst_tf.synth.generate import render
from cbst_tf.synth.geometry import SOURCE_GEOMETRY


def test_colour_says_nothing_about_the_class():
    """A nearest-class-mean RGB classifier that works within the source fails within the
    stylized corpus: what a network learns there has to come from shape and layout."""
    src = [render(3, "gta5", i, (64, 128), SOURCE_STYLE, SOURCE_GEOMETRY) for i in range(30)]
    sty = [stylized.render_stylized(3, i, (64, 128)) for i in range(30)]
    src_miou, _ = probe.colour_probe_miou(src[:20], src[20:])
    sty_miou, _ = probe.colour_probe_miou(sty[:20], sty[20:])
    assert src_miou > 15.0  # measured 21.6
    assert sty_miou < 3.0  # measured 0.4: chance level
    roads = np.array([img[lab == 0].mean(axis=0) for img, lab in sty if (lab == 0).any()])
    assert roads.std(axis=0).min() > 30.0  # the road's colour changes from image to image


def test_scenes_are_source_layouts_of_their_own():
    """Same scene generator and geometry as the source, under another tag: no corpus scene is
    a source scene, and the style draw happens after the scene (labels do not depend on it)."""
    _, labels = stylized.render_stylized(3, 0, (64, 128))
    _, source_labels = render(3, "gta5", 0, (64, 128), SOURCE_STYLE, SOURCE_GEOMETRY)
    _, same_rng_labels = render(3, stylized.TAG, 0, (64, 128), SOURCE_STYLE, SOURCE_GEOMETRY)
    np.testing.assert_array_equal(labels, same_rng_labels)
    assert (labels != source_labels).mean() > 0.1


def test_corpus_is_a_gta5_layout_with_the_scene_labels_and_is_built_once(tmp_path):
    root = stylized.synthesize_stylized(tmp_path, seed=5, size=(48, 96), n=3)
    assert root == tmp_path / "gta5"
    items = gta5.list_items(root, None)
    assert len(items) == 3
    _, train_ids = stylized.render_stylized(5, 1, (48, 96))
    np.testing.assert_array_equal(gta5.read_train_ids(items[1].label), train_ids)
    assert not list(tmp_path.glob(".*"))  # atomic: no temporary directory left behind
    stamp = items[0].image.stat().st_mtime_ns
    stylized.synthesize_stylized(tmp_path, seed=5, size=(48, 96), n=3)  # same arguments: skipped
    assert items[0].image.stat().st_mtime_ns == stamp
    stylized.synthesize_stylized(tmp_path, seed=5, size=(48, 96), n=4)  # other arguments: rebuilt
    assert len(gta5.list_items(root, None)) == 4


def test_init_run_has_its_own_seed_data_and_no_weights(tmp_path):
    cfg = demo_config(None, [], tmp_path, seed=7, fast=False)
    icfg = init_config(cfg, tmp_path)
    assert icfg.runtime.seed == cfg.synth.init_seed == 100  # one init for every demo seed
    assert icfg.data.source == str(tmp_path / "data" / "stylized")
    assert icfg.runtime.workdir == str(tmp_path / "runs" / "init")
    assert icfg.model.weights is None and icfg.train == cfg.train and icfg.model.width == cfg.model.width
    assert cfg.runtime.seed == 7 and cfg.data.source != icfg.data.source  # the demo's config is untouched
    assert init_config(demo_config(None, ["synth.init_images=0"], tmp_path, 7, False), tmp_path) is None
    given = demo_config(None, [f"model.weights={Path(tmp_path) / 'imagenet.h5'}"], tmp_path, 7, False)
    assert init_config(given, tmp_path) is None  # the user's weights take precedence


def test_init_steps_sets_only_the_init_runs_budget(tmp_path):
    cfg = demo_config(None, ["synth.init_steps=3000"], tmp_path, seed=7, fast=False)
    icfg = init_config(cfg, tmp_path)
    assert icfg.train.steps == 3000 and cfg.train.steps == 1500  # the demo's own runs keep theirs
    assert init_config(demo_config(None, [], tmp_path, 7, False), tmp_path).train.steps == 1500
