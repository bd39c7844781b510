"""TensorFlow's harmless C++ log lines, kept off the user's terminal.

TensorFlow writes some lines straight to file descriptor 2 from C++, whatever
``TF_CPP_MIN_LOG_LEVEL`` says about the rest: at start-up (absl's "All log messages before
absl::InitializeLog()", oneDNN and CUDA notices; :func:`quiet_import` mutes the descriptor
while TensorFlow initialises) and later, at ERROR level, lines that are not errors at all:
``E0000 ... NodeDef mentions attribute use_unbounded_threadpool which is not in the op
definition`` once per input pipeline under ``runtime.deterministic`` (every round of ``make
demo``) and ``oneDNN supports DT_HALF only on platforms with AVX-512``. :func:`filter_stderr`
routes descriptor 2 through a thread that drops exactly these lines and passes everything
else through unchanged. ``--debug`` shows them all.
"""

from __future__ import annotations

import atexit
import os
import re
import sys
import threading

#: The lines dropped: TF's own known-harmless messages, matched on their text.
HARMLESS = re.compile(rb"NodeDef mentions attribute use_unbounded_threadpool|oneDNN supports DT_HALF only")
# An absl log line ("E0000 00:00:1700000000.1 123 file.cc:12] ..."): held back until it is complete.
_LOG_START = re.compile(rb"\A[IWEF](\d{0,4}|\d{4} .*)\Z", re.S)
_STATE: dict = {}


def quiet_import() -> None:
    """Import TensorFlow and initialise its devices with file descriptor 2 muted."""
    if "tensorflow" in sys.modules:
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.stderr.flush()
    saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        import tensorflow as tf

        tf.config.list_physical_devices()
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def _pump(read_fd: int, write_fd: int) -> None:
    pending, at_start = b"", True
    while True:
        try:
            chunk = os.read(read_fd, 65536)
        except OSError:
            chunk = b""
        data, pending = pending + chunk, b""
        out = []
        while data:  # segments end at "\n" or "\r" (a progress bar's update)
            ends = [i for i in (data.find(b"\n"), data.find(b"\r")) if i >= 0]
            if not ends:
                if at_start and chunk and _LOG_START.match(data) and len(data) < 65536:
                    pending = data  # maybe the start of a line to drop: wait for its end
                else:
                    out.append(data)
                    at_start = False
                break
            end = min(ends) + 1
            segment, data = data[:end], data[end:]
            if not (at_start and HARMLESS.search(segment)):
                out.append(segment)
            at_start = True
        if out:
            try:
                os.write(write_fd, b"".join(out))
            except OSError:
                pass
        if not chunk:
            os.close(read_fd)
            return


def filter_stderr() -> None:
    """From now on, drop :data:`HARMLESS` lines from file descriptor 2 (idempotent)."""
    if _STATE:
        return
    sys.stderr.flush()
    read_fd, write_fd = os.pipe()
    real = os.dup(2)
    os.dup2(write_fd, 2)
    os.close(write_fd)
    thread = threading.Thread(target=_pump, args=(read_fd, real), name="stderr-filter", daemon=True)
    thread.start()
    _STATE.update(real=real, thread=thread)
    atexit.register(restore_stderr)


def restore_stderr() -> None:
    """Give file descriptor 2 back and let the filter write out what it holds."""
    if not _STATE:
        return
    try:
        sys.stderr.flush()
    except (OSError, ValueError):
        pass
    os.dup2(_STATE["real"], 2)  # closes the pipe's last write end: the filter reads EOF and stops
    _STATE["thread"].join(timeout=5)
    os.close(_STATE.pop("real"))
    _STATE.clear()
