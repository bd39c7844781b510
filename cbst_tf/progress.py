"""Progress reporting for long loops.

A rich progress bar when stdout is a terminal; otherwise (CI, containers, pipes) a plain
log line every N items, so logs stay readable. ``--no-progress`` forces the latter.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")

_STATE = {"enabled": True, "log_every": 50}


def configure(enabled: bool = True, log_every: int | None = None) -> None:
    """Set once by the CLI from ``--no-progress`` and ``runtime.log_every_items``."""
    _STATE["enabled"] = enabled
    if log_every:
        _STATE["log_every"] = log_every


def bars_enabled() -> bool:
    return bool(_STATE["enabled"]) and sys.stdout.isatty()


def log(message: str) -> None:
    """One status line on stderr (stdout stays clean for --json output)."""
    print(message, file=sys.stderr, flush=True)


def track(items: Iterable[T], total: int | None = None, description: str = "working") -> Iterator[T]:
    """Iterate ``items`` while showing progress."""
    if bars_enabled():
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                      TimeElapsedColumn(), TimeRemainingColumn(), transient=False) as bar:
            task = bar.add_task(description, total=total)
            for item in items:
                yield item
                bar.advance(task)
        return
    every = int(_STATE["log_every"])
    start = time.monotonic()
    n = 0
    for item in items:
        yield item
        n += 1
        if n % every == 0 or (total is not None and n == total):
            rate = n / max(time.monotonic() - start, 1e-9)
            of = f"/{total}" if total is not None else ""
            log(f"{description}: {n}{of} ({rate:.1f}/s)")
