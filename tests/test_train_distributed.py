"""Distributed and interrupted training give the same model as plain single-device training.

Each strategy needs a fresh process (TensorFlow fixes its devices at start-up), so the runs
execute ``WORKER`` (written to a temporary file) in subprocesses; the reference is computed in
this process with the default strategy, from the same helper code.
"""

import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from killing import kill_at_checkpoint

WORKER = r'''
import json, os, sys, time
from pathlib import Path
import numpy as np

MODE, OUT = sys.argv[1], Path(sys.argv[2])
if MODE == "mirrored":
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
import keras
import tensorflow as tf
from cbst_tf import runtime
from cbst_tf.config import Config
from cbst_tf.train.loop import train
from cbst_tf.train.optimizer import build_optimizer

GLOBAL_BATCH = 4


def data():
    rng = np.random.default_rng(7)
    x = rng.uniform(0, 255, (8, 16, 16, 3)).astype("float32")
    y = rng.integers(0, 3, (8, 16, 16)).astype("int32")
    # Unequal ignored shares inside each global batch: replica 0 gets 2 mostly-ignored images.
    y[0::4, 2:] = 255
    y[1::4, 5:] = 255
    return x, y


def model(regularised=False):
    inp = keras.Input((None, None, 3))
    h = keras.layers.Rescaling(1 / 127.5, -1.0)(inp)
    h = keras.layers.Conv2D(4, 3, padding="same", activation="relu")(h)
    if regularised:  # state that must survive a restart: BN statistics and the dropout RNG
        h = keras.layers.BatchNormalization()(h)
        h = keras.layers.Dropout(0.3)(h)
    return keras.Model(inp, keras.layers.Conv2D(3, 1)(h))


def config(strategy, schedule="fixed"):
    cfg = Config()
    cfg.runtime.strategy, cfg.runtime.seed, cfg.runtime.deterministic = strategy, 3, True
    cfg.train.lr, cfg.train.schedule, cfg.train.global_batch_size = 0.05, schedule, GLOBAL_BATCH
    return cfg


def run(cfg, ckpt, steps, every, dataset_fn, regularised=False):
    rt = runtime.setup(cfg)
    with rt.strategy.scope():
        m = model(regularised)
        opt = build_optimizer(cfg, m, total_steps=steps)
    res = train(m, opt, dataset_fn, rt, steps=steps, ckpt_dir=ckpt, checkpoint_every=every,
                log_every=100)
    return m, res, rt


def fixed_batches(segment):
    x, y = data()
    return tf.data.Dataset.from_tensor_slices((x, y)).batch(GLOBAL_BATCH).repeat()


def slow_shuffled(segment):
    x, y = data()
    def gen():
        order = np.random.default_rng(segment).permutation(len(x))
        while True:
            for i in order:
                time.sleep(0.015)
                yield x[i], y[i]
    sig = (tf.TensorSpec((16, 16, 3), tf.float32), tf.TensorSpec((16, 16), tf.int32))
    return tf.data.Dataset.from_generator(gen, output_signature=sig).batch(GLOBAL_BATCH)


def save(m, res, rt):
    if rt.is_chief:
        np.savez(OUT / "weights.npz", *[v.numpy() for v in m.weights])
        (OUT / "result.json").write_text(json.dumps({"step": res.step, "losses": res.losses,
                                                     "replicas": rt.num_replicas}))


if __name__ == "__main__":
    OUT.mkdir(parents=True, exist_ok=True)
    if MODE in ("mirrored", "multi_worker"):
        save(*run(config(MODE), OUT / f"ckpt-{os.getpid()}", 3, 10, fixed_batches))
    elif MODE == "resume":
        save(*run(config("default", "poly"), OUT / "ckpt", 12, 3, slow_shuffled, regularised=True))
'''


def _load_worker(tmp_path: Path):
    path = tmp_path / "worker.py"
    path.write_text(WORKER)
    spec = importlib.util.spec_from_file_location("train_worker", path)
    mod = importlib.util.module_from_spec(spec)
    sys.argv = [str(path), "default", str(tmp_path / "ref")]
    spec.loader.exec_module(mod)
    return mod, path


def _env(**extra):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", TF_NUM_INTRAOP_THREADS="1", TF_NUM_INTEROP_THREADS="1")
    env.update(extra)
    return env


def _reference(mod, tmp_path):
    m, res, _ = mod.run(mod.config("default"), tmp_path / "ref-ckpt", 3, 10, mod.fixed_batches)
    return m, res


