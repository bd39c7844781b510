"""bench/stylized_init.py: the style-randomised corpus behind fact 3 (an ImageNet stand-in)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

from cbst_tf.data.formats import gta5
from cbst_tf.synth import probe
from cbst_tf.synth.domains import SOURCE_STYLE
from cbst_tf.synth.generate import render
from cbst_tf.synth.geometry import SOURCE_GEOMETRY

_SPEC = importlib.util.spec_from_file_location(
    "stylized_init", Path(__file__).resolve().parents[1] / "bench" / "stylized_init.py")
stylized_init = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(stylized_init)


def test_colour_says_nothing_about_the_class():
    """A nearest-class-mean RGB classifier that works within the source fails within the
    stylized corpus: what a network learns there has to come from shape and layout."""
    src = [render(3, "gta5", i, (64, 128), SOURCE_STYLE, SOURCE_GEOMETRY) for i in range(30)]
    sty = [stylized_init.render_stylized(3, i, (64, 128)) for i in range(30)]
    src_miou, _ = probe.colour_probe_miou(src[:20], src[20:])
    sty_miou, _ = probe.colour_probe_miou(sty[:20], sty[20:])
    assert src_miou > 15.0  # measured 21.6
    assert sty_miou < 3.0  # measured 0.4: chance level
    roads = np.array([img[lab == 0].mean(axis=0) for img, lab in sty if (lab == 0).any()])
    assert roads.std(axis=0).min() > 30.0  # the road's colour changes from image to image


def test_corpus_is_a_gta5_layout_with_the_scene_labels(tmp_path):
    root = tmp_path / "gta5"
    stylized_init.render_corpus(root, 3, seed=5, size=(48, 96))
    items = gta5.list_items(root, None)
    assert len(items) == 3
    _, train_ids = stylized_init.render_stylized(5, 1, (48, 96))
    np.testing.assert_array_equal(gta5.read_train_ids(items[1].label), train_ids)
    assert not list(tmp_path.glob(".*"))  # atomic: no temporary directory left behind
