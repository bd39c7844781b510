"""Self-paced portions (section 4.3, appendix A) and hard-sample-mining classes (official code)."""

import numpy as np
import pytest

from cbst_tf.errors import CbstError
from cbst_tf.selftrain import portion_for_round, rare_classes, source_portion_for_round


def test_target_portion_schedule_of_the_paper():
    got = [portion_for_round(r) for r in range(1, 10)]
    assert got == [0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5, 0.5, 0.5]
    assert portion_for_round(3, start=0.1, step=0.2, maximum=0.4) == 0.4


def test_source_portion_schedule_of_the_official_code():
    # solve_AO.py: src_port = 0.03 then += 0.0025 while below 0.06
    official, port = [], 0.03
    for _ in range(15):
        official.append(round(port, 12))
        if port < 0.06:
            port += 0.0025
    assert [source_portion_for_round(r) for r in range(1, 16)] == official
    assert source_portion_for_round(100) == 0.06


def test_round_must_start_at_one():
    with pytest.raises(CbstError, match="rounds start at 1"):
        portion_for_round(0)


def official_mine_ids(cls_size, mine_thresh=0.001, mine_id_number=3):
    """The official code's two lists, verbatim (self-paced-self-trained-segresnet.py)."""
    priority = np.nonzero(cls_size / np.sum(cls_size) < mine_thresh)[0]
    mine_id = np.argsort(cls_size / np.sum(cls_size), kind="stable")[:mine_id_number]
    return priority.tolist(), mine_id.tolist()


def test_rare_classes_below_threshold_rarest_first():
    counts = np.array([500_000, 300, 200_000, 0, 100, 150_000, 40])
    priority, _ = official_mine_ids(counts)
    got = rare_classes(counts)
    assert sorted(got) == priority == [1, 3, 4, 6]
    assert got == [3, 6, 4, 1]  # rarest first


def test_rare_classes_fall_back_to_the_rarest_three():
    counts = np.array([400, 100, 300, 200, 500])
    priority, mine_id = official_mine_ids(counts)
    assert priority == []
    assert rare_classes(counts) == mine_id == [1, 3, 2]
    assert rare_classes(counts, min_classes=1) == [1]
    assert rare_classes(counts, threshold=0.1) == [1]  # 100/1500 < 0.1 <= 200/1500


def test_rare_classes_bad_input():
    with pytest.raises(CbstError, match="no pixel"):
        rare_classes(np.zeros(4))
    with pytest.raises(CbstError, match="non-negative"):
        rare_classes(np.array([1, -2, 3]))
