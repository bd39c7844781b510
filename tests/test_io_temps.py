"""The one temporary-file protocol (cbst_tf.io): every temporary name carries its writer's
``host~pid``, and what a dead writer left behind is found and removed, whoever wrote it."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

from cbst_tf import io


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_writer_gone_tells_dead_alive_self_and_other_hosts():
    host = socket.gethostname()
    assert io.writer_gone(f"{host}~{_dead_pid()}") is True
    assert io.writer_gone(f"{host}~{os.getppid()}") is False  # alive, not us
    assert io.writer_gone(f"{host}~{os.getpid()}") is True  # a restarted container reuses pids
    assert io.writer_gone(f"{host}~not-a-pid") is True
    assert io.writer_gone(f"{host}~{10**30}") is False  # unknowable (OverflowError): kept, never deleted
    assert io.writer_gone(f"other-host-{host}~1") is None


def test_every_temporary_name_of_a_dead_writer_is_removed(tmp_path, monkeypatch):
    """Plain, suffix-keeping (Keras weights) and directory temporaries, and atomic_dir's old copy;
    a live writer's temporary stays."""
    out = tmp_path / "d"
    with io.atomic_dir(out) as tmp:
        (tmp / "f").write_text("1")
    live = tmp_path / f".live.json.tmp-{socket.gethostname()}~{os.getppid()}"  # another process, alive
    live.write_bytes(b"y")
    with monkeypatch.context() as m:  # what a killed writer left: names made while it ran
        m.setattr(io, "temp_tag", lambda: f"{socket.gethostname()}~{_dead_pid()}")
        names = [io._tmp_name(tmp_path / "a.json"), io._tmp_name(tmp_path / "final.weights.h5", keep_suffix=True)]
        real_replace = os.replace
        calls = []

        def killed_after_first_rename(src, dst):  # atomic_dir killed between its two renames
            calls.append((src, dst))
            real_replace(src, dst)
            if len(calls) == 1:
                raise KeyboardInterrupt

        m.setattr(io.os, "replace", killed_after_first_rename)
        try:
            with io.atomic_dir(out) as tmp:
                (tmp / "f").write_text("2")
        except KeyboardInterrupt:
            pass
    old = calls[0][1]
    assert old.name.startswith(".d.old.tmp-") and (old / "f").read_text() == "1"
    assert names[1].name.endswith(".weights.h5")
    for path in names:
        path.write_bytes(b"x")
    removed = sorted(p.name for p in io.remove_stale_temps(tmp_path))
    assert removed == sorted([old.name, *(p.name for p in names)])
    assert live.read_bytes() == b"y"


def test_prefix_and_depth_limit_what_is_looked_at(tmp_path):
    """``data convert`` clears only its own output's temporaries beside it, never the user's folder."""
    tag = f"{socket.gethostname()}~{_dead_pid()}"
    mine = tmp_path / f".out.tmp-{tag}-0123abcd"
    other = tmp_path / f".theirs.tmp-{tag}"
    nested = tmp_path / "sub" / f".out.tmp-{tag}"
    for path in (mine, other, nested):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.mkdir()
    removed = io.remove_stale_temps(tmp_path, prefix=".out.", recursive=False)
    assert removed == [mine]
    assert other.exists() and nested.exists()
