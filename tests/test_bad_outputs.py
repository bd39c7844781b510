"""Data loss: ``data convert --out`` / ``data synth --out`` never destroy what they did not write."""

from __future__ import annotations

import os
import stat

import layouts
from badcase import check, reset_debug, runner  # noqa: F401 - reset_debug: autouse fixture

from cbst_tf import cli
from cbst_tf.data.reader import read_manifest


def _convert(root, out, *extra):
    return runner.invoke(cli.app, ["--no-progress", "data", "convert", "--format", "gta5", "--root", str(root),
                                   "--out", str(out), "--shards", "1", *extra])


def test_convert_refuses_a_non_dataset_directory(tmp_path):
    layouts.write_gta5(tmp_path / "gta5", n=2)
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "keep.txt").write_text("hi")
    result = _convert(tmp_path / "gta5", tmp_path / "x")
    check("convert-out-not-dataset", result.exit_code, result.output, tmp_path)
    assert (tmp_path / "x" / "keep.txt").read_text() == "hi"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_convert_refuses_out_equal_inside_or_above_root(tmp_path):
    root = tmp_path / "data" / "gta5"
    layouts.write_gta5(root, n=2)
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    check("convert-out-is-root", *_result(_convert(root, root)), tmp_path)
    check("convert-out-inside-root", *_result(_convert(root, root / "tfr")), tmp_path)
    check("convert-out-above-root", *_result(_convert(root, tmp_path / "data")), tmp_path)
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before


def _result(result):
    return result.exit_code, result.output


def test_convert_refuses_a_regular_file(tmp_path):
    layouts.write_gta5(tmp_path / "gta5", n=1)
    (tmp_path / "f").write_text("mine")
    check("convert-out-is-file", *_result(_convert(tmp_path / "gta5", tmp_path / "f")), tmp_path)
    assert (tmp_path / "f").read_text() == "mine"


def test_convert_replaces_an_earlier_dataset_and_uses_the_umask(tmp_path):
    layouts.write_gta5(tmp_path / "gta5", n=2)
    out = tmp_path / "o"
    (out).mkdir()  # an empty directory is fine
    old = os.umask(0o022)
    try:
        assert _convert(tmp_path / "gta5", out).exit_code == 0
        layouts.write_gta5(tmp_path / "gta5", n=3)
        result = _convert(tmp_path / "gta5", out)
    finally:
        os.umask(old)
    assert result.exit_code == 0, result.output
    assert read_manifest(out)["num_examples"] == 3
    # Shared data volumes: readable by other users (umask 022), not the 0700 of mkdtemp.
    assert stat.S_IMODE(out.stat().st_mode) == 0o755


def test_synth_refuses_a_foreign_directory_and_cleans_up_after_itself(tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "gta5").mkdir()
    (tmp_path / "mine" / "gta5" / "real.png").write_bytes(b"x")
    result = runner.invoke(cli.app, ["data", "synth", "--out", str(tmp_path / "mine"), "--size", "32x48"])
    check("synth-out-not-benchmark", result.exit_code, result.output, tmp_path)
    assert (tmp_path / "mine" / "gta5" / "real.png").read_bytes() == b"x"
    result = runner.invoke(cli.app, ["data", "synth", "--out", str(tmp_path / "huge"), "--size", "100000x100000"])
    check("synth-size-huge", result.exit_code, result.output, tmp_path)
    assert not (tmp_path / "huge").exists()


def test_tiny_synth_scales_the_cities_and_reruns_into_its_own_output(tmp_path):
    args = ["--no-progress", "data", "synth", "--out", str(tmp_path / "s"), "--size", "32x48",
            "--n-source", "1", "--n-target", "1", "--n-val", "2", "--cities", "Rome"]
    result = runner.invoke(cli.app, args)
    assert result.exit_code == 0, result.output
    assert len(list((tmp_path / "s/nthu/Rome/Images/Test").iterdir())) == 2  # --n-city defaults to --n-val
    assert len(list((tmp_path / "s/nthu/Rome/Images/Train").iterdir())) == 2
    result = runner.invoke(cli.app, args[:-2] + ["--cities", ""])
    assert result.exit_code == 0, result.output
    assert not (tmp_path / "s/nthu").exists()
