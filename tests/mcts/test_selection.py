"""Selection of SFT trajectories: the quality filter, top-k per patient, class balance."""

from __future__ import annotations

import pandas as pd
import pytest

from eagrl.mcts.selection import select_paths
from tests.configs import toy_selection


def _paths():
    rows = [
        # patient, label, node, probability, r_total, r_att, closed, completion
        ("a", 1, 1, 0.9, 0.5, 0.4, True, "a1"),
        ("a", 1, 2, 0.8, 0.4, 0.0, True, "a2"),
        ("a", 1, 3, 0.7, 0.3, 0.2, True, "a3"),
        ("a", 1, 4, 0.3, 0.9, 0.9, True, "a4"),  # wrong side of 0.5
        ("b", 0, 1, 0.1, 0.6, 0.3, False, "b1"),  # a span cut by the budget
        ("b", 0, 2, 0.2, 0.2, 0.3, True, "b2"),
        ("b", 0, 3, 0.2, 0.2, 0.3, True, "b2"),  # the same answer twice
        ("c", 0, 1, None, -5.0, None, True, "c1"),  # unparsed
        ("d", 0, 1, 0.4, 0.1, 0.5, True, "d1"),
    ]
    columns = ["patient_id", "label", "node", "probability", "r_total", "r_att", "closed", "completion"]
    return pd.DataFrame(rows, columns=columns)


def _selected(**settings):
    chosen = select_paths(_paths(), toy_selection(**settings))
    return sorted(zip(chosen["patient_id"], chosen["node"], strict=True))


def test_filters_and_top_k_without_balance():
    assert _selected(top_k=2, balance="none") == [("a", 1), ("a", 2), ("b", 2), ("d", 1)]
    assert _selected(top_k=1, balance="none", min_att=0.3) == [("a", 1), ("b", 2), ("d", 1)]
    assert _selected(top_k=1, balance="none", require_closed=False) == [("a", 1), ("b", 1), ("d", 1)]
    assert _selected(top_k=4, balance="none", correct_side=False) == [
        ("a", 1), ("a", 2), ("a", 3), ("a", 4), ("b", 2), ("d", 1)
    ]  # fmt: skip


def test_balance_keeps_the_best_of_the_larger_class():
    # 3 positives (a1, a2, a3) vs 2 negatives (b2, d1): the lowest-reward positive goes
    assert _selected(top_k=3) == [("a", 1), ("a", 2), ("b", 2), ("d", 1)]


def test_upsampling_repeats_the_best_of_the_smaller_class():
    # 3 positives vs 2 negatives: the best negative (b2, R 0.2) is repeated once
    assert _selected(top_k=3, balance="upsample") == [("a", 1), ("a", 2), ("a", 3), ("b", 2), ("b", 2), ("d", 1)]


def test_top_k_must_be_positive():
    with pytest.raises(Exception, match="top_k"):
        toy_selection(top_k=0)
