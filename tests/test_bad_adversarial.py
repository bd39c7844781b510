"""Cases an adversarial user or a flaky cluster produces, beyond the bad-input sweep: concurrent
runs of one step, a rename failing on a network file system, symlinked or escaping paths,
configs and weights that are not what they claim to be."""

from __future__ import annotations

import errno
import json
import os
import socket
import subprocess
import sys

import layouts
from badcase import check, reset_debug, run  # noqa: F401 - reset_debug: autouse fixture
from test_bad_runs import _copy, trained  # noqa: F401 - the shared trained-run fixture

from cbst_tf import io


def test_a_second_process_on_the_same_step_is_refused(tmp_path, trained):  # noqa: F811
    exp, work = _copy(trained, tmp_path)
    (work / "pretrain" / "DONE").unlink()
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (work / "pretrain" / ".lock").write_text(f"{socket.gethostname()}~{other.pid}\n")
        check("concurrent-step", *run("pretrain", "-c", exp, "--set", "train.steps=6"), tmp_path)
    finally:
        other.kill()
        other.wait()
    code, out = run("pretrain", "-c", exp, "--set", "train.steps=6")  # its owner died: taken over
    assert code == 0, out
    assert not (work / "pretrain" / ".lock").exists()


def test_a_rename_failing_on_a_network_file_system_is_one_line_and_leaves_no_temporary(tmp_path, monkeypatch):
    layouts.write_gta5(tmp_path / "gta5", n=2)
    real = os.replace

    def flaky(src, dst):
        if os.path.basename(src).startswith(".o.tmp-"):  # the finished dataset's rename into place
            raise OSError(errno.ESTALE, "Stale file handle", str(dst))
        return real(src, dst)

    monkeypatch.setattr(io.os, "replace", flaky)
    check("rename-stale-nfs", *run("data", "convert", "-f", "gta5", "--root", tmp_path / "gta5",
                                   "--out", tmp_path / "o"), tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gta5"]


def test_out_symlinked_to_the_raw_dataset_is_refused(tmp_path):
    layouts.write_gta5(tmp_path / "gta5", n=1)
    (tmp_path / "link").symlink_to(tmp_path / "gta5")
    check("convert-out-symlink-to-root", *run("data", "convert", "-f", "gta5", "--root", tmp_path / "gta5",
                                              "--out", tmp_path / "link"), tmp_path)
    assert (tmp_path / "gta5" / "images").is_dir()


def test_synth_out_that_is_a_file(tmp_path):
    (tmp_path / "f").write_text("mine")
    check("synth-out-is-file", *run("data", "synth", "--out", tmp_path / "f"), tmp_path)
    assert (tmp_path / "f").read_text() == "mine"


def test_manifest_shards_cannot_point_outside_the_dataset(tmp_path):
    layouts.write_gta5(tmp_path / "gta5", n=2)
    assert run("data", "convert", "-f", "gta5", "--root", tmp_path / "gta5", "--out", tmp_path / "o")[0] == 0
    manifest = json.loads((tmp_path / "o" / "manifest.json").read_text())
    manifest["shards"] = ["../../secret.tfrecord"]
    (tmp_path / "o" / "manifest.json").write_text(json.dumps(manifest))
    check("manifest-shard-escape", *run("priors", "--set", f"data.source={tmp_path / 'o'}",
                                        "--workdir", tmp_path / "run"), tmp_path)


def test_missing_shard(tmp_path):
    layouts.write_gta5(tmp_path / "gta5", n=2)
    assert run("data", "convert", "-f", "gta5", "--root", tmp_path / "gta5", "--out", tmp_path / "o",
               "--shards", "2")[0] == 0
    (tmp_path / "o" / "data-00001-of-00002.tfrecord").unlink()
    check("manifest-shard-missing", *run("pretrain", "--set", f"data.source={tmp_path / 'o'}",
                                         "--workdir", tmp_path / "run"), tmp_path)


def test_weights_file_that_is_not_hdf5(tmp_path, trained):  # noqa: F811
    exp, _ = _copy(trained, tmp_path)
    (tmp_path / "fake.weights.h5").write_text("not weights")
    check("weights-not-hdf5", *run("evaluate", "-c", exp, "--weights", tmp_path / "fake.weights.h5"), tmp_path)


def test_config_that_is_a_directory_or_a_list(tmp_path):
    check("config-is-directory", *run("config", "show", "-c", tmp_path), tmp_path)
    (tmp_path / "list.yaml").write_text("- train\n- lr\n")
    check("config-top-level-list", *run("config", "show", "-c", tmp_path / "list.yaml"), tmp_path)
    check("set-without-equals", *run("config", "show", "--set", "train.lr"))
    check("set-unknown-section", *run("config", "show", "--set", "trian.lr=0.1"))
