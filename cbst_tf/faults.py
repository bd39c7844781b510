"""Faults of the machine turned into one-line errors: full disk, read-only or missing
directories, corrupt TFRecord shards, memory exhaustion.

These surface deep inside Python, Keras or TensorFlow as ``OSError``, ``DataLossError`` or
``ResourceExhaustedError`` with long tracebacks. :func:`translate` maps them to a
:class:`~cbst_tf.errors.CbstError` naming the file (exit 1); the CLI shows the traceback
only with ``--debug``.
"""

from __future__ import annotations

import errno
import os
import re
from collections.abc import Iterable
from pathlib import Path

from cbst_tf.bounds import show_path
from cbst_tf.errors import CbstError

# The file a TF op failed on: the first absolute path in its message, without TF's temp suffixes.
_PATH = re.compile(r"(?<![\w/])(/[^\s;:'\"{}]+?)(?:\.tempstate\d+)?(?=[\s;:'\"]|$)")
_OS_REASONS = {
    errno.ENOSPC: "no space left on device (disk full)",
    errno.EDQUOT: "disk quota exceeded",
    errno.EROFS: "read-only file system",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.ENOTDIR: "a path component is not a directory",
    errno.EISDIR: "is a directory",
    errno.EEXIST: "already exists",
    errno.ENAMETOOLONG: "file name too long",
    errno.EIO: "input/output error",
    errno.ESTALE: "stale file handle (network file system)",
}


def _first_line(text: str) -> str:
    """The first line of a (TF) message, without TF's ``{{function_node ...}}`` / ``{{node ...}}``
    and ``[Op:...]`` noise."""
    lines = [line.strip() for line in str(text).strip().splitlines() if line.strip()]
    line = lines[0] if lines else ""
    line = re.sub(r"\{\{.*?\}\}\s*", "", line)
    line = re.sub(r"\{\{.*$", "", line)  # an unclosed one (TF cut the line)
    line = re.sub(r"\s*\[Op:.*$", "", line)
    return line.strip()[:300]


def tf_message(exc: BaseException) -> str:
    """The one line worth showing of a TensorFlow (or any) exception's message."""
    return _first_line(getattr(exc, "message", None) or str(exc))


def corrupt_shards(directories: Iterable[str | Path]) -> list[tuple[Path, str]]:
    """(shard, reason) for every shard of these dataset directories that cannot be read to the end."""
    import tensorflow as tf

    from cbst_tf.data.manifest import read_manifest

    bad, seen = [], set()
    for directory in directories:
        try:
            if not directory or Path(directory).resolve() in seen:
                continue
            seen.add(Path(directory).resolve())
            if not (Path(directory) / "manifest.json").is_file():
                continue
            shards = read_manifest(directory)["shards"]
        except (CbstError, OSError):
            continue
        for shard in shards:
            path = Path(directory) / shard
            try:
                for _ in tf.data.TFRecordDataset(str(path)):
                    pass
            except (tf.errors.DataLossError, tf.errors.OutOfRangeError) as exc:
                bad.append((path, _first_line(exc.message)))
    return bad


_DECODE = re.compile(r"PNG|JPEG|GIF|BMP|[Dd]ecode|image file format|Input is empty", re.S)
_HOST_KEYS = "data.parallel_calls, data.prefetch, data.shuffle_buffer, train.global_batch_size or data.crop_size"
_DEVICE_KEYS = "train.global_batch_size, data.crop_size, data.input_scale, eval.scales or model.width"


def undecodable_record(datasets: Iterable[str | Path]) -> str | None:
    """'<shard>: record '<source_id>': <why>' of the first record of these datasets whose image or
    label cannot be decoded, or None (:mod:`cbst_tf.data.check`)."""
    from cbst_tf.data.check import bad_records
    from cbst_tf.data.manifest import read_manifest

    seen = set()
    for directory in datasets:
        try:
            if not directory or Path(directory).resolve() in seen or not (Path(directory) / "manifest.json").is_file():
                continue
            seen.add(Path(directory).resolve())
            manifest = read_manifest(directory)
            if int(manifest["num_examples"]) > 500:  # it reads the whole dataset: say why it takes a while
                from cbst_tf.progress import log

                log(f"{directory}: looking for the record that cannot be decoded ({manifest['num_examples']} records)")
            bad = bad_records(directory, first_only=True)
        except Exception:  # noqa: BLE001 - a diagnosis that fails must not hide the first error
            continue
        if bad:
            return bad[0].describe()
    return None


