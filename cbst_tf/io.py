"""Atomic file output: everything is written under a temporary name, then renamed.

A run that is killed therefore never leaves a half-written file under a final name,
and a step that finds its output already present can trust it is complete.

The one temporary-file protocol of the project: every temporary name starts with a dot and
carries ``tmp-<host>~<pid>`` (:func:`temp_tag`), so :func:`remove_stale_temps` can tell whether
its writer is gone (:func:`writer_gone`, which the step lock uses too) and clear what a killed
run left behind.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import socket
import stat
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def temp_tag() -> str:
    """``<host>~<pid>`` in every temporary name: a later run can tell whether its writer is gone."""
    return f"{socket.gethostname()}~{os.getpid()}"


def _tmp_name(path: Path, keep_suffix: bool = False) -> Path:
    if keep_suffix:  # for writers that check the name's suffix (Keras: ``.weights.h5``)
        return path.with_name(f".tmp-{temp_tag()}-{path.name}")
    return path.with_name(f".{path.name}.tmp-{temp_tag()}")


_TEMP = re.compile(r"^\..*tmp-(?P<host>[A-Za-z0-9._-]*)~(?P<pid>\d+)(?:-|$)")


def is_temp_name(name: str) -> bool:
    """Whether a file or directory name is a temporary of this protocol (``.…tmp-<host>~<pid>…``)."""
    return _TEMP.match(name) is not None


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` exists on this host (one we may not signal counts as alive)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True
    return True


def writer_gone(tag: str) -> bool | None:
    """Whether the writer of a ``<host>~<pid>`` tag (:func:`temp_tag`) is gone: True when it ran on
    this host and its process is dead, or is this very process (a restarted container reuses
    pids); False when it is alive; None when it ran on another host (it cannot be checked here)."""
    host, _, pid = tag.strip().rpartition("~")
    if host != socket.gethostname():
        return None
    if not pid.isdigit():
        return True
    return int(pid) == os.getpid() or not pid_alive(int(pid))


def remove_stale_temps(directory: str | Path, max_age_s: float = 86400.0, prefix: str = "",
                       recursive: bool = True) -> list[Path]:
    """Delete temporary files/directories under ``directory`` whose writer is gone.

    Called when a step starts, so a run killed with SIGKILL does not leave (possibly huge)
    temporaries behind for good. Written on this host: stale when the process is dead (or is
    this very process, restarted as the same pid in a new container). Written on another host
    (shards of one step on several machines): only when untouched for ``max_age_s``. Only names
    starting with ``prefix`` are considered; ``recursive=False`` looks at ``directory``'s own
    entries (the temporaries of an output beside it, in a folder that is not ours to walk).
    """
    removed = []
    for parent, dirs, files in os.walk(directory):
        for name in [*dirs, *files]:
            m = _TEMP.match(name)
            if not m or not name.startswith(prefix):
                continue
            path = Path(parent) / name
            try:
                gone = writer_gone(f"{m.group('host')}~{m.group('pid')}")
                stale = gone if gone is not None else time.time() - path.lstat().st_mtime > max_age_s
            except OSError:
                continue
            if stale:
                if path.is_dir() and not path.is_symlink():
                    shutil.rmtree(path, ignore_errors=True)
                    dirs.remove(name) if name in dirs else None
                else:
                    path.unlink(missing_ok=True)
                removed.append(path)
        if not recursive:
            break
    return removed


@contextlib.contextmanager
def atomic_path(path: str | Path, keep_suffix: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` on success.
    ``keep_suffix``: the temporary name ends with ``path``'s name (``.tmp-<tag>-<name>``), for
    writers that insist on a suffix, such as Keras' ``save_weights``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_name(path, keep_suffix)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
    return Path(path)


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | Path, obj: Any) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def atomic_save_npy(path: str | Path, array: Any) -> Path:
    import numpy as np

    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.save(fh, array)
    return Path(path)


@contextlib.contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """Build a whole directory under a temporary name; rename it into place on success.

    An existing directory at ``path`` is replaced only once the new one is complete.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # os.mkdir honours the umask (mkdtemp's 0700 hid datasets from the other users of a volume);
    # the pid in the name tells a later run whether its owner is still alive.
    tmp = path.with_name(f".{path.name}.tmp-{temp_tag()}-{secrets.token_hex(4)}")
    os.mkdir(tmp)
    try:
        yield tmp
        if path.exists():
            old = path.with_name(f".{path.name}.old.tmp-{temp_tag()}")
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


