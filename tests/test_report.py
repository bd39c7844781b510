"""Demo report pieces: the pseudo-label quality table and figure."""

from __future__ import annotations

import numpy as np

from cbst_tf.algos.quality import quality_summary
from cbst_tf.report import plot_quality, quality_table


def _round(selected, correct, true):
    return {"pseudo_label_quality": quality_summary(np.array([selected, correct, true]))}


def test_quality_table_and_plot(tmp_path):
    c = 19
    sel, cor, tru = np.zeros(c, int), np.zeros(c, int), np.zeros(c, int)
    sel[0], cor[0], tru[0] = 10, 9, 30
    sel[2], cor[2], tru[2] = 4, 1, 2
    tru[5] = 7
    rounds = {"ST": [_round(sel, cor, tru)], "CBST": [_round(sel, cor, tru), _round(2 * sel, cor, tru)]}
    md = quality_table(rounds)
    lines = md.splitlines()
    assert lines[0] == "| Method | round 1 | round 2 |"
    assert lines[2] == "| ST | 71 / 26 |"  # 10/14 right; 10 of 39 true pixels
    assert lines[3] == "| CBST | 71 / 26 | 36 / 26 |"
    cbst_last = [row for row in lines if row.startswith("| CBST |")][-1].split(" | ")
    assert cbst_last[1] == "45 / 30" and cbst_last[3] == "12 / 50" and cbst_last[6] == "- / 0"
    out = plot_quality(rounds, tmp_path / "q.png")
    assert out.stat().st_size > 1000
