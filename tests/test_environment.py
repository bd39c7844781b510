"""What a report says produced it: oneDNN on or off as TensorFlow decides it, CPU flags, digests."""

from __future__ import annotations

import hashlib

import pytest

from cbst_tf import environment


@pytest.mark.parametrize("value, flags, expected", [
    ("1", [], True), ("true", [], True), ("0", ["avx512_vnni"], False), ("False", ["amx_bf16"], False),
    (None, ["avx", "avx2", "fma"], False),  # AVX2 only: TF 2.21 leaves oneDNN off (e.g. older EPYCs)
    (None, ["avx2", "avx512f", "avx512_vnni"], True),
    (None, ["avx2", "avx512_bf16"], True),
])
def test_onednn_follows_tensorflows_rule(monkeypatch, value, flags, expected):
    if value is None:
        monkeypatch.delenv("TF_ENABLE_ONEDNN_OPTS", raising=False)
    else:
        monkeypatch.setenv("TF_ENABLE_ONEDNN_OPTS", value)
    monkeypatch.setattr(environment, "cpu_info", lambda: {"model": "test cpu", "flags": flags})
    monkeypatch.setattr(environment.platform, "machine", lambda: "x86_64")
    assert environment.onednn_enabled() is expected
    assert environment.describe_kernels() == f"test cpu, oneDNN {'on' if expected else 'off'}"


def test_describe_names_packages_cpu_threads_and_weight_digests(tmp_path, monkeypatch):
    weights = tmp_path / "w.weights.h5"
    weights.write_bytes(b"\x00weights" * 1000)
    monkeypatch.setenv("TF_NUM_INTRAOP_THREADS", "1")
    env = environment.describe({"source": weights, "missing": tmp_path / "nope", "none": None})
    assert env["weights"] == {"source": "sha256:" + hashlib.sha256(weights.read_bytes()).hexdigest()[:16]}
    import numpy

    assert env["packages"]["numpy"] == numpy.__version__ and env["packages"]["tensorflow"].startswith("2.21")
    assert env["threads"]["TF_NUM_INTRAOP_THREADS"] == "1"
    text = environment.markdown(env)
    assert f"numpy {numpy.__version__}" in text and "source sha256:" in text and "oneDNN " in text