_KINDS = {stat.S_IFIFO: "a FIFO", stat.S_IFSOCK: "a socket", stat.S_IFCHR: "a character device",
          stat.S_IFBLK: "a block device", stat.S_IFDIR: "a directory"}


def require_regular(path: str | Path, what: str = "file") -> os.stat_result:
    """``os.stat`` of a regular file (symlinks followed), or a one-line error: reading a FIFO
    or a device would block or never end, so they are refused before they are opened."""
    from cbst_tf.bounds import show_path
    from cbst_tf.errors import CbstError

    try:
        info = os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        raise CbstError(f"{show_path(path)}: {what} not found") from None
    except OSError as exc:
        raise CbstError(f"{show_path(path)}: cannot read the {what} ({exc.strerror})") from None
    if not stat.S_ISREG(info.st_mode):
        kind = _KINDS.get(stat.S_IFMT(info.st_mode), "not a regular file")
        raise CbstError(f"{show_path(path)}: {what} is {kind}, not a regular file; refusing to read it")
    return info


_DIGESTS: dict[tuple, str] = {}


def file_digest(path: str | Path) -> str:
    """SHA-256 of a file's bytes ("" when it does not exist): what a cache or partial result made
    from it is keyed by. Computed once per process for a given (path, size, mtime, inode)."""
    import hashlib

    try:
        info = os.stat(path)
    except OSError:
        return ""
    key = (os.path.realpath(path), info.st_size, info.st_mtime_ns, info.st_ino)
    if key not in _DIGESTS:
        h = hashlib.sha256()
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
        _DIGESTS[key] = h.hexdigest()
    return _DIGESTS[key]


def check_writable(path: str | Path, what: str = "output") -> None:
    """Fail now, not after hours of work, when ``path`` (a file or directory still to be written)
    cannot be created: its nearest existing ancestor must be a writable directory, and ``path``
    itself, if it exists, must not be a directory when a file is meant (``what`` ends in "file")."""
    from cbst_tf.bounds import check_paths, show_path
    from cbst_tf.errors import CbstError

    path = Path(path)
    check_paths([(what, path)])
    if what.endswith("file") and path.is_dir():
        raise CbstError(f"{show_path(path)}: is a directory; the {what} cannot be written there")
    parent = path if path.is_dir() else path.parent
    while not os.path.lexists(parent) and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise CbstError(f"{show_path(parent)}: is not a directory; cannot write the {what} {show_path(path)}")
    if not os.access(parent, os.W_OK | os.X_OK):
        reason = "read-only file system" if _read_only(parent) else "permission denied"
        raise CbstError(f"{show_path(parent)}: {reason}; cannot write the {what} {show_path(path)}")


def _read_only(path: Path) -> bool:
    try:
        return bool(os.statvfs(path).f_flag & os.ST_RDONLY)
    except OSError:
        return False


def read_json(path: str | Path) -> Any:
    """Read JSON, turning a missing, oversized, non-UTF-8, corrupt or too deeply nested file
    into a one-line error (:mod:`cbst_tf.bounds`)."""
    from cbst_tf.bounds import MAX_DEPTH, MAX_JSON_BYTES, depth_of
    from cbst_tf.errors import CbstError

    path = Path(path)
    info = require_regular(path)
    if info.st_size > MAX_JSON_BYTES:
        raise CbstError(f"{path}: {info.st_size} bytes, larger than any JSON file cbst-tf writes "
                        f"(at most {MAX_JSON_BYTES}); refusing to read it")
    try:
        data = json.loads(path.read_bytes())
    except UnicodeDecodeError:
        raise CbstError(f"{path}: corrupt JSON (not UTF-8 text)") from None
    except json.JSONDecodeError as exc:
        raise CbstError(f"{path}: corrupt JSON ({exc.msg} at line {exc.lineno})") from None
    except RecursionError:
        raise CbstError(f"{path}: JSON nested deeper than {MAX_DEPTH} levels; refusing to read it") from None
    if depth_of(data) > MAX_DEPTH:
        raise CbstError(f"{path}: JSON nested deeper than {MAX_DEPTH} levels; refusing to read it")
    return data
