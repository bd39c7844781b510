"""Self-paced portions (section 4.3, appendix A) and hard-sample-mining classes (official code)."""

import numpy as np
import pytest

from cbst_tf.algos import portion_for_round, rare_classes, source_count
from cbst_tf.errors import CbstError


def test_target_portion_schedule_of_the_paper():
    got = [portion_for_round(r) for r in range(1, 10)]
    assert got == [0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5, 0.5, 0.5]
    assert portion_for_round(3, start=0.1, step=0.2, maximum=0.4) == 0.4


def test_source_count_schedule_of_the_official_code():
    # solve_AO.py: src_port = 0.03 then += 0.0025 while below 0.06, of 1,000 source images
    assert [source_count(r, 1000, 1000) for r in range(1, 16)] == [
        30, 32, 35, 37, 40, 42, 45, 47, 50, 52, 55, 57, 60, 60, 60]
    assert source_count(100, 10_000, 10_000) == 600


def test_source_count_rounding_is_floor_with_a_tolerance_for_binary_error():
    # 0.03 + 2 * 0.0025 = 0.034999999999999996: 1,000 x that floors to 34 without the
    # 1e-9 tolerance, 35 with it (what finetuning has always used).
    assert 1000 * (0.03 + 2 * 0.0025) < 35
    assert source_count(3, 1000, 1000) == 35
    assert source_count(2, 10, 10, start=0.7, step=0.1, maximum=1.0) == 8  # 10 x 0.7999999999999999
    assert source_count(2, 1000, 1000) == 32  # 32.5: floor, not round
    # a ratio of another set's size (source_portion_of: target), capped at the source images
    assert [source_count(r, 600, 1000, 0.25, 0.021, 0.5) for r in (1, 2, 3, 20)] == [150, 162, 175, 300]
    assert source_count(1, 600, 100, 0.25, 0.021, 0.5) == 100
    with pytest.raises(CbstError, match="rounds start at 1"):
        source_count(0, 1000, 1000)


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