def translate(exc: BaseException, datasets: Iterable[str | Path] = (), config: str = "") -> CbstError | None:
    """The one-line error for a machine fault, or None if ``exc`` is not one (a real bug).

    ``config`` names the experiment (its file) in out-of-memory messages, beside the keys that
    lower the memory."""
    if isinstance(exc, CbstError):
        return exc
    where = f" with {config}" if config else ""
    if isinstance(exc, MemoryError):
        return CbstError(f"out of memory (host){where}: lower {_HOST_KEYS}")
    name = type(exc).__name__
    datasets = list(datasets)
    if name in ("InvalidArgumentError", "UnknownError", "ResourceExhaustedError") and datasets \
            and _DECODE.search(str(getattr(exc, "message", exc))):
        bad = undecodable_record(datasets)
        if bad:
            return CbstError(f"{bad}; convert the dataset again, or leave such records out with "
                             "--set data.skip_bad=true")
    if name == "DataLossError":
        bad = corrupt_shards(datasets)
        if bad:
            path, reason = bad[0]
            more = f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""
            return CbstError(f"{path}: corrupt or truncated TFRecord shard{more} ({reason}); "
                             "convert the dataset again")
        return CbstError(f"corrupt or truncated data: {_first_line(getattr(exc, 'message', exc))}")
    message = str(getattr(exc, "message", exc))
    for needle, reason in (("No space left on device", "no space left on device (disk full)"),
                           ("Read-only file system", "read-only file system"),
                           ("Permission denied", "permission denied")):
        if needle in message and type(exc).__module__.startswith(("tensorflow", "h5py", "keras")):
            path = _PATH.search(message)
            return CbstError(f"{path.group(1)}: {reason}" if path else f"{reason}: {_first_line(message)}")
    if name == "ResourceExhaustedError":
        text = _first_line(getattr(exc, "message", exc))
        if "space left" in text or "quota" in text.lower():
            return CbstError(f"no space left on device (disk full): {text}")
        return CbstError(f"out of memory ({text}){where}: lower {_DEVICE_KEYS}")
    if isinstance(exc, OSError) and exc.errno in _OS_REASONS:
        filename = exc.filename or getattr(exc, "filename2", None)
        reason = _OS_REASONS[exc.errno]
        return CbstError(f"{show_path(os.fspath(filename))}: {reason}" if filename else f"{reason}: {_first_line(exc)}")
    if isinstance(exc, OSError) and "No space left on device" in str(exc):
        return CbstError(f"no space left on device (disk full): {_first_line(exc)}")
    return kernel_failure(exc)


_KERNEL_ERRORS = ("InvalidArgumentError", "UnimplementedError", "InternalError", "UnknownError")
_NODE = re.compile(r"\{\{node ([^}]+)\}\}")
_WRAPPED = re.compile(r"__wrapped__([A-Za-z0-9]+?)_device_")
_OP = re.compile(r"\[Op:([A-Za-z0-9]+)\]")


def kernel_failure(exc: BaseException) -> CbstError | None:
    """A TensorFlow op that failed while running (a kernel this machine lacks, or rejects) as one
    line naming the op, the CPU and its kernels, and what to try; None for anything else.

    Recognised by TF's own marks of op execution in the message (``{{node ...}}``,
    ``__wrapped__<Op>``, ``[Op:<Op>]``), so Python-side errors keep their traceback.
    """
    if type(exc).__name__ not in _KERNEL_ERRORS or not type(exc).__module__.startswith("tensorflow"):
        return None
    message = str(getattr(exc, "message", exc))
    node, wrapped, op = _NODE.search(message), _WRAPPED.search(message), _OP.search(message)
    if node:
        name = node.group(1)
        kind = re.sub(r"_\d+$", "", name.rsplit("/", 1)[-1])
        where = f"{kind} (node {name})" if kind != name else kind
    elif wrapped or (op and not op.group(1).startswith("__inference")):
        where = (wrapped or op).group(1)
    else:
        return None
    from cbst_tf.environment import describe_kernels, onednn_enabled

    other = 0 if onednn_enabled() else 1
    return CbstError(f"TensorFlow op {where} failed on this machine ({describe_kernels()}): "
                     f"{_first_line(message).rstrip('.')}; try TF_ENABLE_ONEDNN_OPTS={other} or runtime.precision=float32, "
                     "and report it with the output of --debug")
