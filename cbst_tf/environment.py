"""What this process computes with: packages, the CPU, its vector extensions, oneDNN, threads.

The same seed gives other numbers (and other speeds) on another CPU or package set: TensorFlow
picks oneDNN or its Eigen kernels by CPU, and the two round differently. Error messages about
TensorFlow kernels and the reports name these facts so a user can tell why results differ.
No TensorFlow import here: reading ``/proc/cpuinfo`` and the environment is enough.
"""

from __future__ import annotations

import os
import platform
import sys
from functools import lru_cache
from pathlib import Path

from cbst_tf.io import file_digest

# The CPU flags TF 2.21 turns oneDNN on for by default (x86 Linux), per its start-up logic.
ONEDNN_DEFAULT_FLAGS = ("avx512_vnni", "avx512_bf16", "amx_bf16", "amx_int8", "amx_tile")
# The vector extensions worth naming when comparing machines.
VECTOR_FLAGS = ("sse4_2", "avx", "avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx512_bf16",
                "amx_tile", "amx_bf16", "amx_int8")


@lru_cache(maxsize=1)
def cpu_info() -> dict:
    """``{"model": str, "flags": [vector extensions present]}`` from ``/proc/cpuinfo`` (Linux)."""
    model, flags = platform.processor() or platform.machine(), set()
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                key, _, value = line.partition(":")
                key = key.strip()
                if key == "model name" and value.strip():
                    model = value.strip()
                elif key in ("flags", "Features"):
                    flags.update(value.split())
                if key == "" and flags:  # end of the first processor's block
                    break
    except OSError:
        pass
    return {"model": model, "flags": [f for f in VECTOR_FLAGS if f in flags]}


def onednn_enabled() -> bool:
    """Whether TensorFlow runs its oneDNN kernels in this process (read as TF decides it).

    ``TF_ENABLE_ONEDNN_OPTS`` set to 1/true or 0/false wins; otherwise TF 2.21 turns oneDNN on
    only on x86 CPUs with AVX512_VNNI, AVX512_BF16 or AMX. (TensorFlow has no public API that
    reports the decision, so this repeats its rule.)
    """
    value = os.environ.get("TF_ENABLE_ONEDNN_OPTS", "").strip().lower()
    if value in ("1", "true"):
        return True
    if value in ("0", "false"):
        return False
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return False
    return any(flag in cpu_info()["flags"] for flag in ONEDNN_DEFAULT_FLAGS)


def describe_kernels() -> str:
    """One phrase for messages: the CPU and which kernels TensorFlow uses on it."""
    state = "on" if onednn_enabled() else "off"
    return f"{cpu_info()['model']}, oneDNN {state}"


PACKAGES = ("tensorflow", "keras", "numpy", "opencv-python-headless", "pillow")


def _version(package: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def _threads() -> dict:
    """TensorFlow's thread pools as configured (0 = TF's default: one thread per core)."""
    out = {"cpu_count": os.cpu_count(),
           "TF_NUM_INTRAOP_THREADS": os.environ.get("TF_NUM_INTRAOP_THREADS"),
           "TF_NUM_INTEROP_THREADS": os.environ.get("TF_NUM_INTEROP_THREADS")}
    tf = sys.modules.get("tensorflow")  # only when the process already runs TensorFlow
    if tf is not None:
        out["intra_op"] = tf.config.threading.get_intra_op_parallelism_threads()
        out["inter_op"] = tf.config.threading.get_inter_op_parallelism_threads()
    return out


def describe(weights: dict[str, str | Path | None] | None = None) -> dict:
    """What produced a result, for ``report.json`` and ``metrics.json``: package versions, Python,
    the CPU and its vector extensions, oneDNN on or off, thread settings and weight digests."""
    cpu = cpu_info()
    return {
        "packages": {p: _version(p) for p in PACKAGES},
        "python": platform.python_version(),
        "platform": f"{platform.system()} {platform.machine()}",
        "cpu": cpu["model"], "cpu_flags": cpu["flags"],
        "onednn": onednn_enabled(),
        "TF_ENABLE_ONEDNN_OPTS": os.environ.get("TF_ENABLE_ONEDNN_OPTS"),
        "threads": _threads(),
        # The digest every cache is keyed by (computed once per file and process), shortened:
        # enough to tell two weight files apart in a report.
        "weights": {k: "sha256:" + file_digest(v)[:16] for k, v in (weights or {}).items()
                    if v and Path(v).is_file()},
    }


def markdown(env: dict) -> str:
    """The environment as a few report lines."""
    packages = ", ".join(f"{k} {v}" for k, v in env["packages"].items() if v)
    threads = env["threads"]
    lines = [f"Environment: {packages}; Python {env['python']} on {env['platform']}.",
             f"CPU: {env['cpu']} ({' '.join(env['cpu_flags']) or 'no vector extensions listed'}); "
             f"oneDNN {'on' if env['onednn'] else 'off'}; threads: intra-op "
             f"{threads.get('intra_op', threads['TF_NUM_INTRAOP_THREADS'])}, inter-op "
             f"{threads.get('inter_op', threads['TF_NUM_INTEROP_THREADS'])} (0 = one per core, "
             f"{threads['cpu_count']} cores)."]
    if env["weights"]:
        lines.append("Weights: " + ", ".join(f"{k} {v}" for k, v in env["weights"].items()) + ".")
    return "\n".join(lines)
