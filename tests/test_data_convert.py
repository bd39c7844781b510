"""Converters on tiny fixtures in the exact real layouts (tests/layouts.py)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import layouts
import numpy as np
import pytest
import tensorflow as tf

from cbst_tf.config import DataConfig
from cbst_tf.data import convert as convert_mod
from cbst_tf.data.convert import convert_dataset
from cbst_tf.data.reader import eval_dataset, read_manifest
from cbst_tf.errors import CbstError, ConfigError
from cbst_tf.outdir import MARKER

CASES = {
    "cityscapes": (lambda r: layouts.write_cityscapes(r, "val", n=3), "val", "cityscapes19"),
    "cityscapes_test": (lambda r: layouts.write_cityscapes(r, "test", n=2, labelled=False), "test", "cityscapes19"),
    "gta5": (lambda r: layouts.write_gta5(r, n=3), None, "cityscapes19"),
    "synthia": (lambda r: layouts.write_synthia(r, n=3), None, "synthia16"),
    "nthu_train": (lambda r: layouts.write_nthu(r, "Rome", n_train=3, n_test=0), "Rome/train", "nthu13"),
    "nthu_test": (lambda r: layouts.write_nthu(r, "Rome", n_train=1, n_test=2), "Rome/test", "nthu13"),
    "bdd": (lambda r: layouts.write_bdd(r, "val", n=3), "val", "cityscapes19"),
    "bdd_test": (lambda r: layouts.write_bdd(r, "test", n=2, labelled=False), "test", "cityscapes19"),
    "folder": (lambda r: layouts.write_folder(r, n=3), None, "cityscapes19"),
    "folder_labelled": (lambda r: layouts.write_folder(r, n=3, labelled=True), None, "cityscapes19"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_converter_round_trip_is_exact(case, tmp_path):
    write, split, space = CASES[case]
    fmt = case.split("_")[0]
    root, out = tmp_path / "raw", tmp_path / "tfr"
    expected = write(root)
    if split and "/" in split:  # NTHU: only the requested half of the city
        part = "Train" if split.endswith("train") else "Test"
        expected = {k: v for k, v in expected.items() if f"/{part}/" in k}
    manifest = convert_dataset(fmt, root, out, split, shards=2, skip_bad=False, workers=2, command="test")
    assert manifest == read_manifest(out)
    labelled = all(v is not None for v in expected.values())
    assert (manifest["num_examples"], manifest["labelled"], manifest["label_space"]) == (len(expected), labelled, space)
    assert manifest["format"] == fmt and manifest["command"] == "test" and manifest["skipped"] == []
    assert manifest["image_sizes"] == {"12x16": len(expected)}
    assert sorted(p.name for p in out.iterdir()) == sorted(manifest["shards"] + ["manifest.json", MARKER])
    counts = np.zeros(256, np.int64)
    seen = []
    for ex in eval_dataset(out, DataConfig()):
        sid = ex["source_id"].numpy().decode()
        seen.append(sid)
        raw = (root / sid).read_bytes()
        assert ex["encoded"].numpy() == raw  # never re-encoded
        if sid.endswith(".png"):  # lossless: compare with what OpenCV reads
            rgb = cv2.imread(str(root / sid))[..., ::-1]
        else:
            rgb = tf.io.decode_jpeg(raw).numpy()
            assert ex["format"].numpy() == b"jpeg"
        np.testing.assert_array_equal(ex["image"].numpy(), rgb.astype(np.float32))
        want = expected[sid] if expected[sid] is not None else np.full((12, 16), 255, np.uint8)
        np.testing.assert_array_equal(ex["label"].numpy(), want)
        if expected[sid] is not None:
            counts += np.bincount(want.ravel(), minlength=256)
    assert seen == sorted(expected)  # eval order = sorted source order
    assert manifest["class_pixel_counts"] == [int(c) for c in counts[:19]]
    if labelled:
        assert sum(manifest["class_pixel_counts"]) > 0


def test_gta5_label_is_read_as_palette_indices_not_colours(tmp_path):
    expected = layouts.write_gta5(tmp_path / "g", n=1)
    # OpenCV turns the palette into colours: the converter must not read it that way.
    assert cv2.imread(str(tmp_path / "g/labels/00001.png"), cv2.IMREAD_UNCHANGED).ndim == 3
    convert_dataset("gta5", tmp_path / "g", tmp_path / "o", None, 1, False, 1)
    ex = next(iter(eval_dataset(tmp_path / "o", DataConfig())))
    np.testing.assert_array_equal(ex["label"].numpy(), expected["images/00001.png"])
    assert len(np.unique(expected["images/00001.png"])) > 10


def test_size_mismatch_names_both_files(tmp_path):
    layouts.write_gta5(tmp_path / "g", n=2)
    layouts.write_gta5(tmp_path / "h", n=2, size=(10, 16))
    os.replace(tmp_path / "h/labels/00002.png", tmp_path / "g/labels/00002.png")
    with pytest.raises(CbstError) as err:
        convert_dataset("gta5", tmp_path / "g", tmp_path / "o", None, 1, False, 1)
    msg = str(err.value)
    assert "images/00002.png" in msg and "labels/00002.png" in msg and "\n" not in msg
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("what", ["image", "label"])
def test_corrupt_file_fails_with_one_line_or_is_skipped(what, tmp_path):
    expected = layouts.write_synthia(tmp_path / "s", n=3)
    bad = layouts.truncate(tmp_path / ("s/RGB/0000001.png" if what == "image" else "s/GT/LABELS/0000001.png"))
    with pytest.raises(CbstError) as err:
        convert_dataset("synthia", tmp_path / "s", tmp_path / "o", None, 2, False, 2)
    assert str(bad) in str(err.value) and "\n" not in str(err.value)
    assert not (tmp_path / "o").exists() and list(tmp_path.glob(".o.tmp-*")) == []
    manifest = convert_dataset("synthia", tmp_path / "s", tmp_path / "o", None, 2, True, 2)
    assert manifest["num_examples"] == 2
    assert [s["source_id"] for s in manifest["skipped"]] == ["RGB/0000001.png"]
    ids = [ex["source_id"].numpy().decode() for ex in eval_dataset(tmp_path / "o", DataConfig())]
    assert ids == [k for k in sorted(expected) if k != "RGB/0000001.png"]


def test_bad_arguments(tmp_path):
    layouts.write_nthu(tmp_path / "n", "Rio", 1, 1)
    with pytest.raises(ConfigError, match="<City>/train or <City>/test"):
        convert_dataset("nthu", tmp_path / "n", tmp_path / "o", "Rio", 1, False, 1)
    with pytest.raises(ConfigError, match="unknown format"):
        convert_dataset("kitti", tmp_path / "n", tmp_path / "o", None, 1, False, 1)
    with pytest.raises(CbstError, match="NTHU city folder not found"):
        convert_dataset("nthu", tmp_path / "n", tmp_path / "o", "Tokyo/test", 1, False, 1)
    with pytest.raises(ConfigError, match="no splits"):
        convert_dataset("gta5", tmp_path / "n", tmp_path / "o", "train", 1, False, 1)


def test_failure_after_first_shard_leaves_nothing(tmp_path, monkeypatch):
    layouts.write_cityscapes(tmp_path / "c", "train", n=4)
    real = convert_mod.DatasetWriter.add
    shards_seen = []

    def add(self, index, *args, **kwargs):
        if index == 3:  # item 2 started shard 1, so shard 0 is complete on disk by now
            shards_seen.extend(p.name for p in self.directory.glob("data-*"))
            raise RuntimeError("injected")
        return real(self, index, *args, **kwargs)

    monkeypatch.setattr(convert_mod.DatasetWriter, "add", add)
    with pytest.raises(RuntimeError):
        convert_dataset("cityscapes", tmp_path / "c", tmp_path / "o", "train", 2, False, 1)
    assert shards_seen == ["data-00000-of-00002.tfrecord"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c"]


_KILL_SCRIPT = """
import sys, time
import cbst_tf.data.convert as c
real = c._load
def slow(layout, item):
    if "/aachen/" not in item.source_id:  # items 0, 1 (aachen) are fast: shard 0 gets renamed
        time.sleep(60)
    return real(layout, item)
c._load = slow
c.convert_dataset("cityscapes", sys.argv[1], sys.argv[2], "train", 4, False, 1)
"""


@pytest.mark.slow
@pytest.mark.timeout(1200)  # starts/kills processes: a hang fails sooner
def test_killed_conversion_leaves_no_dataset_and_is_cleaned_up(tmp_path):
    layouts.write_cityscapes(tmp_path / "c", "train", n=4)
    out = tmp_path / "o"
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).parent))
    proc = subprocess.Popen([sys.executable, "-c", _KILL_SCRIPT, str(tmp_path / "c"), str(out)], env=env)
    try:
        deadline = time.monotonic() + 120
        while not list(tmp_path.glob(".o.tmp-*/data-00000-of-00004.tfrecord")):
            assert proc.poll() is None and time.monotonic() < deadline, "conversion never wrote shard 0"
            time.sleep(0.2)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert not out.exists()  # the first shard exists only inside the hidden temporary directory
    manifest = convert_dataset("cityscapes", tmp_path / "c", out, "train", 4, False, 1)
    assert manifest["num_examples"] == 4
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c", "o"]  # the killed run's temp dir is gone
