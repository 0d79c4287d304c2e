"""max_patients: a seeded, label-stratified sample in split order, the same in every stage."""

from __future__ import annotations

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from eagrl.data.datamodule import stratified_sample
from eagrl.data.prompt import build_prompt
from tests.conftest import compose_config


@given(
    labels=st.lists(st.integers(0, 1), min_size=1, max_size=200).map(np.array),
    fraction=st.floats(0.01, 1.0),
    seed=st.integers(0, 1000),
)
def test_sample_size_order_and_class_shares(labels, fraction, seed):
    count = max(1, round(fraction * len(labels)))
    rows = stratified_sample(labels, count, seed)
    assert len(rows) == count and len(set(rows)) == count
    assert list(rows) == sorted(rows)
    for outcome in (0, 1):
        share = (labels == outcome).sum() * count / len(labels)
        assert abs((labels[rows] == outcome).sum() - share) < 1
    assert np.array_equal(rows, stratified_sample(labels, count, seed))


def test_sample_of_more_than_the_split_is_the_split():
    labels = np.array([1, 0, 0, 1])
    assert list(stratified_sample(labels, 10, seed=0)) == [0, 1, 2, 3]


def test_tjh_subsets_keep_the_outcome_rate_and_agree_across_calls(tjh, data_root):
    """The first 32 patients of TJH's training split are all survivors; a 32-patient subset holds both outcomes at
    the split's rate (41 of 96 died), its prompts are those of its records, and every call returns the same one."""
    cfg = compose_config("data", ["dataset=tjh"], data_root)
    assert {record.label for record in tjh.records("train")[:32]} == {0}
    records = tjh.records("train", 32)
    assert len(records) == 32 and sum(record.label for record in records) in (13, 14)
    assert tjh.prompts("train", cfg.task, cfg.prompt, 32) == [
        build_prompt(record, tjh.features, tjh.dataset_cfg, cfg.task, cfg.prompt) for record in records
    ]
    assert [record.patient_id for record in tjh.records("train", 32)] == [record.patient_id for record in records]
