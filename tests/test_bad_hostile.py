"""Hostile input (issue 28, section 3): bounded memory and no traceback. Alias bombs, deep
nesting, unbounded sizes and seeds, undecodable images inside TFRecords, non-UTF-8 configs,
over-long paths, absolute splits and FIFOs each give one line, fast, before any work."""

from __future__ import annotations

import dataclasses
import json
import os
import resource
import subprocess
import sys
import time
import typing
from pathlib import Path

import cv2
import layouts
import numpy as np
from badcase import check, reset_debug, run  # noqa: F401 - reset_debug: autouse fixture
from test_bad_runs import _copy, experiment, trained  # noqa: F401 - the shared trained-run fixture

from cbst_tf import config as config_mod
from cbst_tf.data.writer import DatasetWriter

ROOT = Path(__file__).resolve().parents[1]


def _bomb(levels: int = 9) -> str:
    lines = ["x:", "  a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    for i in range(1, levels):
        lines.append(f"  a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]")
    return "\n".join(lines) + f"\ntrain:\n  lr: [{', '.join([f'*a{levels - 1}'] * 9)}]\n"


def _limited_cli(*args: str, memory: int = 1 << 30) -> tuple[subprocess.CompletedProcess, float]:
    """``cbst-tf ARGS`` in a fresh process that may use at most ``memory`` bytes of address space
    (more is a MemoryError, reported as "out of memory"): (result, seconds)."""
    env = dict(os.environ, PYTHONPATH=str(ROOT), TF_CPP_MIN_LOG_LEVEL="2")

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (memory, memory))

    start = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "cbst_tf.cli", "--no-progress", *args], capture_output=True,
                          text=True, env=env, timeout=120, preexec_fn=limit)
    return proc, time.monotonic() - start


def test_a_yaml_alias_bomb_is_refused_at_once_in_bounded_memory(tmp_path):
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text(_bomb())
    assert bomb.stat().st_size < 700  # 9^10 values once expanded
    proc, seconds = _limited_cli("config", "show", "-c", str(bomb))  # it used to take 1.6-3.8 GB
    check("yaml-alias-bomb", proc.returncode, proc.stderr + proc.stdout, tmp_path)
    assert seconds < 30, seconds
    many = "[&a [" + ", ".join(["1"] * 100) + "], " + ", ".join(["*a"] * 200) + "]"
    check("set-alias-bomb", *run("config", "show", "--set", f"train.lr={many}"))


def test_nesting_and_value_sizes_are_bounded(tmp_path):
    deep = tmp_path / "deep.yaml"
    deep.write_text("train: " + "[" * 5000 + "]" * 5000 + "\n")
    check("yaml-too-deep", *run("config", "show", "-c", deep), tmp_path)
    check("prior-kernel-huge", *run("config", "show", "--set", "selftrain.prior_kernel=10000000"))
    check("seed-negative", *run("config", "show", "--set", "runtime.seed=-5"))
    check("seed-huge", *run("config", "show", "--set", "runtime.seed=100000000000000000000000"))
    huge = "x" * 1_000_000
    code, out = run("config", "show", "--set", f"train.lr={huge}")
    assert code == 2 and len(out) < 400, len(out)  # the value is quoted, capped


def test_every_size_like_key_has_an_upper_bound():
    """Every number and list of numbers in the config tree is bounded above (a size, count or
    scale without a bound allocates without limit; prior_kernel=1e7 died in std::bad_alloc)."""
    unbounded = []

    def walk(obj, prefix):
        hints = typing.get_type_hints(type(obj))
        for f in dataclasses.fields(obj):
            value, tp = getattr(obj, f.name), hints[f.name]
            if dataclasses.is_dataclass(value):
                walk(value, f"{prefix}{f.name}.")
                continue
            listed = typing.get_origin(tp) is list and typing.get_args(tp)[0] in (int, float)
            args = [a for a in typing.get_args(tp) if a is not type(None)] or [tp]
            numeric = not listed and any(a in (int, float) for a in args)
            meta = dict(f.metadata)
            if numeric and (meta.get("range", (None, None, False))[1] is None):
                unbounded.append(f"{prefix}{f.name}")
            if listed and "items" not in meta:
                unbounded.append(f"{prefix}{f.name}")

    walk(config_mod.Config(), "")
    assert unbounded == []


def _png_with(ihdr_size: tuple[int, int] | None = None, flip_byte: bool = False) -> bytes:
    image = np.random.default_rng(3).integers(0, 256, (24, 40, 3), dtype=np.uint8)
    data = bytearray(cv2.imencode(".png", image)[1].tobytes())
    if flip_byte:
        data[len(data) // 2] ^= 0xFF  # bit rot inside the compressed pixels (the chunk's CRC no longer fits)
    if ihdr_size is not None:
        import struct
        import zlib

        h, w = ihdr_size
        data[16:24] = struct.pack(">II", w, h)
        data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])) & 0xFFFFFFFF)
    return bytes(data)


