"""What this process computes with: the CPU, its vector extensions, and whether TF uses oneDNN.

The same seed gives other numbers (and other speeds) on another CPU or package set: TensorFlow
picks oneDNN or its Eigen kernels by CPU, and the two round differently. Error messages about
TensorFlow kernels and the reports name these facts so a user can tell why results differ.
No TensorFlow import here: reading ``/proc/cpuinfo`` and the environment is enough.
"""

from __future__ import annotations

import os
import platform
from functools import lru_cache

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
