"""docs/BAD_INPUTS.md cannot go stale: every documented case is checked by a test, and back."""

from __future__ import annotations

import re
from pathlib import Path

from badcase import table


def test_every_documented_case_is_reproduced_by_a_test():
    checked, literals = set(), set()
    for path in Path(__file__).parent.glob("test_*.py"):
        text = path.read_text()
        checked |= set(re.findall(r'check\(\s*"([a-z0-9_-]+)"', text))
        literals |= set(re.findall(r'"([a-z0-9_-]+)"', text))  # parametrised cases: check(case, ...)
    documented = set(table())
    assert documented - (checked | literals) == set(), "documented but never checked"
    assert checked - documented == set(), "checked but not documented"
    assert len(documented) >= 30
