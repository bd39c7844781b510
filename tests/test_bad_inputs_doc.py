"""docs/BAD_INPUTS.md cannot go stale: every documented case is checked by a test, and back."""

from __future__ import annotations

import re
from pathlib import Path

from badcase import table


def test_every_documented_case_is_reproduced_by_a_test():
    used = set()
    for path in Path(__file__).parent.glob("test_*.py"):
        used |= set(re.findall(r'check\(\s*"([a-z0-9_-]+)"', path.read_text()))
        used |= set(re.findall(r'CASE\s*=\s*"([a-z0-9_-]+)"', path.read_text()))
    documented = set(table())
    assert documented - used == set(), "documented but never checked"
    assert used - documented == set(), "checked but not documented"
    assert len(documented) >= 7
