"""Runtime setup: strategy choice and caching, precision policy, seeds, batch splitting."""

import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from cbst_tf import runtime
from cbst_tf.config import Config
from cbst_tf.errors import CbstError


def _cfg(**rt):
    cfg = Config()
    cfg.runtime.strategy = "default"
    for k, v in rt.items():
        setattr(cfg.runtime, k, v)
    return cfg


def test_default_strategy_is_cached_and_auto_resolves_to_it_without_gpus():
    a = runtime.setup(_cfg(seed=1))
    b = runtime.setup(_cfg(strategy="auto"))
    assert a.strategy is b.strategy and a.num_replicas == 1 and a.is_chief and a.kind == "default"
    with pytest.raises(CbstError, match=r"^runtime.strategy: this process already runs the 'default'"):
        runtime.setup(_cfg(strategy="mirrored"))


def test_seed_makes_initialisation_repeatable_and_policy_is_set():
    runtime.setup(_cfg(seed=11))
    w1 = keras.Sequential([keras.Input((2,)), keras.layers.Dense(3)]).get_weights()
    runtime.setup(_cfg(seed=11))
    w2 = keras.Sequential([keras.Input((2,)), keras.layers.Dense(3)]).get_weights()
    np.testing.assert_array_equal(w1[0], w2[0])
    try:
        runtime.setup(_cfg(precision="mixed_bfloat16"))
        assert keras.mixed_precision.global_policy().name == "mixed_bfloat16"
    finally:
        runtime.setup(_cfg())
    assert keras.mixed_precision.global_policy().name == "float32"


def test_per_replica_batch():
    strategy = tf.distribute.get_strategy()
    assert runtime.per_replica_batch(6, strategy) == 6


def test_mirrored_over_two_logical_cpus_and_batch_split(tmp_path):
    code = """
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
from cbst_tf import runtime
from cbst_tf.config import Config
from cbst_tf.errors import CbstError
cfg = Config(); cfg.runtime.strategy = "mirrored"
rt = runtime.setup(cfg)
assert rt.kind == "mirrored" and rt.num_replicas == 2, rt
assert runtime.per_replica_batch(4, rt.strategy) == 2
try:
    runtime.per_replica_batch(3, rt.strategy)
except CbstError as e:
    print("ERR", e)
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "ERR train.global_batch_size: 3 is not divisible by the 2 replicas in sync" in proc.stdout


def test_multi_worker_without_tf_config_is_one_line_error(monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    with pytest.raises(CbstError, match=r"^TF_CONFIG: runtime.strategy=multi_worker needs TF_CONFIG"):
        runtime._build_strategy("multi_worker")
