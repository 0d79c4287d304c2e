"""report.md pieces: the declared-features table beside the expert's salient features."""

from __future__ import annotations

import pandas as pd

from eagrl.evaluation.report import top_features


def test_feature_table_says_when_the_policy_names_no_feature():
    importance = pd.DataFrame({"split": ["test", "test", "train"], "top_k": [["LDH", "CRP"], ["LDH"], ["Urea"]]})
    silent = top_features(pd.DataFrame({"features": [[], []]}), importance)
    assert "| 1 |  |  | LDH | 2 |" in silent
    assert "named no feature of the dataset in any of its 2 test answers" in silent
    named = top_features(pd.DataFrame({"features": [["CRP"], []]}), importance)
    assert "| 1 | CRP | 1 | LDH | 2 |" in named and "named no feature" not in named
