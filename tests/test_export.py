"""``cbst-tf export``: the SavedModel, loaded by a fresh process that imports only TensorFlow,
gives ``predict``'s classes exactly and its probabilities to 1e-5 on two image sizes, through
both signatures and the REST payload of docs/EXPORT.md; ``saved_model_cli`` lists both signatures; the
metadata is reachable; TFLite converts ResNet-38 and names the op that stops FCN-8s."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from badcase import check, reset_debug, run  # noqa: F401 - reset_debug is an autouse fixture
from tiny import MEAN, WIDTH, random_image, save_weights, write_config

ROOT = Path(__file__).resolve().parents[1]
SIZES = [(32, 48), (27, 37)]
#: Scales and flip: the test passes must be in the graph.
PASSES = {"eval": {"scales": [0.75, 1.0], "flip": True}}

# Run by a fresh interpreter: nothing but TensorFlow (and numpy) is imported here.
LOADER = r'''
import base64, json, sys
import numpy as np
import tensorflow as tf

saved_model, payload_file, result_file, *images = sys.argv[1:]
keras_before = {m for m in sys.modules if m.split(".")[0] == "keras"}
model = tf.saved_model.load(saved_model)
assert not [m for m in sys.modules if m.split(".")[0] == "cbst_tf"]
# TensorFlow 2.21 imports parts of Keras itself on `import tensorflow`; loading adds none.
assert {m for m in sys.modules if m.split(".")[0] == "keras"} == keras_before
out = {}
for i, path in enumerate(images):
    data = open(path, "rb").read()
    r = model.signatures["serving_default"](images=tf.io.decode_png(data, channels=3)[tf.newaxis])
    out[f"ids{i}"], out[f"probs{i}"] = r["class_ids"].numpy(), r["probabilities"].numpy()
    b = model.signatures["serving_bytes"](image_bytes=tf.constant([data]))
    out[f"bytes_ids{i}"], out[f"bytes_probs{i}"] = b["class_ids"].numpy(), b["probabilities"].numpy()
# The REST request as TF Serving reads it: row format, {"b64": ...} -> bytes, one tensor per input.
request = json.load(open(payload_file))
signature = model.signatures[request.get("signature_name", "serving_default")]
(name,) = signature.structured_input_signature[1]
rows = [base64.b64decode(x["b64"]) if isinstance(x, dict) else x for x in request["instances"]]
response = signature(**{name: tf.constant(rows)})
out["rest_ids"] = response["class_ids"].numpy()
meta = json.loads(model.metadata_json[0].numpy())
out["meta"] = np.array(json.dumps({
    "class_names": [c.decode() for c in model.class_names[0].numpy()],
    "train_id_to_label_id": model.train_id_to_label_id[0].numpy().tolist(),
    "mean": model.normalization_mean[0].numpy().tolist(), "width": meta["config"]["model"]["width"],
    "passes": meta["test_passes"]}))
np.savez(result_file, **out)
'''


def doc_request_script() -> str:
    """The Python that docs/EXPORT.md's REST example runs to build ``request.json``."""
    text = (ROOT / "docs" / "EXPORT.md").read_text()
    m = re.search(r"python3 - <<'EOF' > request\.json\n(.*?)\nEOF\n", text, re.S)
    assert m, "docs/EXPORT.md: the REST request example is missing"
    return m.group(1)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    root = tmp_path_factory.mktemp("export")
    rng = np.random.default_rng(0)
    (root / "imgs").mkdir()
    paths = []
    for i, hw in enumerate(SIZES):
        paths.append(root / "imgs" / f"berlin_{i:06d}_000019_leftImg8bit.png")
        assert cv2.imwrite(str(paths[-1]), random_image(rng, hw)[..., ::-1])
    weights = save_weights(root / "w.weights.h5")
    cfg = write_config(root / "exp.yaml", **PASSES)
    code, out = run("export", "-c", cfg, "-w", weights, "--out", root / "model")
    assert code == 0, out
    code, out = run("predict", "-c", cfg, "-w", weights, "--input", root / "imgs", "--out", root / "pred",
                    "--format", "trainids")
    assert code == 0, out
    # docs/EXPORT.md's request, built in a folder holding the image it names.
    (root / "client").mkdir()
    (root / "client" / "berlin_000000_000019_leftImg8bit.png").write_bytes(paths[0].read_bytes())
    payload = subprocess.run([sys.executable, "-c", doc_request_script()], cwd=root / "client",
                             capture_output=True, text=True, check=True).stdout
    (root / "request.json").write_text(payload)
    (root / "loader.py").write_text(LOADER)
    subprocess.run([sys.executable, str(root / "loader.py"), str(root / "model" / "1"), str(root / "request.json"),
                    str(root / "result.npz"), *map(str, paths)], check=True, cwd=root)
    return {"root": root, "paths": paths, "weights": weights, "cfg": cfg,
            "result": dict(np.load(root / "result.npz"))}


