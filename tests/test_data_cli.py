"""``cbst-tf data convert`` through the Typer app: exit codes 0 / 1 / 2 and one-line errors."""

from __future__ import annotations

import layouts
import pytest
from typer.testing import CliRunner

from cbst_tf import cli
from cbst_tf.data.reader import read_manifest

runner = CliRunner()


@pytest.fixture(autouse=True)
def _reset_debug():
    cli.common.STATE["debug"] = False
    yield


def _lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip() and not line.startswith(("convert ", "skipped"))]


def test_convert_succeeds_and_records_the_command(tmp_path):
    layouts.write_nthu(tmp_path / "nthu", "Taipei", n_train=0, n_test=2)
    out = tmp_path / "taipei_test"
    result = runner.invoke(cli.app, ["--no-progress", "data", "convert", "--format", "nthu", "--root",
                                     str(tmp_path / "nthu"), "--split", "Taipei/test", "--out", str(out),
                                     "--shards", "2"])
    assert result.exit_code == 0, result.output
    assert f"wrote 2 examples in 2 shards to {out}" in result.output
    manifest = read_manifest(out)
    assert manifest["labelled"] and manifest["label_space"] == "nthu13"
    assert manifest["command"].startswith("cbst-tf")


def test_corrupt_file_exits_1_with_one_line_and_skip_bad_exits_0(tmp_path):
    layouts.write_bdd(tmp_path / "bdd", "val", n=2)
    bad = layouts.truncate(next((tmp_path / "bdd/labels/sem_seg/masks/val").glob("*.png")))
    args = ["data", "convert", "-f", "bdd", "--root", str(tmp_path / "bdd"), "--split", "val",
            "--out", str(tmp_path / "o")]
    result = runner.invoke(cli.app, args)
    assert result.exit_code == 1
    lines = _lines(result.output)
    assert len(lines) == 1 and lines[0].startswith(f"error: {bad}: corrupt label image")
    result = runner.invoke(cli.app, args + ["--skip-bad"])
    assert result.exit_code == 0, result.output
    assert "wrote 1 examples" in result.output
    assert len(read_manifest(tmp_path / "o")["skipped"]) == 1


@pytest.mark.parametrize("extra", [["--shards", "0"], ["--format", "kitti"], ["--split", "Rome"]])
def test_bad_option_exits_2(extra, tmp_path):
    layouts.write_nthu(tmp_path / "n", "Rome", 1, 1)
    args = ["data", "convert", "-f", "nthu", "--root", str(tmp_path / "n"), "--out", str(tmp_path / "o"),
            "--split", "Rome/test"] + extra
    result = runner.invoke(cli.app, args)
    assert result.exit_code == 2, result.output
    assert not (tmp_path / "o").exists()
