"""The one place that sets up how TensorFlow executes: strategy, precision, seeds, determinism, XLA.

``setup(cfg)`` is called for every step by its lifecycle (:func:`cbst_tf.runs.step`), also
when the step is already done, so a resumed run continues under the same settings. The tf.distribute strategy
is created once per process and cached: a strategy cannot be re-created after TensorFlow has
initialised its devices (and MultiWorkerMirroredStrategy starts a gRPC server), so a second
call asking for a *different* strategy is a one-line error. Precision policy, seeds and op
determinism are cheap and are re-applied on every call, so each step starts from the same
random state (weight initialisation and data order are then a function of ``runtime.seed``).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any

import keras
import tensorflow as tf

from cbst_tf.config import Config
from cbst_tf.errors import CbstError

_CACHE: dict[str, Any] = {}


@dataclass(frozen=True)
class Runtime:
    """What a training or inference step needs to know about the execution environment."""

    strategy: tf.distribute.Strategy
    kind: str  # the strategy actually built: default | mirrored | multi_worker
    precision: str
    xla: bool
    seed: int
    deterministic: bool

    @property
    def num_replicas(self) -> int:
        return int(self.strategy.num_replicas_in_sync)

    @property
    def worker_index(self) -> int:
        """This process's task index among the workers (0 outside multi-worker training)."""
        resolver = getattr(self.strategy, "cluster_resolver", None)
        if self.kind != "multi_worker" or resolver is None:
            return 0
        return int(resolver.task_id or 0)

    @property
    def is_chief(self) -> bool:
        """Whether this process writes shared outputs (final weights, DONE, TensorBoard)."""
        resolver = getattr(self.strategy, "cluster_resolver", None)
        if self.kind != "multi_worker" or resolver is None:
            return True
        if resolver.task_type == "chief":
            return True
        return (resolver.task_type == "worker" and int(resolver.task_id or 0) == 0
                and "chief" not in resolver.cluster_spec().as_dict())


def _logical_cpus() -> list[str]:
    return [d.name for d in tf.config.list_logical_devices("CPU")]


def _resolve(kind: str) -> str:
    """``auto`` -> ``mirrored`` with more than one visible GPU, else ``default``."""
    if kind == "auto":
        return "mirrored" if len(tf.config.list_physical_devices("GPU")) > 1 else "default"
    return kind


def _build_strategy(kind: str) -> tf.distribute.Strategy:
    gpus = tf.config.list_physical_devices("GPU")
    if kind == "default":
        return tf.distribute.get_strategy()
    if kind == "mirrored":
        if gpus:
            return tf.distribute.MirroredStrategy()
        # Without GPUs, mirror over the logical CPU devices (tests split the CPU in two).
        return tf.distribute.MirroredStrategy(devices=_logical_cpus())
    if kind == "multi_worker":
        raw = os.environ.get("TF_CONFIG", "")
        try:
            spec = json.loads(raw) if raw else None
        except json.JSONDecodeError:
            raise CbstError(f"TF_CONFIG: invalid JSON for runtime.strategy=multi_worker: {raw[:80]!r}") from None
        if not spec or "cluster" not in spec or "task" not in spec:
            raise CbstError("TF_CONFIG: runtime.strategy=multi_worker needs TF_CONFIG with 'cluster' and 'task'")
        # AUTO picks NCCL for GPU collectives and RING (gRPC) on CPU-only workers.
        options = tf.distribute.experimental.CommunicationOptions(
            implementation=tf.distribute.experimental.CommunicationImplementation.AUTO)
        return tf.distribute.MultiWorkerMirroredStrategy(communication_options=options)
    raise CbstError(f"runtime.strategy: unknown strategy {kind!r}")


def setup(cfg: Config) -> Runtime:
    """Apply ``cfg.runtime`` to this process and return the (cached) strategy with its settings."""
    rt = cfg.runtime
    kind = _resolve(rt.strategy)
    cached = _CACHE.get("strategy")
    if cached is None:
        strategy = _build_strategy(kind)
        _CACHE["strategy"] = (kind, strategy)
    else:
        built, strategy = cached
        if built != kind:
            raise CbstError(
                f"runtime.strategy: this process already runs the {built!r} strategy; "
                f"{rt.strategy!r} needs a new process")
    # Policy before any model is built: layers read the global policy at construction time.
    keras.mixed_precision.set_global_policy(rt.precision)
    keras.utils.set_random_seed(rt.seed)
    if rt.deterministic:
        # There is no public way to switch it off again: once on, it stays on in this process.
        tf.config.experimental.enable_op_determinism()
    return Runtime(strategy=strategy, kind=kind, precision=rt.precision, xla=rt.xla,
                   seed=rt.seed, deterministic=rt.deterministic)


def per_replica_batch(global_batch: int, strategy: tf.distribute.Strategy) -> int:
    """The batch each replica sees; the global batch must split evenly over the replicas."""
    n = int(strategy.num_replicas_in_sync)
    if global_batch % n:
        raise CbstError(
            f"train.global_batch_size: {global_batch} is not divisible by the {n} replicas in sync")
    return global_batch // n
