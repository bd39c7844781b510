"""Kill a subprocess with SIGKILL as soon as a given checkpoint is resumable (for resume tests)."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path


def kill_at_checkpoint(cmd: list[str], env: dict, state: Path, checkpoint: str, timeout: float) -> int:
    """Start ``cmd``; SIGKILL it once ``state`` (TF's ``checkpoint`` index file, written after
    the checkpoint files) names ``checkpoint``. Returns the process's return code."""
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + timeout
        while not (state.exists() and checkpoint in state.read_text()):
            assert proc.poll() is None and time.monotonic() < deadline, "run ended before it could be killed"
            time.sleep(0.01)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
    return proc.returncode