def test_fresh_tensorflow_process_gets_predicts_classes_and_probabilities(exported):
    import tensorflow as tf

    from cbst_tf.config import load_config
    from cbst_tf.evaluate.configured import load_model
    from cbst_tf.predict.run import Predictor

    result = exported["result"]
    cfg = load_config(exported["cfg"])
    predictor = Predictor(cfg, load_model(cfg, exported["weights"]))
    for i, path in enumerate(exported["paths"]):
        want = cv2.imread(str(exported["root"] / "pred" / "trainids" / f"berlin_{i:06d}_000019_trainIds.png"),
                          cv2.IMREAD_UNCHANGED)
        assert want.shape == SIZES[i] and len(np.unique(want)) >= 3
        np.testing.assert_array_equal(result[f"ids{i}"][0], want)
        np.testing.assert_array_equal(result[f"bytes_ids{i}"][0], want)
        from cbst_tf.inference import protocol_probs

        image = tf.io.decode_png(path.read_bytes(), channels=3).numpy().astype(np.float32)
        probs = protocol_probs(predictor.model, image, cfg.eval.scales, cfg.eval.flip)
        assert result[f"probs{i}"].shape == (1, *SIZES[i], 19)
        np.testing.assert_allclose(result[f"probs{i}"][0], probs, atol=1e-5, rtol=0)
        np.testing.assert_allclose(result[f"bytes_probs{i}"][0], probs, atol=1e-5, rtol=0)
    # docs/EXPORT.md's REST payload, as TF Serving decodes it, against the serving_bytes signature.
    np.testing.assert_array_equal(result["rest_ids"], result["ids0"])


def test_metadata_is_reachable_from_the_loaded_model(exported):
    meta = json.loads(str(exported["result"]["meta"]))
    assert meta["class_names"][:3] == ["road", "sidewalk", "building"] and len(meta["class_names"]) == 19
    assert meta["train_id_to_label_id"] == [7, 8, 11, 12, 13, 17, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 31, 32, 33]
    assert meta["mean"] == pytest.approx(MEAN) and meta["width"] == WIDTH
    assert meta["passes"]["scales"] == [0.75, 1.0] and meta["passes"]["flip"] is True
    on_disk = json.loads((exported["root"] / "model" / "1" / "assets.extra" / "cbst_metadata.json").read_text())
    assert on_disk["classes"]["channel_train_ids"] == list(range(19))
    marker = json.loads((exported["root"] / "model" / ".cbst-tf-out.json").read_text())
    assert marker["tool"] == "cbst-tf" and marker["command"] == "export" and marker["written"] == ["1"]


def test_saved_model_cli_lists_both_signatures(exported):
    cli = Path(sys.executable).parent / "saved_model_cli"
    shown = subprocess.run([str(cli), "show", "--dir", str(exported["root"] / "model" / "1"), "--all"],
                           capture_output=True, text=True, check=True).stdout
    for signature, tensor, dtype in (("serving_default", "images", "DT_UINT8"),
                                     ("serving_bytes", "image_bytes", "DT_STRING")):
        block = shown.split(f"signature_def['{signature}']:", 1)[1].split("signature_def[", 1)[0]
        assert f"inputs['{tensor}']" in block and dtype in block
        assert "outputs['class_ids']" in block and "outputs['probabilities']" in block


def test_reexport_replaces_only_its_own_output(exported, tmp_path):
    model = exported["root"] / "model"
    before = (model / "1" / "saved_model.pb").stat().st_mtime_ns
    code, out = run("export", "-c", exported["cfg"], "-w", exported["weights"], "--out", model)
    assert code == 0, out
    assert (model / "1" / "saved_model.pb").stat().st_mtime_ns != before
    assert sorted(p.name for p in model.iterdir()) == [".cbst-tf-out.json", "1"]
    mine = tmp_path / "mine"
    (mine / "1").mkdir(parents=True)
    (mine / "1" / "saved_model.pb").write_bytes(b"someone else's model")
    code, out = run("export", "-c", exported["cfg"], "-w", exported["weights"], "--out", mine)
    check("export-out-not-ours", code, out, tmp_path)
    assert (mine / "1" / "saved_model.pb").read_bytes() == b"someone else's model"
    code, out = run("export", "-c", exported["cfg"], "-w", exported["weights"], "--out", tmp_path / "x",
                    "--input-size", "32x48")
    check("export-input-size-saved-model", code, out, tmp_path)


