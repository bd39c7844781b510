"""The table of bad inputs and faults in docs/BAD_INPUTS.md, checked by the tests that produce them.

Every row names a case id. The test that reproduces the case calls :func:`check` with the exit
code and output it observed; the row's exit code and message must match (``<tmp>`` stands for
the test's temporary directory, ``*`` for any text). ``test_bad_inputs_doc`` fails if a row is
not checked by any test, so the table cannot go stale in either direction.
"""

from __future__ import annotations

import functools
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

DOC = Path(__file__).resolve().parents[1] / "docs" / "BAD_INPUTS.md"
_ROW = re.compile(r"^\|\s*`([a-z0-9_-]+)`\s*\|(.*)\|\s*(\d+)\s*\|\s*`(.*)`\s*\|\s*$")


@functools.cache
def table() -> dict[str, tuple[int, str]]:
    """{case id: (exit code, message pattern)} from the Markdown table."""
    rows = {}
    for line in DOC.read_text().splitlines():
        m = _ROW.match(line)
        if m:
            assert m.group(1) not in rows, f"duplicate case id {m.group(1)} in {DOC}"
            rows[m.group(1)] = (int(m.group(3)), m.group(4))
    return rows


def check(case: str, exit_code: int, output: str, tmp: Path | None = None) -> str:
    """Assert the observed ``exit_code`` / ``output`` match row ``case``; return the matching line."""
    code, pattern = table()[case]
    text = output.replace(str(tmp.resolve()), "<tmp>").replace(str(tmp), "<tmp>") if tmp else output
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    assert exit_code == code, f"{case}: exit {exit_code}, documented {code}; output:\n{output}"
    errors = [line for line in lines if line.startswith("error:")]
    if code not in (0, 130, 143):  # a signal prints "interrupted" / "terminated"
        assert len(errors) == 1, f"{case}: expected ONE error line, got:\n{output}"
    regex = re.compile(".*".join(re.escape(part) for part in pattern.split("*")) + r"\Z")
    hits = [line for line in lines if regex.match(line)]
    assert hits, f"{case}: no line matches the documented {pattern!r}; output:\n{text}"
    return hits[0]


runner = CliRunner()


@pytest.fixture(autouse=True)
def reset_debug():
    """``--debug`` is process state of the CLI; one test's flag must not leak into the next.

    Autouse in every module that imports it."""
    from cbst_tf import cli

    cli.common.STATE["debug"] = False
    yield


def run(*args) -> tuple[int, str]:
    """``cbst-tf --no-progress ARGS`` in process: (exit code, output)."""
    from cbst_tf import cli

    result = runner.invoke(cli.app, ["--no-progress", *[str(a) for a in args]])
    return result.exit_code, result.output
