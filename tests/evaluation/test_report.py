"""report.md pieces: declared features beside each patient's C_exp, and the paired differences between methods."""

from __future__ import annotations

import numpy as np
import pandas as pd

from eagrl.evaluation.report import differences, expert_sets, patient_examples, top_features


def _importance() -> pd.DataFrame:
    """An expert's importance file for three patients, indexed by patient id."""
    ranking = ["LDH", "CRP", "Urea", "Albumin"]
    return pd.DataFrame(
        {"patient_id": ["a", "b", "c"], "ranking": [ranking] * 3, "top_k": [ranking[:2]] * 3}
    ).set_index("patient_id")


def test_feature_table_says_when_the_policy_names_no_feature():
    sets = pd.Series([["LDH", "CRP"], ["LDH"]], index=["a", "b"])
    silent = top_features(pd.DataFrame({"features": [[], []]}, index=["a", "b"]), sets)
    assert "| 1 |  |  | LDH | 2 |" in silent
    assert "named no feature of the dataset in any of its 2 test answers" in silent
    named = top_features(pd.DataFrame({"features": [["CRP"], []]}, index=["a", "b"]), sets)
    assert "| 1 | CRP | 1 | LDH | 2 |" in named and "named no feature" not in named


def test_c_exp_is_the_experts_top_k_among_the_features_the_prompt_showed():
    predictions = pd.DataFrame(
        {"features": [[], [], []], "observed_features": [["CRP", "Urea", "Albumin"], ["LDH"], []]},
        index=["a", "b", "c"],
    )
    sets = expert_sets(predictions, _importance(), top_k=2)
    assert sets.to_dict() == {"a": ["CRP", "Urea"], "b": ["LDH"], "c": []}
    # answers recorded before the prompt's features were: the expert's own top-k over all features, for everyone
    older = predictions.assign(observed_features=[["CRP"], None, None])
    assert expert_sets(older, _importance(), top_k=2).to_dict() == {key: ["LDH", "CRP"] for key in "abc"}


def test_paired_differences_are_signed_and_their_interval_brackets_the_point():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 80)
    index = [f"p{i:02d}" for i in range(80)]
    good = pd.DataFrame({"label": labels, "probability": labels * 0.6 + rng.random(80) * 0.5}, index=index)
    chance = pd.DataFrame({"label": labels, "probability": rng.random(80)}, index=index)
    good["features"] = [["LDH"]] * 80
    chance["features"] = [[]] * 80
    sets = pd.Series([["LDH"]] * 80, index=index)
    table = differences({"eagrl": good, "base": chance.iloc[::-1]}, "eagrl", sets)
    (row,) = [line for line in table.splitlines() if line.startswith("| eagrl − base (80 patients)")]
    auroc, _auprc, overlap = (cell.strip() for cell in row.split("|")[2:5])
    point, low, high = (float(value) for value in auroc.replace("[", "").replace("]", "").replace(",", "").split())
    assert point > 20 and 0 < low <= point <= high  # the good scores beat chance; rows were matched by patient
    assert overlap.startswith("+1.000")  # every declared list equals C_exp, the base names nothing


def test_patient_examples_show_each_outcome_with_declared_and_expert_features():
    predictions = pd.DataFrame(
        {"label": [1, 0, 1, 0], "probability": [0.9, 0.1, 0.8, 0.2], "features": [["LDH"], [], ["CRP"], ["LDH"]]},
        index=["a", "b", "c", "d"],
    )
    sets = pd.Series([["LDH", "CRP"]] * 4, index=list("abcd"))
    table = patient_examples(predictions, sets, count=1)
    assert "| a | 1 | 0.90 | LDH | LDH; CRP | 0.50 |" in table
    assert "| b | 0 | 0.10 | (none) | LDH; CRP | 0.00 |" in table
    assert "| c |" not in table and "| d |" not in table