def _first_loss_numpy(mod):
    """Mean CE over the valid pixels of the first global batch, at the initial weights."""
    x, y = mod.data()
    keras = mod.keras
    keras.utils.set_random_seed(3)
    logits = np.asarray(mod.model()(x[:4]), np.float64)
    z = logits - logits.max(-1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(-1, keepdims=True))
    valid = y[:4] != 255
    return -np.take_along_axis(logp, np.where(valid, y[:4], 0)[..., None], -1)[..., 0][valid].mean()


def _weights(path):
    with np.load(path) as f:
        return [f[k] for k in sorted(f.files, key=lambda k: int(k.split("_")[1]))]


def test_mirrored_two_cpus_matches_default(tmp_path):
    mod, script = _load_worker(tmp_path)
    out = tmp_path / "mirrored"
    proc = subprocess.run([sys.executable, str(script), "mirrored", str(out)], env=_env(),
                          capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ref_model, ref = _reference(mod, tmp_path)
    got = json.loads((out / "result.json").read_text())
    assert got["replicas"] == 2 and got["step"] == 3
    assert got["losses"][0] == pytest.approx(_first_loss_numpy(mod), rel=1e-5)
    np.testing.assert_allclose(got["losses"], ref.losses, rtol=1e-5)
    for a, b in zip(_weights(out / "weights.npz"), ref_model.weights, strict=True):
        np.testing.assert_allclose(a, b.numpy(), rtol=1e-5, atol=1e-6)
    assert not np.allclose(ref_model.weights[0].numpy(), mod.model().weights[0].numpy())


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
@pytest.mark.timeout(1200)  # starts/kills processes: a hang fails sooner
def test_multi_worker_two_processes_match_single_process(tmp_path):
    mod, script = _load_worker(tmp_path)
    workers = [f"127.0.0.1:{_free_port()}" for _ in range(2)]
    out = tmp_path / "mwms"
    procs = []
    for i in range(2):
        tf_config = json.dumps({"cluster": {"worker": workers}, "task": {"type": "worker", "index": i}})
        procs.append(subprocess.Popen([sys.executable, str(script), "multi_worker", str(out)],
                                      env=_env(TF_CONFIG=tf_config), stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True))
    try:
        logs = [p.communicate(timeout=240)[1] for p in procs]
    finally:
        for p in procs:  # never leave a worker waiting for its peer
            if p.poll() is None:
                p.kill()
                p.wait()
    assert all(p.returncode == 0 for p in procs), "\n".join(log[-2000:] for log in logs)
    ref_model, ref = _reference(mod, tmp_path)
    got = json.loads((out / "result.json").read_text())
    assert got["replicas"] == 2 and got["step"] == 3
    np.testing.assert_allclose(got["losses"], ref.losses, rtol=1e-5)
    for a, b in zip(_weights(out / "weights.npz"), ref_model.weights, strict=True):
        np.testing.assert_allclose(a, b.numpy(), rtol=1e-5, atol=1e-6)


@pytest.mark.slow
@pytest.mark.timeout(1200)  # starts/kills processes: a hang fails sooner
def test_sigkill_then_rerun_gives_the_uninterrupted_weights(tmp_path):
    _, script = _load_worker(tmp_path)
    cmd = lambda out: [sys.executable, str(script), "resume", str(out)]  # noqa: E731
    full = subprocess.run(cmd(tmp_path / "full"), env=_env(), capture_output=True, text=True, timeout=240)
    assert full.returncode == 0, full.stderr[-3000:]

    out = tmp_path / "killed"
    code = kill_at_checkpoint(cmd(out), _env(), out / "ckpt" / "checkpoint", "ckpt-3", timeout=180)
    assert code == -signal.SIGKILL
    assert not (out / "result.json").exists()
    assert not (out / "ckpt" / "ckpt-12.index").exists()

    again = subprocess.run(cmd(out), env=_env(), capture_output=True, text=True, timeout=240)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "resuming at step" in again.stderr
    want = json.loads((tmp_path / "full" / "result.json").read_text())
    got = json.loads((out / "result.json").read_text())
    assert got["step"] == want["step"] == 12
    assert got["losses"] == want["losses"][-len(got["losses"]):]
    for a, b in zip(_weights(out / "weights.npz"), _weights(tmp_path / "full" / "weights.npz"), strict=True):
        np.testing.assert_array_equal(a, b)
