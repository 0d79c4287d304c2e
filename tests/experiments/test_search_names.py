"""experiments/search_names.py: the random-list expectation against an enumeration, and a table's row."""

from __future__ import annotations

import importlib.util
from itertools import combinations

import pandas as pd
import pytest

from eagrl.rewards import jaccard
from tests.conftest import REPO

_spec = importlib.util.spec_from_file_location("search_names", REPO / "experiments" / "search_names.py")
search_names = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(search_names)


@pytest.mark.parametrize(("listed", "target", "shown"), [(5, 3, 16), (3, 3, 16), (1, 2, 4), (4, 4, 4)])
def test_random_jaccard_is_the_mean_over_every_list(listed, target, shown):
    expert = set(range(target))
    lists = list(combinations(range(shown), listed))
    exact = sum(jaccard(names, expert) for names in lists) / len(lists)
    assert search_names.random_jaccard(listed, target, shown) == pytest.approx(exact)


def test_a_row_counts_answers_patients_and_agreement():
    table = pd.DataFrame(
        {
            "patient_id": ["a", "a", "b"],
            "features": [["x", "y"], ["x", "y"], ["z", "w"]],
            "expert_features": [["x", "y"], ["x", "y"], ["x", "q"]],
        }
    )
    row = search_names.describe(table, {"x"}, shown=4)
    assert (row["answers"], row["patients"], row["distinct lists"], row["names per list"]) == (3, 2, 2, 2.0)
    assert row["Jaccard C_exp"] == pytest.approx(2 / 3, abs=1e-3)  # 1, 1, 0
    assert row["Jaccard planted"] == pytest.approx(1 / 3, abs=1e-3)  # 1/2, 1/2, 0
    assert row["random planted"] == pytest.approx(search_names.random_jaccard(2, 1, 4), abs=1e-3)
