"""``cbst-tf predict``: the same classes as ``evaluate``, every output format against a plain
model call, SYNTHIA's 16 classes, shards, reruns, bounded streaming and the --out rules."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from badcase import check, reset_debug, run  # noqa: F401 - reset_debug is an autouse fixture
from tiny import MEAN, WIDTH, random_image, save_weights, write_config

from cbst_tf.labels import PALETTE, SYNTHIA16_TRAIN_IDS, TRAIN_ID_TO_LABEL_ID

SIZES = [(24, 32), (20, 28), (27, 35)]
CITIES = ("aachen", "bremen", "aachen")


def write_images(root: Path, seed: int = 0) -> dict[str, np.ndarray]:
    """Cityscapes-layout images of mixed sizes: {stem: RGB}."""
    rng, images = np.random.default_rng(seed), {}
    for i, (hw, city) in enumerate(zip(SIZES, CITIES, strict=True)):
        stem = f"{city}_{i:06d}_000019"
        img = random_image(rng, hw)
        path = root / "leftImg8bit" / "val" / city / f"{stem}_leftImg8bit.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        assert cv2.imwrite(str(path), img[..., ::-1])
        lab = root / "gtFine" / "val" / city / f"{stem}_gtFine_labelIds.png"
        lab.parent.mkdir(parents=True, exist_ok=True)
        assert cv2.imwrite(str(lab), rng.integers(0, 34, hw).astype(np.uint8))
        images[stem] = img
    return images


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    from cbst_tf.data.convert import convert_dataset

    root = tmp_path_factory.mktemp("predict")
    images = write_images(root / "cs")
    convert_dataset("cityscapes", root / "cs", root / "tfr", split="val", shards=2)
    weights = save_weights(root / "w.weights.h5")
    cfg = write_config(root / "exp.yaml", data={"target_eval": str(root / "tfr")})
    return {"root": root, "images": images, "weights": weights, "cfg": cfg,
            "folder": root / "cs" / "leftImg8bit" / "val", "tfr": root / "tfr"}


def predict(world, *args) -> tuple[int, str]:
    return run("predict", "-c", world["cfg"], "-w", world["weights"], *args)


def read(path: Path) -> np.ndarray:
    out = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    assert out is not None, path
    return out


def reference_probs(weights: Path, image: np.ndarray, num_classes: int = 19) -> np.ndarray:
    """A plain Keras call of the network (the slow, obvious reference), softmax over classes."""
    import tensorflow as tf

    from cbst_tf.models import build_model

    model = build_model("fcn8s_vgg16", num_classes, width=WIDTH, dropout=0.0, mean=MEAN)
    model.load_weights(weights)
    return tf.nn.softmax(model(image[None].astype(np.float32), training=False)[0], axis=-1).numpy()


PROTOCOLS = {
    "default": [],
    "multi-scale-flip": ["--set", "eval.scales=[0.75,1.0]", "--set", "eval.flip=true"],
    "official-long-side": ["--set", "eval.upsample=bicubic_probs", "--set", "eval.long_side=40",
                           "--set", "eval.flip=true"],
}


@pytest.mark.parametrize("protocol", list(PROTOCOLS))
def test_same_classes_as_evaluate_save_predictions(world, tmp_path, protocol):
    sets = PROTOCOLS[protocol]
    code, out = run("evaluate", "-c", world["cfg"], "-w", world["weights"], "--save-predictions", "all",
                    "--out", tmp_path / "eval", *sets)
    assert code == 0, out
    for name, source in (("folder", world["folder"]), ("tfr", world["tfr"])):
        code, out = predict(world, "--input", source, "--out", tmp_path / name, "--format", "trainids", *sets)
        assert code == 0, out
    classes = set()
    for stem, city in zip(world["images"], CITIES, strict=True):
        evaluated = read(tmp_path / "eval" / "predictions" / f"{stem}_leftImg8bit_trainIds.png")
        from_folder = read(tmp_path / "folder" / "trainids" / city / f"{stem}_trainIds.png")
        from_records = read(tmp_path / "tfr" / "trainids" / "leftImg8bit" / "val" / city / f"{stem}_trainIds.png")
        assert from_folder.shape == world["images"][stem].shape[:2]
        np.testing.assert_array_equal(from_folder, evaluated)
        np.testing.assert_array_equal(from_records, evaluated)
        classes |= set(np.unique(evaluated).tolist())
    assert len(classes) >= 3  # a comparison of mostly one class would prove little


def test_formats_gray_rgba_jpeg_against_a_plain_model_call(world, tmp_path):
    rng = np.random.default_rng(5)
    src = tmp_path / "in"
    (src / "sub").mkdir(parents=True)
    rgb = random_image(rng, (22, 30))
    gray = random_image(rng, (18, 26))[..., 0]
    rgba = np.dstack([random_image(rng, (20, 24)), rng.integers(0, 256, (20, 24), dtype=np.uint8)])
    assert cv2.imwrite(str(src / "sub" / "photo.jpg"), rgb[..., ::-1])
    assert cv2.imwrite(str(src / "gray.png"), gray)
    assert cv2.imwrite(str(src / "alpha.png"), rgba[..., [2, 1, 0, 3]])
    (src / "notes.txt").write_text("not an image, not listed")
    code, out = predict(world, "--input", src, "--out", tmp_path / "o", "--format",
                        "trainids,labelids,color,overlay,confidence")
    assert code == 0, out
    import tensorflow as tf

    decoded = {  # what the model sees: gray replicated, alpha dropped, JPEG as TF decodes it
        "sub/photo": tf.io.decode_image((src / "sub" / "photo.jpg").read_bytes(), channels=3).numpy(),
        "gray": np.repeat(gray[..., None], 3, axis=2), "alpha": rgba[..., :3]}
    for rel, image in decoded.items():
        probs = reference_probs(world["weights"], image)
        ids = np.argmax(probs, axis=-1)
        o = tmp_path / "o"
        folder, stem = os.path.split(rel)
        np.testing.assert_array_equal(read(o / "trainids" / folder / f"{stem}_trainIds.png"), ids)
        labels = np.vectorize(TRAIN_ID_TO_LABEL_ID.get)(ids)
        np.testing.assert_array_equal(read(o / "labelids" / folder / f"{stem}_labelIds.png"), labels)
        color = PALETTE[ids]
        np.testing.assert_array_equal(read(o / "color" / folder / f"{stem}_color.png")[..., ::-1], color)
        overlay = read(o / "overlay" / folder / f"{stem}_overlay.png")[..., ::-1].astype(int)
        assert np.abs(overlay - (image.astype(int) + color) / 2).max() <= 0.5
        confidence = read(o / "confidence" / folder / f"{stem}_confidence.png").astype(int)
        assert confidence.shape == ids.shape and np.abs(confidence - probs.max(-1) * 255).max() <= 0.51
    assert sorted(p.name for p in (tmp_path / "o").iterdir()) == [
        ".cbst-tf-out.json", "color", "confidence", "labelids", "overlay", "trainids"]
    marker = json.loads((tmp_path / "o" / ".cbst-tf-out.json").read_text())
    assert marker["tool"] == "cbst-tf" and marker["command"] == "predict"
    assert marker["command_line"].split()[0] == "cbst-tf"  # sys.argv of the test process follows
    assert marker["written"] == ["color", "confidence", "labelids", "overlay", "trainids"]


def test_synthia_16_classes_map_to_cityscapes_label_ids(world, tmp_path):
    image = random_image(np.random.default_rng(9), (24, 32))
    src = tmp_path / "in"
    src.mkdir()
    assert cv2.imwrite(str(src / "frame.png"), image[..., ::-1])
    # A 19-channel model read by the synthia16 protocol never predicts terrain, truck or train.
    code, out = predict(world, "--input", src, "--out", tmp_path / "p19", "--format", "labelids",
                        "--set", "eval.protocol=synthia16")
    assert code == 0, out
    probs = reference_probs(world["weights"], image)
    want = np.zeros(image.shape[:2], np.uint8)
    best = np.full(image.shape[:2], -1.0)
    for train_id in SYNTHIA16_TRAIN_IDS:  # arg-max over the 16 classes, by hand
        better = probs[..., train_id] > best
        best[better], want[better] = probs[..., train_id][better], TRAIN_ID_TO_LABEL_ID[train_id]
    got = read(tmp_path / "p19" / "labelids" / "frame_labelIds.png")
    np.testing.assert_array_equal(got, want)
    assert not set(np.unique(got)) & {22, 27, 31}
    # A 16-channel model (imported with --num-classes auto): channel i is SYNTHIA16_TRAIN_IDS[i].
    w16 = save_weights(tmp_path / "w16.weights.h5", num_classes=16, seed=0)
    code, out = run("predict", "-c", world["cfg"], "-w", w16, "--set", "data.num_classes=16", "--input", src,
                    "--out", tmp_path / "p16", "--format", "labelids,trainids")
    assert code == 0, out
    channel = np.argmax(reference_probs(w16, image, num_classes=16), axis=-1)
    want16 = np.array([TRAIN_ID_TO_LABEL_ID[SYNTHIA16_TRAIN_IDS[c]] for c in channel.ravel()]).reshape(channel.shape)
    np.testing.assert_array_equal(read(tmp_path / "p16" / "labelids" / "frame_labelIds.png"), want16)
    assert len(np.unique(want16)) >= 3
    code, out = run("predict", "-c", world["cfg"], "-w", w16, "--set", "data.num_classes=7", "--input", src,
                    "--out", tmp_path / "p7")
    assert code == 2 and "data.num_classes: 7 output channels" in out and not (tmp_path / "p7").exists()


def test_shards_rerun_and_partial_outputs(world, tmp_path):
    out = tmp_path / "o"
    for i in range(2):
        code, text = predict(world, "--input", world["folder"], "--out", out, "--format", "trainids,color",
                             "--shard", f"{i}/2")
        assert code == 0, text
        assert ("wrote 2 images", "wrote 1 image ")[i] in text  # images 0, 2 then image 1
    files = sorted(p for p in out.rglob("*.png"))
    assert len(files) == 2 * len(SIZES)
    stamps = {p: p.stat().st_mtime_ns for p in files}
    code, text = predict(world, "--input", world["folder"], "--out", out, "--format", "trainids,color")
    assert code == 0 and "wrote 0 images" in text and f"{len(SIZES)} already done" in text
    assert {p: p.stat().st_mtime_ns for p in files} == stamps
    victim = out / "color" / "bremen" / "bremen_000001_000019_color.png"
    victim.unlink()
    # A run killed by SIGKILL left a temporary; the next run removes it (its writer is gone).
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True).stdout.strip()
    stale = victim.with_name(f".{victim.name}.tmp-{socket.gethostname()}~{dead}")
    stale.write_bytes(b"half a PNG")
    code, text = predict(world, "--input", world["folder"], "--out", out, "--format", "trainids,color,labelids")
    assert code == 0 and f"wrote {len(SIZES)} images" in text, text  # labelids were new for all three
    assert victim.is_file() and not stale.exists() and f"removed {stale} left by a killed run" in text
    kept = {p: t for p, t in stamps.items() if p != victim}
    assert {p: p.stat().st_mtime_ns for p in kept} == kept  # nothing it had written was rewritten
    assert not [p for p in out.rglob(".*") if p.name != ".cbst-tf-out.json"]  # no temporaries left


def test_decoding_runs_ahead_by_a_bounded_number_of_images():
    from cbst_tf.predict.inputs import ordered_map

    produced, consumed, ahead = [], [], []
    lock = threading.Lock()

    def work(i):
        with lock:
            produced.append(i)
        return i * i

    for item, result in ordered_map(work, range(50), depth=2):
        time.sleep(0.002)  # a consumer slower than the decoder
        with lock:
            ahead.append(len(produced) - len(consumed))
        consumed.append(item)
        assert result == item * item
    assert consumed == list(range(50)) and max(ahead) <= 2


def _png_header(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width x height`` (a few bytes: a decompression bomb's header)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")


def test_unreadable_images_stop_the_run_or_are_skipped(world, tmp_path):
    src = tmp_path / "imgs"
    src.mkdir()
    good = random_image(np.random.default_rng(2), (16, 24))
    for name in ("a.png", "c.png"):
        assert cv2.imwrite(str(src / name), good)
    ok, buf = cv2.imencode(".png", good)
    (src / "b.png").write_bytes(buf.tobytes()[: len(buf) // 2])  # truncated
    code, out = predict(world, "--input", src, "--out", tmp_path / "o")
    check("predict-corrupt-image", code, out, tmp_path)
    code, out = predict(world, "--input", src, "--out", tmp_path / "o", "--skip-bad")
    check("predict-skip-bad", code, out, tmp_path)
    assert (tmp_path / "o" / "labelids" / "c_labelIds.png").is_file()
    assert not (tmp_path / "o" / "labelids" / "b_labelIds.png").exists()
    (src / "b.png").write_bytes(b"GIF89a not what the name says")
    code, out = predict(world, "--input", src / "b.png", "--out", tmp_path / "o2")
    check("predict-not-an-image", code, out, tmp_path)
    (src / "b.png").write_bytes(_png_header(9000, 9000))
    code, out = predict(world, "--input", src / "b.png", "--out", tmp_path / "o2")
    check("predict-image-too-large", code, out, tmp_path)
    (src / "b.jpg").write_bytes(buf.tobytes())
    (src / "b.png").write_bytes(buf.tobytes())
    code, out = predict(world, "--input", src, "--out", tmp_path / "o3")
    check("predict-same-stem", code, out, tmp_path)


def test_out_never_takes_what_it_did_not_write(world, tmp_path):
    src = tmp_path / "imgs"
    src.mkdir()
    assert cv2.imwrite(str(src / "a.png"), random_image(np.random.default_rng(3), (16, 24)))
    code, out = predict(world, "--input", src, "--out", src / "preds")
    check("predict-out-inside-input", code, out, tmp_path)
    assert sorted(os.listdir(src)) == ["a.png"]
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "keep.txt").write_text("precious")
    code, out = predict(world, "--input", src, "--out", mine)
    check("predict-out-not-ours", code, out, tmp_path)
    assert sorted(os.listdir(mine)) == ["keep.txt"] and (mine / "keep.txt").read_text() == "precious"
    code, out = predict(world, "--input", src, "--out", tmp_path / "o")
    assert code == 0, out
    other = save_weights(tmp_path / "other.weights.h5", seed=1)
    code, out = run("predict", "-c", world["cfg"], "-w", other, "--input", src, "--out", tmp_path / "o")
    check("predict-out-other-weights", code, out, tmp_path)
    code, out = predict(world, "--input", src, "--out", tmp_path / "o", "--set", "eval.flip=true")
    assert code == 2 and "differs in: eval.flip" in out
    code, out = predict(world, "--input", src, "--out", tmp_path / "o", "--format", "jpeg")
    check("predict-format-unknown", code, out, tmp_path)
    code, out = predict(world, "--input", tmp_path / "nothing", "--out", tmp_path / "o4")
    assert code == 1 and f"error: {tmp_path / 'nothing'}: input not found" in out
    assert not (tmp_path / "o4").exists()
