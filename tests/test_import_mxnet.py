"""``cbst-tf weights import-mxnet``: the .params reader, the name mapping and its errors.

Parity is checked against an independent forward pass of the official network
(``tests/mxnet_reference.py``: plain numpy, float64, written from the official symbol's
structure, not from our Keras model). Cross-checked once against MXNet 1.9.1 itself
(``tests/oracles/mxnet_fcrna_a1.py`` building ``fcrna_model_a1`` from MXNet symbols with
CBST's BN eps 1.001e-5; run by ``test_parity_with_mxnet`` when ``CBST_MXNET_PYTHON`` names a
Python with MXNet), on this machine:

* MXNet's ``mx.nd.save`` of what it loaded from our writer's file is byte-identical to it;
* random official weights, width 1.0: relative logit error 1.6e-6 (19 classes, 61x83 input)
  and 1.6e-6 (16 classes, 45x77), arg-max identical at every pixel; width 0.125 (37x45):
  4.9e-7. With the VGG mean instead of the official one: 3.4e-3 (random weights).
"""

from __future__ import annotations

import os
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from mxnet_reference import encode_array, encode_params, official_arrays, official_forward, write_params
from typer.testing import CliRunner

from cbst_tf import cli
from cbst_tf.errors import CbstError
from cbst_tf.labels import SYNTHIA16_TRAIN_IDS
from cbst_tf.models import build_model
from cbst_tf.models.import_mxnet import (
    ABSENT_CLASS_BIAS,
    OFFICIAL_BN_EPSILON,
    OFFICIAL_MEAN,
    assign_params,
    import_mxnet,
)
from cbst_tf.models.mxnet_params import read_params
from cbst_tf.models.normalization import NormalizationWarning, read_normalization
from cbst_tf.models.weights import load_checkpoint

WIDTH = 0.125
DATA = Path(__file__).parent / "data"


def small_model(classes: int, **kw):
    opts = dict(freeze_bn=True, mean=OFFICIAL_MEAN, bn_epsilon=OFFICIAL_BN_EPSILON, upsample=False)
    opts.update(kw)
    return build_model("resnet38", classes, WIDTH, **opts)


def rel_err(a, b) -> float:
    return float(np.abs(np.asarray(a, np.float64) - b).max() / np.abs(b).max())


# ----------------------------------------------------------------------------- reader


def test_reads_a_file_written_by_mxnet():
    """tests/data/mxnet-1.9.1-save.params was written by MXNet 1.9.1's mx.nd.save."""
    got = read_params(DATA / "mxnet-1.9.1-save.params")
    want = {
        "arg:conv_weight": np.arange(24, dtype=np.float32).reshape(2, 3, 2, 2) / 8 - 1,
        "arg:b_f64": np.array([1.5, -2.25]),
        "aux:h_f16": np.array([0.5, 3.0, -7.0], np.float16),
        "aux:i_i32": np.arange(-2, 4, dtype=np.int32).reshape(3, 2),
        "arg:u_u8": np.array([0, 7, 255], np.uint8),
        "arg:i8": np.array([-128, 5, 127], np.int8),
        "arg:i64": np.array([2**40, -3], np.int64),
    }
    assert list(got) == list(want)
    for key, value in want.items():
        assert got[key].dtype == value.dtype and got[key].shape == value.shape, key
        np.testing.assert_array_equal(got[key], value)


def test_writer_matches_mxnet_bytes():
    """Our test writer produces MXNet's exact bytes, so fixtures it writes are real .params files."""
    raw = (DATA / "mxnet-1.9.1-save.params").read_bytes()
    assert encode_params(read_params(DATA / "mxnet-1.9.1-save.params")) == raw


@pytest.mark.parametrize("version", ["v1", "v2", "v3", "legacy"])
def test_all_ndarray_versions_round_trip(tmp_path, version):
    rng = np.random.default_rng(0)
    arrays = {"arg:w": rng.standard_normal((3, 2, 1, 5)).astype(np.float32),
              "aux:v": np.arange(7, dtype=np.int64), "arg:h": rng.standard_normal(4).astype(np.float16)}
    got = read_params(write_params(tmp_path / "x.params", arrays, version))
    for key, value in arrays.items():
        assert got[key].dtype == value.dtype
        np.testing.assert_array_equal(got[key], value)