def test_tflite_fcn8s_names_the_op_it_cannot_convert(tmp_path):
    weights = save_weights(tmp_path / "w.weights.h5")
    cfg = write_config(tmp_path / "exp.yaml")
    code, out = run("export", "-c", cfg, "-w", weights, "--out", tmp_path / "lite", "--format", "tflite",
                    "--input-size", "32x48")
    check("export-tflite-unsupported-op", code, out, tmp_path)
    assert not (tmp_path / "lite" / "model.tflite").exists()


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::UserWarning")  # tf.lite.Interpreter's deprecation notice (LiteRT)
def test_tflite_resnet38_matches_tensorflow(tmp_path):
    import tensorflow as tf

    from cbst_tf.config import load_config
    from cbst_tf.evaluate.configured import load_model
    from cbst_tf.predict.run import Predictor

    weights = save_weights(tmp_path / "w.weights.h5", name="resnet38")
    cfg = write_config(tmp_path / "exp.yaml", name="resnet38")
    code, out = run("export", "-c", cfg, "-w", weights, "--out", tmp_path / "lite", "--format", "tflite",
                    "--input-size", "32x48")
    assert code == 0, out
    meta = json.loads((tmp_path / "lite" / "metadata.json").read_text())
    assert meta["tflite"]["input_size"] == [32, 48] and meta["tflite"]["check"]["max_probability_difference"] < 1e-4
    # Independently of the export's own check: the interpreter's classes equal predict's.
    image = random_image(np.random.default_rng(7), (32, 48))
    interpreter = tf.lite.Interpreter(model_path=str(tmp_path / "lite" / "model.tflite"))
    got = interpreter.get_signature_runner("serving_default")(images=image[None])
    cfg_ = load_config(cfg)
    ids, _ = Predictor(cfg_, load_model(cfg_, weights)).train_ids(image)
    assert got["probabilities"].dtype == np.float32 and got["class_ids"].shape == (1, 32, 48)
    assert np.mean(got["class_ids"][0] == ids) > 0.999


GRAPH_PROTOCOLS = {  # --set flags, and whether the graph must equal predict bit for bit
    "long-side": (["eval.long_side=40", "eval.flip=true"], True),
    "official-flip": (["eval.upsample=bicubic_probs", "eval.flip=true"], True),
    "official-scales": (["eval.upsample=bicubic_probs", "eval.scales=[0.5,1.0]"], True),
    "official-long-side": (["eval.upsample=bicubic_probs", "eval.long_side=40"], False),  # PIL resizes the image
    "synthia16": (["eval.protocol=synthia16", "eval.scales=[0.75,1.0]"], True),
    "nthu13": (["eval.protocol=nthu13"], True),
}


@pytest.mark.parametrize("protocol", list(GRAPH_PROTOCOLS))
def test_graph_passes_equal_predict_under_each_protocol(exported, protocol):
    """The in-graph test passes of every protocol against predict's (in process; the exported file
    itself is checked above)."""
    import tensorflow as tf

    from cbst_tf.config import load_config
    from cbst_tf.evaluate.configured import load_model
    from cbst_tf.export.graph import IMAGES, serving_fns
    from cbst_tf.inference import protocol_probs
    from cbst_tf.predict.run import Predictor

    sets, exact = GRAPH_PROTOCOLS[protocol]
    cfg = load_config(exported["cfg"], sets)
    predictor = Predictor(cfg, load_model(cfg, exported["weights"]))
    serve = tf.function(serving_fns(predictor.model, cfg)[0], input_signature=[IMAGES])
    e = cfg.eval
    for path in exported["paths"]:
        image = cv2.imread(str(path))[..., ::-1].copy()
        got = serve(tf.constant(image[None]))
        ids, _ = predictor.train_ids(image)
        probs = protocol_probs(predictor.model, image.astype(np.float32), e.scales, e.flip, upsample=e.upsample,
                               long_side=e.long_side)
        same = np.mean(got["class_ids"][0].numpy() == ids)
        if exact:
            assert same == 1.0
            np.testing.assert_allclose(got["probabilities"][0].numpy(), probs, atol=1e-5, rtol=0)
        else:  # PIL's 8-bit resize, matched up to one grey level on a few pixels
            assert same > 0.99
            np.testing.assert_allclose(got["probabilities"][0].numpy(), probs, atol=2e-2, rtol=0)
