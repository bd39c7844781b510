"""Faults during pretrain / evaluate: one line naming the file, never a traceback; damaged
checkpoints fall back to the previous one; a full or read-only disk is a one-line error."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import layouts
import numpy as np
import pytest
from badcase import check, reset_debug, run  # noqa: F401 - reset_debug: autouse fixture

from cbst_tf.data.writer import DatasetWriter

ROOT = Path(__file__).resolve().parents[1]


def write_dataset(directory: Path, n: int = 8, seed: int = 0, labelled: bool = True, classes: int = 4) -> Path:
    rng = np.random.default_rng(seed)
    with DatasetWriter(directory, num_items=n, shards=2, name=directory.name, fmt="test") as w:
        for i in range(n):
            image = rng.integers(0, 256, (24, 40, 3), dtype=np.uint8)
            label = (image[..., 0] // (256 // classes)).astype(np.uint8) if labelled else None
            w.add(i, cv2.imencode(".png", image)[1].tobytes(), "png", 24, 40, f"img/{i:03d}.png", label)
        w.close()
    return directory


def experiment(tmp: Path, source: Path) -> Path:
    exp = tmp / "exp.yaml"
    exp.write_text(f"""data: {{source: {source}, target_eval: {source}, num_classes: 19, crop_size: [16, 16],
       shuffle_buffer: 8, parallel_calls: 1, cycle_length: 1}}
model: {{width: 0.03, dropout: 0.0}}
train: {{global_batch_size: 2, steps: 4, checkpoint_every: 2, lr: 0.01}}
eval: {{protocol: cityscapes19}}
runtime: {{strategy: default, workdir: {tmp / 'run'}}}
""")
    return exp


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A finished 4-step pretrain (checkpoints at steps 2 and 4) to copy from."""
    tmp = tmp_path_factory.mktemp("trained")
    exp = experiment(tmp, write_dataset(tmp / "src"))
    code, out = run("pretrain", "-c", exp)
    assert code == 0, out
    return tmp


def _copy(trained: Path, tmp: Path) -> tuple[Path, Path]:
    shutil.copytree(trained / "src", tmp / "src")
    shutil.copytree(trained / "run", tmp / "run")
    for config in (tmp / "run").rglob("config.yaml"):  # as if it had been trained here
        config.write_text(config.read_text().replace(str(trained), str(tmp)))
    return experiment(tmp, tmp / "src"), tmp / "run"


def test_truncated_shard_is_named_by_pretrain_and_evaluate(tmp_path, trained):
    exp, work = _copy(trained, tmp_path)
    layouts.truncate(tmp_path / "src" / "data-00000-of-00002.tfrecord", 0.7)
    check("shard-truncated-evaluate", *run("evaluate", "-c", exp), tmp_path)
    shutil.rmtree(work)
    check("shard-truncated-pretrain", *run("pretrain", "-c", exp), tmp_path)


def test_num_classes_below_the_data_is_caught_before_training(tmp_path):
    exp = experiment(tmp_path, write_dataset(tmp_path / "src"))
    check("num-classes-mismatch", *run("pretrain", "-c", exp, "--set", "data.num_classes=3"), tmp_path)
    assert not (tmp_path / "run" / "pretrain").exists()


def test_pretrain_refuses_unlabelled_data(tmp_path):
    exp = experiment(tmp_path, write_dataset(tmp_path / "src", labelled=False))
    check("pretrain-unlabelled", *run("pretrain", "-c", exp), tmp_path)
    assert not (tmp_path / "run" / "pretrain").exists()


def test_workdir_that_is_a_file(tmp_path):
    exp = experiment(tmp_path, write_dataset(tmp_path / "src"))
    (tmp_path / "afile").write_text("x")
    check("workdir-is-file", *run("pretrain", "-c", exp, "--workdir", tmp_path / "afile"), tmp_path)


def test_truncated_latest_checkpoint_falls_back_with_a_warning(tmp_path, trained):
    exp, work = _copy(trained, tmp_path)
    (work / "pretrain" / "DONE").unlink()
    layouts.truncate(work / "pretrain" / "ckpt" / "ckpt-4.index", 0.5)
    code, out = run("pretrain", "-c", exp, "--set", "train.steps=6")
    check("checkpoint-truncated", code, out, tmp_path)
    assert "resuming at step 2" in out and (work / "pretrain" / "DONE").read_text().startswith("steps=6")


def test_resume_after_a_model_change_is_one_line(tmp_path, trained):
    exp, work = _copy(trained, tmp_path)
    (work / "pretrain" / "DONE").unlink()
    (work / "pretrain" / "config.yaml").unlink()  # else the settings check refuses first (resume-config-differs)
    check("resume-model-changed", *run("pretrain", "-c", exp, "--set", "model.width=0.05",
                                       "--set", "train.steps=6"), tmp_path)


def _isolated(script: str, tmp: Path) -> subprocess.CompletedProcess:
    """Run a shell script as root of a private mount namespace (to mount a small or read-only tmpfs)."""
    if shutil.which("unshare") is None:
        pytest.skip("unshare not available")
    probe = subprocess.run(["unshare", "-rm", "mount", "-t", "tmpfs", "tmpfs", str(tmp)], capture_output=True)
    if probe.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs in a user namespace: {probe.stderr.decode().strip()}")
    env = dict(os.environ, PYTHONPATH=str(ROOT), TF_CPP_MIN_LOG_LEVEL="2")
    return subprocess.run(["unshare", "-rm", "sh", "-c", script], capture_output=True, text=True, env=env,
                          timeout=300)