def _error(tmp_path, data: bytes) -> str:
    path = tmp_path / "bad.params"
    path.write_bytes(data)
    with pytest.raises(CbstError) as info:
        read_params(path)
    msg = str(info.value)
    assert "\n" not in msg and msg.startswith(str(path))
    return msg


def test_reader_errors_are_one_line_and_name_the_file(tmp_path):
    good = encode_params({"arg:a": np.ones((2, 3), np.float32), "aux:b": np.zeros(4, np.float32)})
    assert "not found" in str(pytest.raises(CbstError, read_params, tmp_path / "nope.params").value)
    assert "0 bytes, shorter than the header" in _error(tmp_path, b"")
    assert "not an MXNet .params file" in _error(tmp_path, b"\x89HDF\r\n\x1a\n" + bytes(64))  # an HDF5 file
    assert "not an MXNet .params file" in _error(tmp_path, b"\x12\x01")
    # Truncated anywhere: in the header, an array's shape, its data, the names.
    for cut in (20, 36, 60, len(good) - 3):
        assert "truncated" in _error(tmp_path, good[:cut]), cut
    assert "unexpected bytes" in _error(tmp_path, good + b"\0")
    # A plain list (mx.nd.save of a list) has no names.
    assert "no names" in _error(tmp_path, struct.pack("<QQQ", 0x112, 0, 1) + encode_array(np.ones(2, np.float32))
                                + struct.pack("<Q", 0))
    one = struct.pack("<QQQ", 0x112, 0, 1)
    names = struct.pack("<QQ", 1, 5) + b"arg:a"
    assert "sparse" in _error(tmp_path, one + encode_array(np.ones(2, np.float32), stype=1) + names)
    assert "dtype code 12" in _error(tmp_path, one + encode_array(np.ones(2, np.float32), dtype_code=12) + names)
    two = struct.pack("<QQQ", 0x112, 0, 2) + 2 * encode_array(np.ones(2, np.float32))
    assert "duplicate array name 'arg:a'" in _error(tmp_path, two + struct.pack("<Q", 2) + 2 * names[8:])
    assert "not valid UTF-8" in _error(tmp_path, one + encode_array(np.ones(2, np.float32))
                                       + struct.pack("<QQ", 1, 2) + b"\xff\xfe")


# ----------------------------------------------------------------------------- mapping


