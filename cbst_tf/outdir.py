"""Which directories ``--out`` may replace: only what this tool wrote there before.

``data convert`` and ``data synth`` rebuild their output under a temporary name and swap it
into place, which deletes what was there. That is only acceptable for an earlier output of
the same command: a converted dataset (recognised by its ``manifest.json``) or a synthetic
benchmark (its ``synth.json``, or the ownership marker written when the run started). Any
other non-empty directory, a regular file, or an output inside or above the input is refused
with a one-line error (exit 2) before anything is touched.

``predict`` and ``export`` write into their ``--out`` (never replacing it as a whole); it is
theirs when it holds their marker (:func:`claim_marked_out`).
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

from cbst_tf.errors import ConfigError

#: Written into a fresh ``data synth --out`` directory before rendering, so a killed run can be
#: resumed (its synth.json only appears at the end) while a user's own folder cannot be taken.
SYNTH_MARKER = ".cbst-synth-out"
_TEMP = re.compile(r"^\..+\.(tmp|old)-")


def _resolved(path: Path) -> Path:
    return Path(os.path.abspath(Path(path).expanduser().resolve()))


def _contents(out: Path) -> list[str]:
    try:
        return sorted(os.listdir(out))
    except PermissionError:
        raise ConfigError(f"--out {out}: directory is not readable") from None


def check_convert_out(out: str | Path, root: str | Path) -> None:
    """Refuse a ``data convert --out`` that would destroy something that is not a converted dataset."""
    out, root = Path(out), Path(root)
    o, r = _resolved(out), _resolved(root)
    if o == r or r in o.parents:
        raise ConfigError(f"--out {out}: is inside --root {root}; write the converted dataset elsewhere")
    if o in r.parents:
        raise ConfigError(f"--out {out}: contains --root {root}; replacing it would delete the raw dataset")
    if not os.path.lexists(out):
        return
    if not out.is_dir():
        raise ConfigError(f"--out {out}: exists and is not a directory")
    entries = [e for e in _contents(out) if not _TEMP.match(e)]
    if entries and "manifest.json" not in entries:
        raise ConfigError(f"--out {out}: non-empty directory that is not a converted dataset (no manifest.json); "
                          "refusing to replace it (choose another --out, or delete it yourself)")


def claim_synth_out(out: str | Path) -> bool:
    """Check that ``data synth --out`` may write into ``out``; mark it ours. True if it was created here."""
    out = Path(out)
    if os.path.lexists(out) and not out.is_dir():
        raise ConfigError(f"--out {out}: exists and is not a directory")
    created = not out.exists()
    if not created:
        entries = [e for e in _contents(out) if not _TEMP.match(e)]
        if entries and "synth.json" not in entries and SYNTH_MARKER not in entries:
            raise ConfigError(f"--out {out}: non-empty directory that is not a synthetic benchmark (no synth.json); "
                              "refusing to write into it (choose another --out, or delete it yourself)")
    out.mkdir(parents=True, exist_ok=True)
    (out / SYNTH_MARKER).touch()
    return created


def release_synth_out(out: str | Path, created: bool) -> None:
    """After a failed ``data synth``: remove ``out`` if this run created it and nothing complete is in it."""
    out = Path(out)
    if not created or not out.is_dir():
        return
    if all(e == SYNTH_MARKER or _TEMP.match(e) for e in _contents(out)):
        shutil.rmtree(out, ignore_errors=True)


#: The ownership record of a ``predict`` / ``export`` --out: {"tool", "command", "key", "written"}.
OUT_MARKER = ".cbst-out.json"


def claim_marked_out(out: str | Path, tool: str, record: dict, inputs: tuple = (), same: tuple = ()) -> dict | None:
    """Let ``tool`` write into ``out``; return the marker of its earlier run there (None if new).

    ``out`` may be missing, empty, or hold :data:`OUT_MARKER` of an earlier run of ``tool`` whose
    ``same`` fields equal ``record``'s. A file, someone else's folder, another tool's output or a
    directory inside (or equal to) one of ``inputs`` is refused (exit 2) before anything is
    touched. The marker then records ``tool``, ``record`` and every name ``written`` so far.
    """
    import json

    from cbst_tf.io import atomic_write_json

    out = Path(out)
    for given in inputs:
        if _resolved(out) == _resolved(given) or _resolved(given) in _resolved(out).parents:
            raise ConfigError(f"--out {out}: is inside --input {given}; write the outputs elsewhere")
    if os.path.lexists(out) and not out.is_dir():
        raise ConfigError(f"--out {out}: exists and is not a directory")
    previous = None
    if out.is_dir() and [e for e in _contents(out) if not _TEMP.match(e)]:
        try:
            previous = json.loads((out / OUT_MARKER).read_text())
        except (OSError, ValueError):
            pass
        if not isinstance(previous, dict) or previous.get("tool") != tool:
            raise ConfigError(f"--out {out}: non-empty directory that is not the output of cbst-tf {tool} "
                              f"(no {OUT_MARKER} of it); refusing to write into it (choose another --out)")
        differ = [k for k in same if previous.get(k) != record.get(k)]
        if differ:
            old, new = previous.get(differ[0]), record.get(differ[0])
            if isinstance(old, dict) and isinstance(new, dict):  # name the keys inside, e.g. key.weights
                differ = sorted(k for k in old.keys() | new.keys() if old.get(k) != new.get(k))
            raise ConfigError(f"--out {out}: holds the output of another cbst-tf {tool} run (differs in: "
                              f"{', '.join(differ)}); choose another --out or delete it")
    written = set(record.get("written", []))
    if previous and isinstance(previous.get("written"), list):
        written |= {str(w) for w in previous["written"]}
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / OUT_MARKER, {**record, "tool": tool, "written": sorted(written)})
    return previous
