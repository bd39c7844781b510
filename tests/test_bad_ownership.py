"""Data loss (issue 28, section 1): every command that writes into a user-named directory
replaces or writes into it only when its content proves it is that command's own earlier
output (cbst_tf.outdir). Each case checks that the user's files are still there, byte for byte."""

from __future__ import annotations

import json
import os
import shutil

import layouts
import pytest
from badcase import check, reset_debug, run  # noqa: F401 - reset_debug: autouse fixture
from test_bad_runs import _copy, trained  # noqa: F401 - the shared trained-run fixture

from cbst_tf import outdir
from cbst_tf.errors import ConfigError


def _snapshot(root):
    return {p.relative_to(root): (p.read_bytes() if p.is_file() else None) for p in sorted(root.rglob("*"))}


def _convert(root, out):
    return run("data", "convert", "-f", "gta5", "--root", root, "--out", out, "--shards", "1")


def test_convert_refuses_a_folder_with_someone_elses_manifest(tmp_path):
    layouts.write_gta5(tmp_path / "gta5", n=2)
    mine = tmp_path / "mine"
    (mine / "photos").mkdir(parents=True)
    (mine / "photos" / "cat.jpg").write_bytes(b"\xff\xd8cat")
    (mine / "notes.txt").write_text("my notes")
    (mine / "manifest.json").write_text(json.dumps({"app": "photo-organiser", "version": 3}))
    before = _snapshot(mine)
    check("convert-out-foreign-manifest", *_convert(tmp_path / "gta5", mine), tmp_path)
    assert _snapshot(mine) == before


def test_an_own_output_with_a_file_added_or_edited_is_refused(tmp_path):
    layouts.write_gta5(tmp_path / "gta5", n=2)
    out = tmp_path / "o"
    assert _convert(tmp_path / "gta5", out)[0] == 0
    assert _convert(tmp_path / "gta5", out)[0] == 0  # its own earlier output: replaced
    (out / "notes.txt").write_text("mine")
    check("out-user-file-added", *_convert(tmp_path / "gta5", out), tmp_path)
    assert (out / "notes.txt").read_text() == "mine"
    (out / "notes.txt").unlink()
    manifest = json.loads((out / "manifest.json").read_text())
    manifest["name"] = "my renamed dataset, edited by hand"
    (out / "manifest.json").write_text(json.dumps(manifest))
    check("out-edited", *_convert(tmp_path / "gta5", out), tmp_path)
    assert "edited by hand" in (out / "manifest.json").read_text()


def test_a_forged_or_copied_marker_proves_nothing(tmp_path):
    layouts.write_gta5(tmp_path / "gta5", n=2)
    mine = tmp_path / "mine"
    (mine / "photos").mkdir(parents=True)
    (mine / "photos" / "cat.jpg").write_bytes(b"cat")
    (mine / outdir.MARKER).write_text(json.dumps({"tool": "cbst-tf", "command": "data convert", "complete": False,
                                                  "directory": [0, 1]}))
    check("out-forged-marker", *_convert(tmp_path / "gta5", mine), tmp_path)
    assert (mine / "photos" / "cat.jpg").read_bytes() == b"cat"
    # A real dataset's marker copied next to someone's files: its digests do not cover them.
    assert _convert(tmp_path / "gta5", tmp_path / "o")[0] == 0
    shutil.copy(tmp_path / "o" / outdir.MARKER, mine / outdir.MARKER)
    code, out = _convert(tmp_path / "gta5", mine)
    assert code == 2 and "holds photos, which cbst-tf data convert did not write" in out, out
    assert (mine / "photos" / "cat.jpg").read_bytes() == b"cat"


def test_the_output_of_another_command_is_refused(tmp_path):
    args = ["data", "synth", "--out", tmp_path / "s", "--size", "32x48", "--n-source", "1", "--n-target", "1",
            "--n-val", "1", "--cities", ""]
    assert run(*args)[0] == 0
    assert run(*args)[0] == 0  # its own output: resumed (already complete)
    before = _snapshot(tmp_path / "s")
    layouts.write_gta5(tmp_path / "gta5", n=1)
    check("out-other-command", *_convert(tmp_path / "gta5", tmp_path / "s"), tmp_path)
    assert _snapshot(tmp_path / "s") == before