@pytest.mark.parametrize("classes,hw", [(19, (37, 45)), (16, (29, 51))])
def test_import_matches_the_official_forward_pass(tmp_path, classes, hw):
    """Random official weights through the reader and the mapping: our logits equal the
    independent numpy forward pass of fcrna_model_a1 (odd sizes, reduced width)."""
    arrays = official_arrays(classes, WIDTH, seed=classes)
    path = write_params(tmp_path / "m.params", arrays)
    model = small_model(classes)
    report = assign_params(model, read_params(path), path)
    assert (report.arrays_read, report.arrays_used, report.skipped) == (195, 195, [])
    image = np.random.default_rng(1).uniform(0, 255, (1, *hw, 3)).astype(np.float32)
    ours = model(image).numpy()
    ref = official_forward(image, arrays, classes, WIDTH)
    assert ours.shape == ref.shape == (1, -(-hw[0] // 8), -(-hw[1] // 8), classes)
    assert rel_err(ours, ref) <= 1e-5
    np.testing.assert_array_equal(ours.argmax(-1), ref.argmax(-1))
    # The official normalisation matters: the VGG mean moves the logits measurably.
    vgg = small_model(classes, mean=(123.68, 116.78, 103.94))
    vgg.set_weights(model.get_weights())
    assert rel_err(vgg(image).numpy(), ref) > 1e-4  # 10x the tolerance; the import is at ~5e-7


def test_imagenet_trunk_import_skips_linear1000_and_keeps_a_fresh_head(tmp_path):
    arrays = official_arrays(None, WIDTH, seed=4, imagenet=True)
    assert len(arrays) == 193
    path = write_params(tmp_path / "ilsvrc.params", arrays)
    model = small_model(19)
    fresh = [w.copy() for w in model.get_layer("classifier_score").get_weights()]
    report = assign_params(model, read_params(path), path)
    assert report.skipped == ["arg:linear1000_bias", "arg:linear1000_weight"]
    assert report.fresh_layers == ["classifier_conv6a", "classifier_score"] and report.arrays_used == 191
    for got, want in zip(model.get_layer("classifier_score").get_weights(), fresh, strict=True):
        np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(model.get_layer("res7a_branch2b2").get_weights()[0],
                                  arrays["arg:res7a_branch2b2_weight"].transpose(2, 3, 1, 0))
    np.testing.assert_array_equal(model.get_layer("bn4b5_branch2b1").get_weights()[3],
                                  arrays["aux:bn4b5_branch2b1_moving_var"])


def test_synthia16_widens_to_the_19_train_ids(tmp_path):
    arrays = official_arrays(16, WIDTH, seed=6)
    path = write_params(tmp_path / "synthia.params", arrays)
    model = small_model(19)
    report = assign_params(model, read_params(path), path)
    assert report.expanded_from == SYNTHIA16_TRAIN_IDS
    image = np.random.default_rng(2).uniform(0, 255, (1, 27, 35, 3)).astype(np.float32)
    ours = model(image).numpy()
    ref = official_forward(image, arrays, 16, WIDTH)
    assert rel_err(ours[..., list(SYNTHIA16_TRAIN_IDS)], ref) <= 1e-5
    absent = [c for c in range(19) if c not in SYNTHIA16_TRAIN_IDS]
    assert np.all(ours[..., absent] == ABSENT_CLASS_BIAS)
    np.testing.assert_array_equal(np.asarray(SYNTHIA16_TRAIN_IDS)[ref.argmax(-1)], ours.argmax(-1))


def _assign_error(tmp_path, arrays, classes=19) -> str:
    path = write_params(tmp_path / "bad.params", arrays)
    with pytest.raises(CbstError) as info:
        assign_params(small_model(classes), read_params(path), path)
    msg = str(info.value)
    assert msg.startswith(str(path)) and "\n" not in msg
    return msg


def test_mapping_errors_name_the_file_and_the_array(tmp_path):
    arrays = official_arrays(19, WIDTH, seed=0)
    missing = {k: v for k, v in arrays.items() if k != "aux:bn5b2_branch2b1_moving_mean"}
    assert "missing array 'aux:bn5b2_branch2b1_moving_mean'" in _assign_error(tmp_path, missing)
    extra = {**arrays, "arg:res8a_branch2a_weight": np.ones((1, 1, 1, 1), np.float32)}
    assert "unexpected array 'arg:res8a_branch2a_weight'" in _assign_error(tmp_path, extra)
    wrong = {**arrays, "arg:res3b1_branch2a_weight": np.ones((32, 32, 1, 3), np.float32)}
    msg = _assign_error(tmp_path, wrong)
    assert "'arg:res3b1_branch2a_weight' has shape (32, 32, 1, 3), the model expects (32, 32, 3, 3)" in msg
    two = {**arrays, "arg:linear16_weight": arrays["arg:linear19_weight"][:16],
           "arg:linear16_bias": arrays["arg:linear19_bias"][:16]}
    assert "more than one classifier (linear16, linear19)" in _assign_error(tmp_path, two)
    assert "has 19 classes, the model 7" in _assign_error(tmp_path, arrays, classes=7)
    nohead = {k: v for k, v in arrays.items() if not k.startswith("arg:linear")}
    assert "no classifier" in _assign_error(tmp_path, nohead)


# ----------------------------------------------------------------------------- command


def test_import_command_errors(tmp_path):
    arrays = official_arrays(19, WIDTH, seed=0)
    path = write_params(tmp_path / "m.params", arrays)
    with pytest.raises(CbstError, match="import needs 1.0"):
        import_mxnet(path, tmp_path / "x.weights.h5", width=0.5)
    with pytest.raises(CbstError, match="official MXNet models are ResNet-38"):
        import_mxnet(path, tmp_path / "x.weights.h5", model="fcn8s_vgg16")
    with pytest.raises(CbstError, match="must end in .weights.h5"):
        import_mxnet(path, tmp_path / "x.h5")
    # A width-0.125 file against the full-width model: a shape error, nothing written.
    with pytest.raises(CbstError, match=r"'arg:conv1a_weight' has shape \(8, 3, 3, 3\), the model expects "
                                        r"\(64, 3, 3, 3\) \(official models need resnet38 at width 1.0\)"):
        import_mxnet(path, tmp_path / "x.weights.h5")
    assert not list(tmp_path.glob("*.h5"))

    runner = CliRunner()
    truncated = tmp_path / "cut.params"
    truncated.write_bytes(path.read_bytes()[:5000])
    result = runner.invoke(cli.app, ["weights", "import-mxnet", str(truncated), "--out", str(tmp_path / "y.weights.h5")])
    assert result.exit_code == 1
    assert result.output.strip().splitlines() == [result.output.strip()]
    assert result.output.startswith(f"error: {truncated}: truncated .params file")
    result = runner.invoke(cli.app, ["weights", "import-mxnet", str(path), "--out", str(tmp_path / "y.weights.h5"),
                                     "--num-classes", "many"])
    assert result.exit_code == 2


@pytest.mark.slow
def test_full_width_import_command_and_normalisation_warning(tmp_path):
    """The real path at the released size (width 1.0, 195 arrays, 124M parameters, ~500 MB):
    the command writes a .weights.h5 that `load_checkpoint` accepts, with logits equal to the
    official forward pass, and the recorded normalisation warns under the VGG mean."""
    arrays = official_arrays(19, 1.0, seed=7)
    path = write_params(tmp_path / "gta_rna-a1_cls19_s8_ep-0000.params", arrays)
    out = tmp_path / "gta.weights.h5"
    result = CliRunner().invoke(cli.app, ["weights", "import-mxnet", str(path), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert f"imported 195 of 195 arrays from {path}" in result.output
    norm = read_normalization(out)
    assert norm.mean == OFFICIAL_MEAN and norm.bn_epsilon == OFFICIAL_BN_EPSILON
    del arrays
    model = build_model("resnet38", 19, 1.0, freeze_bn=True, mean=OFFICIAL_MEAN, bn_epsilon=OFFICIAL_BN_EPSILON,
                        upsample=False)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error", NormalizationWarning)
        load_checkpoint(model, out)
    image = np.random.default_rng(3).uniform(0, 255, (1, 13, 19, 3)).astype(np.float32)
    ref = official_forward(image, read_params(path), 19, 1.0)
    ours = model(image).numpy()
    assert rel_err(ours, ref) <= 1e-5
    np.testing.assert_array_equal(ours.argmax(-1), ref.argmax(-1))
    vgg = build_model("resnet38", 19, 1.0, freeze_bn=True, upsample=False)
    with pytest.warns(NormalizationWarning, match=r"mean \[123.68, 116.78, 103.94\].*set data.image_mean.*"
                                                  r"BatchNorm epsilon 1e-05 \(weights: 1.001e-05"):
        load_checkpoint(vgg, out)


@pytest.mark.skipif(not os.environ.get("CBST_MXNET_PYTHON"),
                    reason="set CBST_MXNET_PYTHON to a Python with mxnet==1.9.1 (test-only oracle)")
def test_parity_with_mxnet(tmp_path):
    """Our import against MXNet's own forward pass of fcrna_model_a1 (see the module docstring)."""
    arrays = official_arrays(19, WIDTH, seed=9)
    path = write_params(tmp_path / "m.params", arrays)
    image = np.random.default_rng(4).uniform(0, 255, (1, 37, 45, 3)).astype(np.float32)
    np.save(tmp_path / "image.npy", image)
    script = Path(__file__).parent / "oracles" / "mxnet_fcrna_a1.py"
    subprocess.run([os.environ["CBST_MXNET_PYTHON"], str(script), str(path), str(tmp_path / "image.npy"), "19",
                    str(WIDTH), str(tmp_path / "out.npy")], check=True, capture_output=True, timeout=300)
    assert (tmp_path / "out.npy.resaved.params").read_bytes() == path.read_bytes()
    mx_logits = np.load(tmp_path / "out.npy")
    model = small_model(19)
    assign_params(model, read_params(path), path)
    ours = model(image).numpy()
    assert rel_err(ours, mx_logits) <= 1e-5
    np.testing.assert_array_equal(ours.argmax(-1), mx_logits.argmax(-1))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__, "-q"]))
