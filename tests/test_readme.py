"""README: the generated config reference is current and the quick start is the Makefile's."""

from __future__ import annotations

import re
from pathlib import Path

from cbst_tf.config import REFERENCE_END, REFERENCE_START, reference_markdown

ROOT = Path(__file__).resolve().parents[1]


def test_config_reference_is_current():
    text = (ROOT / "README.md").read_text()
    block = text.split(REFERENCE_START, 1)[1].split(REFERENCE_END, 1)[0]
    assert block.strip() == reference_markdown().strip(), (
        "README's config reference is stale: run `cbst-tf config reference --update README.md`")


def test_quick_start_is_two_make_targets_and_ci_runs_the_test_one():
    text = (ROOT / "README.md").read_text()
    quick = text.split("## Quick start", 1)[1].split("```bash", 1)[1].split("```", 1)[0]
    commands = [line.split("#")[0].strip() for line in quick.strip().splitlines()]
    assert commands == ["make demo", "make test"]
    makefile = (ROOT / "Makefile").read_text()
    for target in ("demo", "test"):
        assert re.search(rf"^{target}: ", makefile, re.M)
    assert "make test" in (ROOT / ".ci" / "run").read_text()