def test_demo_refuses_a_folder_of_the_users_files_and_the_root(tmp_path, no_demo_work):
    mine = tmp_path / "mine"
    (mine / "raw" / "gta5" / "images").mkdir(parents=True)
    (mine / "raw" / "gta5" / "images" / "precious.png.txt").write_text("precious")
    (mine / "raw" / "nthu" / "Rome").mkdir(parents=True)
    (mine / "raw" / "nthu" / "Rome" / "trip.txt").write_text("trip")
    (mine / "report.md").write_text("# my report")
    before = _snapshot(mine)
    check("demo-out-foreign", *run("demo", "--fast", "--out", mine), tmp_path)
    assert _snapshot(mine) == before
    check("demo-out-root", *run("demo", "--fast", "--out", "/"))


def test_the_home_directory_is_always_refused(tmp_path, monkeypatch):
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    check("out-home", *run("data", "synth", "--out", home, "--size", "32x48"), tmp_path)
    assert list(home.iterdir()) == []  # empty, and still refused: it is where everything else lives
    with pytest.raises(ConfigError, match="is your home directory"):
        outdir.claim_out("~", "demo")


def test_evaluate_out_keeps_the_users_predictions_and_refuses_a_parent_of_its_input(tmp_path, trained):  # noqa: F811
    exp, work = _copy(trained, tmp_path)
    mine = tmp_path / "mine"
    (mine / "predictions").mkdir(parents=True)
    (mine / "predictions" / "mine.txt").write_text("mine")
    (mine / "metrics.md").write_text("# my metrics")
    before = _snapshot(mine)
    check("evaluate-out-foreign", *run("evaluate", "-c", exp, "--out", mine, "--save-predictions", "1"), tmp_path)
    assert _snapshot(mine) == before
    check("out-parent-of-input", *run("evaluate", "-c", exp, "--out", work), tmp_path)
    # Its own earlier output is replaced; a fresh one is created and sealed.
    fresh = tmp_path / "fresh"
    for _ in range(2):
        code, out = run("evaluate", "-c", exp, "--out", fresh, "--save-predictions", "1")
        assert code == 0, out
    marker = json.loads((fresh / outdir.MARKER).read_text())
    assert marker["command"] == "evaluate" and marker["complete"] is True
    assert sorted(marker["entries"]) == ["metrics.json", "metrics.md", "predictions"]
    assert len(list((fresh / "predictions").iterdir())) == 2


def test_claim_resumes_only_an_unfinished_run_in_its_own_directory(tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    out = tmp_path / "out"
    claim = outdir.claim_out(out, "demo", {"--config": src / "exp.yaml"})
    assert claim.created and not claim.resumed
    (out / "runs").mkdir()
    (out / "runs" / "ckpt").write_bytes(b"x" * 10)
    again = outdir.claim_out(out, "demo")  # a killed run, resumed in place
    assert again.resumed and not again.created
    shutil.copytree(out, tmp_path / "copy")  # another directory (inode): not provably this run
    with pytest.raises(ConfigError, match="started in another directory"):
        outdir.claim_out(tmp_path / "copy", "demo")
    again.seal()
    (out / "runs" / "ckpt").write_bytes(b"x" * 11)  # changed after the run sealed it
    with pytest.raises(ConfigError, match="runs changed since cbst-tf demo wrote it"):
        outdir.claim_out(out, "demo")
    # Places no command may write to, whatever they hold.
    for place, match in [(src, "is inside an input"), (tmp_path, "contains an input"),
                         (src / "sub", "is inside an input")]:
        with pytest.raises(ConfigError, match=match):
            outdir.check_out(place, "demo", [src])
    link = tmp_path / "link"
    link.symlink_to(src)
    with pytest.raises(ConfigError, match="is inside --root"):
        outdir.check_out(link, "data convert", {"--root": src})
    # A run that fails before writing anything leaves no directory behind.
    failed = outdir.claim_out(tmp_path / "new", "evaluate")
    failed.release()
    assert not (tmp_path / "new").exists()
    assert os.path.isdir(out)