@pytest.mark.slow
def test_disk_full_and_read_only_workdir(tmp_path):
    exp = experiment(tmp_path, write_dataset(tmp_path / "src"))
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    cli_cmd = f"{sys.executable} -m cbst_tf.cli --no-progress pretrain -c {exp} --workdir {mnt}/run"
    proc = _isolated(f"""exec 2>&1
mount -t tmpfs -o size=300k tmpfs {mnt} || exit 99
{cli_cmd}; echo "rc=$?"
ls {mnt}/run/pretrain/ckpt
mount -o remount,size=20m {mnt}
{cli_cmd} >/dev/null 2>&1; echo "rc2=$?"
ls -a {mnt}/run/pretrain/ckpt
mount -o remount,ro {mnt}
{cli_cmd} --workdir {mnt}/other; echo "rc3=$?"
""", tmp_path)
    out = proc.stdout
    first, rest = out.split("rc=", 1)
    code = int(rest.split()[0])
    check("disk-full", code, first, tmp_path)
    assert "ckpt-2_temp" in rest.split("rc2=")[0]  # TF's temp directory of the failed save...
    second = rest.split("rc2=")[1]
    assert second.split()[0] == "0", out
    assert "_temp" not in second.split("rc3=")[0]  # ...is removed when the step runs again
    ro_part = second.split("rc3=")
    check("workdir-read-only", int(ro_part[1].split()[0]), ro_part[0], tmp_path)


def test_rerunning_a_done_step_with_another_config_says_what_differs(tmp_path, trained):
    exp, work = _copy(trained, tmp_path)
    before = (work / "pretrain" / "final.weights.h5").read_bytes()
    code, out = run("pretrain", "-c", exp, "--set", "train.steps=50", "--set", "runtime.log_every_items=7")
    check("done-config-differs", code, out, tmp_path)
    assert (work / "pretrain" / "final.weights.h5").read_bytes() == before
    code, out = run("pretrain", "-c", exp)
    check("done-same-config", code, out, tmp_path)


@pytest.mark.timeout(1200)  # starts/kills processes: a hang fails sooner
def test_stale_temporaries_of_a_killed_run_are_removed_when_the_step_starts(tmp_path, trained):
    import socket

    exp, work = _copy(trained, tmp_path)
    (work / "pretrain" / "DONE").unlink()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True).stdout.strip()  # a pid that has exited
    host = socket.gethostname()
    stale_file = work / "pretrain" / f".final.weights.h5.tmp-{host}~{dead}"
    stale_file.write_bytes(b"x" * 1000)
    stale_dir = work / "pretrain" / "ckpt" / f".shard.tmp-{host}~{dead}-0123abcd"
    stale_dir.mkdir()
    other_host = work / "pretrain" / f".x.tmp-otherhost~{dead}"  # maybe alive elsewhere: kept
    other_host.write_text("x")
    code, out = run("pretrain", "-c", exp, "--set", "train.steps=6")
    check("stale-temp-removed", code, out, tmp_path)
    assert not stale_file.exists() and not stale_dir.exists() and other_host.exists()


def test_a_step_that_fails_early_leaves_no_stub_directory(tmp_path, trained):
    exp, _ = _copy(trained, tmp_path)
    layouts.truncate(tmp_path / "src" / "data-00001-of-00002.tfrecord", 0.5)
    code, out = run("pretrain", "-c", exp, "--workdir", tmp_path / "fresh")
    assert code == 1 and "corrupt or truncated TFRecord shard" in out
    assert not (tmp_path / "fresh" / "pretrain").exists()


@pytest.mark.slow
@pytest.mark.timeout(1200)  # starts/kills processes: a hang fails sooner
def test_sigterm_during_convert_exits_143_and_cleans_up(tmp_path):
    import signal
    import time

    layouts.write_gta5(tmp_path / "gta5", n=400, size=(64, 96))
    out = tmp_path / "o"
    env = dict(os.environ, PYTHONPATH=str(ROOT), TF_CPP_MIN_LOG_LEVEL="2")
    proc = subprocess.Popen([sys.executable, "-m", "cbst_tf.cli", "--no-progress", "data", "convert", "-f", "gta5",
                             "--root", str(tmp_path / "gta5"), "--out", str(out), "--workers", "1"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 120
    while not list(tmp_path.glob(".o.tmp-*/data-*")):  # the conversion is writing shards
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()[0]
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    output = proc.communicate(timeout=60)[0]
    check("sigterm-convert", proc.returncode, output, tmp_path)
    assert list(tmp_path.glob(".o*")) == [] and not out.exists()


def test_weights_of_another_model_are_one_line_without_keras_noise(tmp_path, trained):
    exp, work = _copy(trained, tmp_path)
    code, out = run("evaluate", "-c", exp, "--set", "model.width=0.05")
    check("weights-mismatch", code, out, tmp_path)
    assert len([line for line in out.splitlines() if line.strip()]) == 1, out
