"""Smaller things (issue 28, section 4): validation before any work, outputs checked for
writability first, out-of-memory messages that name what to change, no TensorFlow noise."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import layouts
import pytest
from badcase import check, reset_debug, run  # noqa: F401 - reset_debug: autouse fixture
from test_bad_runs import _copy, trained  # noqa: F401 - the shared trained-run fixture

ROOT = Path(__file__).resolve().parents[1]


def test_demo_seed_is_validated_before_anything_is_written(tmp_path, no_demo_work):
    check("demo-seed-negative", *run("demo", "--fast", "--out", tmp_path / "d", "--seed", "-1"), tmp_path)
    assert not (tmp_path / "d").exists()  # no demo_config.yaml left behind
    check("demo-seed-huge", *run("demo", "--fast", "--out", tmp_path / "d", "--seed", "5000000000"), tmp_path)
    assert not (tmp_path / "d").exists()  # it used to fail only after rendering and converting the data


def test_import_mxnet_checks_its_output_before_reading_the_params(tmp_path):
    (tmp_path / "f").write_text("a file, not a directory")
    (tmp_path / "model.params").write_bytes(b"not an mxnet file")  # would be the first error otherwise
    check("import-mxnet-out-unwritable", *run("weights", "import-mxnet", tmp_path / "model.params",
                                              "--out", tmp_path / "f" / "x.weights.h5"), tmp_path)
    code, out = run("weights", "import-mxnet", tmp_path / "model.params", "--out", tmp_path / "x.weights.h5")
    assert code == 1 and "model.params" in out, out  # a writable output: the params are read (and refused)


def test_evaluate_checks_its_output_before_evaluating(tmp_path, trained):  # noqa: F811
    exp, work = _copy(trained, tmp_path)
    (tmp_path / "f").write_text("a file")
    code, out = run("evaluate", "-c", exp, "--out", tmp_path / "f" / "e")
    check("evaluate-out-unwritable", code, out, tmp_path)
    assert "evaluate:" not in out  # before the model was loaded
    (work / "eval").write_text("a file where eval/ belongs")
    code, out = run("evaluate", "-c", exp)
    check("evaluate-default-out-unwritable", code, out, tmp_path)
    assert "evaluate:" not in out


def test_out_of_memory_names_the_config_and_the_keys(tmp_path, trained, monkeypatch):  # noqa: F811
    import tensorflow as tf

    from cbst_tf.train import steps

    exp, _ = _copy(trained, tmp_path)

    def host(*args, **kwargs):
        raise MemoryError()

    monkeypatch.setattr(steps, "run_pretrain", host)
    check("oom-host", *run("pretrain", "-c", exp, "--workdir", tmp_path / "w"), tmp_path)

    def device(*args, **kwargs):
        raise tf.errors.ResourceExhaustedError(
            None, None, "{{function_node __wrapped__Conv2D}} OOM when allocating tensor with shape[8,64,500,500] "
            "and type float on /job:localhost/replica:0/task:0/device:CPU:0 [Op:Conv2D]")

    monkeypatch.setattr(steps, "run_pretrain", device)
    code, out = run("pretrain", "-c", exp, "--workdir", tmp_path / "w")
    check("oom-device", code, out, tmp_path)
    assert "{{" not in out


def test_a_corrupt_image_message_has_no_tensorflow_function_node_text(tmp_path):
    layouts.write_gta5(tmp_path / "gta5", n=2)
    image = tmp_path / "gta5" / "images" / "00001.png"
    data = bytearray(image.read_bytes())
    data[len(data) // 2] ^= 0xFF
    image.write_bytes(bytes(data))
    code, out = run("data", "convert", "-f", "gta5", "--root", tmp_path / "gta5", "--out", tmp_path / "o")
    check("convert-corrupt-image", code, out, tmp_path)
    assert "{{" not in out and "function_node" not in out and "[Op:" not in out


@pytest.mark.timeout(300)
def test_tensorflows_harmless_error_lines_are_muted(tmp_path):
    """The console entry filters fd 2: TF's own E0000 lines (one of them produced here by TF itself,
    the other written as TF writes it in every demo round) are dropped, everything else passes."""
    unbounded = ("E0000 00:00:1796663839.316242    5398 node_def_util.cc:682] NodeDef mentions attribute "
                 "use_unbounded_threadpool which is not in the op definition: Op<name=MapDataset; "
                 "signature=input_dataset:variant> This may be expected if your graph generating binary is newer "
                 "than this binary. Unknown attributes will be ignored. NodeDef: {{node ParallelMapDatasetV2/_64}}")
    script = textwrap.dedent(f"""
        import os, sys
        from cbst_tf import cli
        real_app = cli.app

        def noisy(args, prog_name):
            cli.common.quiet_tensorflow()  # as every command that needs TensorFlow imports it
            import tensorflow as tf
            x = tf.image.resize(tf.cast(tf.ones([1, 8, 8, 3], tf.float16), tf.float32), [4, 4])  # oneDNN DT_HALF
            os.write(2, b"partial progress\\r")
            os.write(2, {unbounded!r}.encode()[:40])
            os.write(2, {unbounded!r}.encode()[40:] + b"\\n")
            os.write(2, b"still here\\n")
            real_app(args=args, prog_name=prog_name)

        cli.app = noisy
        sys.argv = ["cbst-tf", "config", "show", "--set", "trian.lr=1"]
        cli.main()
    """)
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    env.pop("TF_CPP_MIN_LOG_LEVEL", None)  # as a user's shell has it
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, env=env, timeout=240)
    output = (proc.stdout + proc.stderr).decode()
    check("tf-noise-rounds", proc.returncode, output, tmp_path)
    assert "E0000" not in output and "use_unbounded_threadpool" not in output and "DT_HALF" not in output
    assert "partial progress\rstill here\n" in output