def _bad_dataset(directory: Path, bad: bytes, n: int = 8) -> Path:
    rng = np.random.default_rng(0)
    with DatasetWriter(directory, num_items=n, shards=2, name=directory.name, fmt="test") as w:
        for i in range(n):
            image = rng.integers(0, 256, (24, 40, 3), dtype=np.uint8)
            label = (image[..., 0] // 64).astype(np.uint8)
            encoded = bad if i == 3 else cv2.imencode(".png", image)[1].tobytes()
            w.add(i, encoded, "png", 24, 40, f"img/{i:03d}.png", label)
        w.close()
    return directory


def test_an_undecodable_image_in_a_tfrecord_names_its_shard_and_source_id(tmp_path, trained):  # noqa: F811
    exp, _ = _copy(trained, tmp_path)
    bad = _bad_dataset(tmp_path / "bad", _png_with(flip_byte=True))
    code, out = run("pretrain", "-c", exp, "--set", f"data.source={bad}", "--workdir", tmp_path / "w1")
    check("tfrecord-bad-image-pretrain", code, out, tmp_path)
    check("tfrecord-bad-image-evaluate", *run("evaluate", "-c", exp, "--split", bad), tmp_path)
    code, out = run("label", "--round", "1", "-c", exp, "--set", f"data.target={bad}", "--set",
                    "selftrain.method=cbst")
    check("tfrecord-bad-image-label", code, out, tmp_path)
    assert "{{" not in out and "function_node" not in out
    bomb = _bad_dataset(tmp_path / "bomb", _png_with(ihdr_size=(60000, 60000)))
    check("tfrecord-image-bomb", *run("evaluate", "-c", exp, "--split", bomb), tmp_path)
    # data.skip_bad: counted, named once, left out.
    code, out = run("evaluate", "-c", exp, "--split", bad, "--set", "data.skip_bad=true", "--out", tmp_path / "e")
    check("tfrecord-bad-image-skipped", code, out, tmp_path)
    assert json.loads((tmp_path / "e" / "metrics.json").read_text())["num_images"] == 7


def test_non_utf8_yaml_is_one_line(tmp_path):
    latin1 = tmp_path / "latin1.yaml"
    latin1.write_bytes("name: caf\xe9\n".encode("latin-1"))
    check("yaml-latin1", *run("config", "show", "-c", latin1), tmp_path)
    binary = tmp_path / "binary.yaml"
    binary.write_bytes(bytes(range(256)))
    check("yaml-binary", *run("config", "show", "-c", binary), tmp_path)


def test_over_long_paths_are_one_line(tmp_path):
    exp = experiment(tmp_path, tmp_path / "src")
    check("workdir-component-too-long", *run("pretrain", "-c", exp, "--workdir", tmp_path / ("x" * 300)), tmp_path)
    long_path = tmp_path.joinpath(*(["y" * 200] * 25))
    check("path-too-long", *run("pretrain", "-c", exp, "--workdir", long_path), tmp_path)
    code, out = run("data", "convert", "-f", "gta5", "--root", tmp_path, "--out", tmp_path / ("o" * 300))
    assert code == 2 and "a path component of 300 bytes is too long (at most 255)" in out, out
    code, out = run("config", "show", "-c", tmp_path / ("c" * 300))
    assert code == 2 and "a path component of 300 bytes" in out, out


def test_a_deeply_nested_manifest_is_one_line(tmp_path):
    layouts.write_gta5(tmp_path / "gta5", n=2)
    assert run("data", "convert", "-f", "gta5", "--root", tmp_path / "gta5", "--out", tmp_path / "o")[0] == 0
    path = tmp_path / "o" / "manifest.json"
    manifest = json.loads(path.read_text())
    text = json.dumps(manifest)[:-1] + ', "extra": ' + "[" * 100_000 + "]" * 100_000 + "}"
    path.write_text(text)
    check("manifest-deeply-nested", *run("pretrain", "--set", f"data.source={tmp_path / 'o'}",
                                         "--workdir", tmp_path / "run"), tmp_path)
    path.write_text(json.dumps(manifest)[:-1] + ', "extra": ' + "[" * 40 + "]" * 40 + "}")  # below the recursion limit
    code, out = run("pretrain", "--set", f"data.source={tmp_path / 'o'}", "--workdir", tmp_path / "run")
    assert code == 1 and "JSON nested deeper than 32 levels" in out, out


def test_an_absolute_cityscapes_split_is_refused(tmp_path):
    layouts.write_cityscapes(tmp_path / "cs", split="val", n=1)
    split = str(tmp_path / "cs" / "leftImg8bit" / "val")
    code, out = run("data", "convert", "-f", "cityscapes", "--root", tmp_path / "cs", "--split", split,
                    "--out", tmp_path / "o")
    check("cityscapes-split-absolute", code, out, tmp_path)
    code, out = run("data", "convert", "-f", "cityscapes", "--root", tmp_path / "cs", "--split", "../cs/val",
                    "--out", tmp_path / "o")
    assert code == 2 and "not a path" in out, out


def test_a_fifo_label_file_is_refused_not_read(tmp_path):
    layouts.write_gta5(tmp_path / "gta5", n=2)
    label = tmp_path / "gta5" / "labels" / "00001.png"
    label.unlink()
    os.mkfifo(label)
    # In a process of its own: reading the FIFO used to block forever (a thread that no timeout stops).
    env = dict(os.environ, PYTHONPATH=str(ROOT), TF_CPP_MIN_LOG_LEVEL="2")
    proc = subprocess.run([sys.executable, "-m", "cbst_tf.cli", "--no-progress", "data", "convert", "-f", "gta5",
                           "--root", str(tmp_path / "gta5"), "--out", str(tmp_path / "o")],
                          capture_output=True, text=True, env=env, timeout=120)
    check("convert-label-fifo", proc.returncode, proc.stdout + proc.stderr, tmp_path)
    assert not (tmp_path / "o").exists()
    fifo = tmp_path / "exp.yaml"
    os.mkfifo(fifo)
    code, out = run("config", "show", "-c", fifo)
    assert code == 2 and "not a regular file" in out, out
