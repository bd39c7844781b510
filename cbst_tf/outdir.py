"""THE output-ownership rule of every command that writes into a user-named directory.

``data convert``, ``data synth``, ``demo`` and ``evaluate --out`` (and any new command with an
``--out``) replace or write into a directory only when its CONTENT proves it is this tool's own
earlier output of the same command, never because of a file name. The proof is the marker
:data:`MARKER` the command leaves in the directory:

* ``{"tool": "cbst-tf", "command": ..., "complete": true, "entries": {name: digest}}`` once the
  command finished (:meth:`OutClaim.seal`): one digest per top-level entry, over the names,
  types and sizes of everything below it. A later run may replace the directory only while
  every entry is still one it wrote, unchanged (a file the user added or edited is named and
  refused; a file the user deleted is no loss);
* ``"complete": false`` with the directory's device and inode while a run is under way, so a
  killed run resumes in its own directory (and only there: a copy has another inode).

Anything else that is not empty is refused with one line (exit 2) before anything is
touched, and so are ``/``, the home directory, an input itself, any directory inside an input
and any parent of an input, whatever they hold.

Public API (used by the commands; a new command calls it the same way)::

    claim = claim_out(out, "evaluate", {"--weights": weights, "--split": split})
    try:
        ...write into claim.path...
    except BaseException:
        claim.release()   # removes the directory again if this run created it and wrote nothing
        raise
    claim.seal()          # records what was written: the next run may replace it

A command that builds its output elsewhere and swaps it in (``data convert``) calls
:func:`check_out` first and :func:`seal_dir` on the finished directory before the swap.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import stat
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from cbst_tf.bounds import check_paths, show_path
from cbst_tf.errors import ConfigError

MARKER = ".cbst-tf-out.json"
TOOL = "cbst-tf"
# Our own temporaries (cbst_tf.io's tmp-<host>~<pid> names) and step locks: never part of a digest.
_TRANSIENT = re.compile(r"^(\..+\.(tmp|old)-.*|\..*tmp-[A-Za-z0-9._-]*~\d+.*|\.lock)$")
_MAX_MARKER_BYTES = 1 << 20

Inputs = Mapping[str, "str | Path | None"] | Iterable["str | Path | None"]


def _resolved(path: str | Path) -> Path:
    return Path(os.path.abspath(Path(path).expanduser().resolve()))


def _listing(out: Path) -> list[str]:
    try:
        return sorted(e for e in os.listdir(out) if e != MARKER and not _TRANSIENT.match(e))
    except OSError as exc:
        raise ConfigError(f"--out {show_path(out)}: cannot list the directory ({exc.strerror})") from None


def _entry_digest(path: Path) -> str:
    """Names, types and sizes of ``path`` and everything below it (not following symlinks)."""
    h = hashlib.sha256()

    def add(rel: str, p: Path) -> None:
        info = p.lstat()
        if stat.S_ISLNK(info.st_mode):
            h.update(f"L {rel} {os.readlink(p)}\n".encode(errors="surrogateescape"))
        elif stat.S_ISDIR(info.st_mode):
            h.update(f"D {rel}\n".encode(errors="surrogateescape"))
            for name in sorted(os.listdir(p)):
                if not _TRANSIENT.match(name):
                    add(f"{rel}/{name}", p / name)
        else:
            h.update(f"F {rel} {info.st_size} {stat.S_IFMT(info.st_mode)}\n".encode(errors="surrogateescape"))

    add(path.name, path)
    return h.hexdigest()


def _digests(out: Path) -> dict[str, str]:
    return {name: _entry_digest(out / name) for name in _listing(out)}


def _write_marker(out: Path, record: dict) -> None:
    from cbst_tf.io import atomic_write_json

    atomic_write_json(out / MARKER, {"tool": TOOL, **record})


def seal_dir(directory: str | Path, command: str) -> None:
    """Record in ``directory`` that ``command`` wrote everything it now holds (its digests)."""
    directory = Path(directory)
    _write_marker(directory, {"command": command, "complete": True, "entries": _digests(directory)})


def _read_marker(out: Path) -> dict | None:
    path = out / MARKER
    try:
        info = path.lstat()
        if not stat.S_ISREG(info.st_mode) or info.st_size > _MAX_MARKER_BYTES:
            return None
        record = json.loads(path.read_bytes())
    except (OSError, ValueError, RecursionError):
        return None
    if (not isinstance(record, dict) or record.get("tool") != TOOL or not isinstance(record.get("command"), str)
            or not isinstance(record.get("complete"), bool)):
        return None
    return record


def _named(inputs: Inputs) -> list[tuple[str, Path]]:
    items = inputs.items() if isinstance(inputs, Mapping) else (("an input", p) for p in inputs)
    return [(label, Path(p)) for label, p in items if p not in (None, "")]


def _check_place(out: Path, inputs: Inputs, flag: str) -> Path:
    """Refuse the places no command may write to, whatever they hold; returns the resolved path."""
    check_paths([(flag, out), *[(label, p) for label, p in _named(inputs)]])
    o = _resolved(out)
    if o == Path(o.anchor):
        raise ConfigError(f"{flag} {out}: is the root directory; refusing to write there")
    if o == _resolved(Path.home()):
        raise ConfigError(f"{flag} {out}: is your home directory; refusing to write there (choose a new "
                          "directory inside it)")
    for label, path in _named(inputs):
        p = _resolved(path)
        if o == p or p in o.parents:
            raise ConfigError(f"{flag} {out}: is inside {label} {path}; write the output elsewhere")
        if o in p.parents:
            raise ConfigError(f"{flag} {out}: contains {label} {path}; writing there could replace the input")
    return o


def check_out(out: str | Path, command: str, inputs: Inputs = (), flag: str = "--out") -> bool:
    """Check that ``command`` may replace or write into ``out``; True if it holds an unfinished
    run of ``command`` in this very directory. Touches nothing; one-line ConfigError otherwise."""
    out = Path(out)
    _check_place(out, inputs, flag)
    if not os.path.lexists(out):
        return False
    if not out.is_dir():
        raise ConfigError(f"{flag} {out}: exists and is not a directory")
    entries = _listing(out)
    record = _read_marker(out)
    refuse = f"refusing to use it (choose another {flag}, or delete it yourself)"
    if record is None:
        if not entries and not (out / MARKER).exists():
            return False
        what = "its marker is not one cbst-tf wrote" if (out / MARKER).exists() else f"no {MARKER}"
        raise ConfigError(f"{flag} {out}: non-empty directory that is not the output of an earlier "
                          f"cbst-tf {command} ({what}); {refuse}")
    if record["command"] != command:
        raise ConfigError(f"{flag} {out}: holds the output of cbst-tf {record['command']}, not of "
                          f"cbst-tf {command}; {refuse}")
    if not record["complete"]:
        here = os.stat(out)
        if record.get("directory") != [here.st_dev, here.st_ino]:
            raise ConfigError(f"{flag} {out}: holds an unfinished cbst-tf {command} run that was started in "
                              f"another directory (copied or restored?); {refuse}")
        return True
    written = record.get("entries")
    if not isinstance(written, dict):
        raise ConfigError(f"{flag} {out}: {MARKER} lists no entries; {refuse}")
    for name in entries:
        if name not in written:
            raise ConfigError(f"{flag} {out}: holds {name}, which cbst-tf {command} did not write; {refuse}")
        if _entry_digest(out / name) != written[name]:
            raise ConfigError(f"{flag} {out}: {name} changed since cbst-tf {command} wrote it; {refuse}")
    return False


@dataclass
class OutClaim:
    """A directory :func:`claim_out` gave to one run of ``command``."""

    path: Path
    command: str
    created: bool
    resumed: bool

    def seal(self) -> None:
        """The run finished: record the digests of everything it wrote (a rerun may replace it)."""
        seal_dir(self.path, self.command)

    def release(self) -> None:
        """After a failure: remove the directory if this run created it and wrote nothing into it."""
        if self.created and self.path.is_dir() and not _listing(self.path):
            shutil.rmtree(self.path, ignore_errors=True)


def claim_out(out: str | Path, command: str, inputs: Inputs = (), flag: str = "--out") -> OutClaim:
    """Check ``out`` like :func:`check_out`, create it if needed and mark it as being written by
    ``command`` (an unfinished run that only this directory can resume)."""
    out = Path(out)
    from cbst_tf.io import check_writable

    resumed = check_out(out, command, inputs, flag)
    created = not os.path.lexists(out)
    if created:
        check_writable(out, f"{flag} directory")
    out.mkdir(parents=True, exist_ok=True)
    here = os.stat(out)
    _write_marker(out, {"command": command, "complete": False, "directory": [here.st_dev, here.st_ino]})
    return OutClaim(out, command, created, resumed)


def claim_marked_out(out: str | Path, tool: str, record: dict, inputs: tuple = (), same: tuple = ()) -> dict | None:
    """``predict`` and ``export``: let ``tool`` write INTO ``out`` file by file; return its earlier marker.

    These commands never replace ``out`` as a whole: a rerun skips the files that are complete
    and ``--shard`` slices write beside each other, so the whole-directory digests of
    :func:`claim_out` do not apply. The same place rules do (root, home, inputs:
    :func:`_check_place`); beyond them ``out`` may be missing, empty, or hold this module's
    :data:`MARKER` written by an earlier run of ``tool`` whose ``same`` fields equal ``record``'s.
    Anything else is refused (exit 2) before anything is touched. The marker records the tool,
    ``tool`` as its command, ``record`` (its ``command``, the command line, as ``command_line``) and
    every name ``written`` so far.
    """
    from cbst_tf.io import atomic_write_json

    out = Path(out)
    _check_place(out, {f"--input{'' if i == 0 else f' {i + 1}'}": p for i, p in enumerate(inputs)}, "--out")
    if os.path.lexists(out) and not out.is_dir():
        raise ConfigError(f"--out {show_path(out)}: exists and is not a directory")
    previous = None
    if out.is_dir() and _listing(out):
        try:
            path = out / MARKER
            previous = json.loads(path.read_bytes()) if path.lstat().st_size <= _MAX_MARKER_BYTES else None
        except (OSError, ValueError, RecursionError):
            previous = None
        if not isinstance(previous, dict) or previous.get("tool") != TOOL or previous.get("command") != tool:
            raise ConfigError(f"--out {show_path(out)}: non-empty directory that is not the output of cbst-tf {tool} "
                              f"(no {MARKER} of it); refusing to write into it (choose another --out)")
        differ = [k for k in same if previous.get(k) != record.get(k)]
        if differ:
            old, new = previous.get(differ[0]), record.get(differ[0])
            if isinstance(old, dict) and isinstance(new, dict):  # name the keys inside, e.g. key.weights
                differ = sorted(k for k in old.keys() | new.keys() if old.get(k) != new.get(k))
            raise ConfigError(f"--out {show_path(out)}: holds the output of another cbst-tf {tool} run "
                              f"(differs in: {', '.join(differ)}); choose another --out or delete it")
    written = set(record.get("written", []))
    if previous and isinstance(previous.get("written"), list):
        written |= {str(w) for w in previous["written"]}
    out.mkdir(parents=True, exist_ok=True)
    fields = {k: v for k, v in record.items() if k != "command"}  # record["command"]: the command line
    atomic_write_json(out / MARKER, {**fields, "tool": TOOL, "command": tool, "command_line": record.get("command"),
                                     "complete": False, "written": sorted(written)})
    return previous
