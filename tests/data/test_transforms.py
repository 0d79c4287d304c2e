"""LOCF never looks ahead; normalisation statistics come from the train split only."""

from __future__ import annotations

import shutil

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from eagrl.data.datamodule import EHRDataModule
from eagrl.data.transforms import FeatureStats, impute_and_normalise, locf

values_with_gaps = arrays(
    np.float32,
    st.tuples(st.integers(1, 4), st.integers(1, 7), st.integers(1, 5)),
    elements=st.one_of(st.just(np.nan), st.floats(-50, 50, width=32)),
)


@settings(max_examples=200, deadline=None)
@given(values_with_gaps)
def test_locf_never_looks_ahead(values):
    filled = locf(values)
    for step in range(1, values.shape[1] + 1):
        np.testing.assert_array_equal(filled[:, :step], locf(values[:, :step]))
    observed = ~np.isnan(values)
    np.testing.assert_array_equal(filled[observed], values[observed])
    before_first = np.cumsum(observed, axis=1) == 0
    assert np.isnan(filled[before_first]).all()


@settings(max_examples=100, deadline=None)
@given(values_with_gaps)
def test_imputation_is_causal_and_finite(values):
    stats = FeatureStats.fit(values)
    full = impute_and_normalise(values, stats)
    assert np.isfinite(full).all()
    for step in range(1, values.shape[1] + 1):
        np.testing.assert_array_equal(full[:, :step], impute_and_normalise(values[:, :step], stats))


def test_never_observed_feature_gets_train_median():
    train = np.array([[[1.0, np.nan], [3.0, np.nan]], [[5.0, 2.0], [np.nan, 4.0]]], dtype=np.float32)
    stats = FeatureStats.fit(train)
    assert stats.median.tolist() == [3.0, 3.0]
    patient = np.array([[[np.nan, np.nan], [7.0, np.nan]]], dtype=np.float32)
    filled = impute_and_normalise(patient, stats) * stats.std + stats.mean
    np.testing.assert_allclose(filled, [[[3.0, 3.0], [7.0, 3.0]]], rtol=1e-5)


def test_normalisation_statistics_come_from_train_only(tjh, tmp_path):
    """Scaling every val/test value by 1000 leaves the statistics and the train tensors unchanged."""
    altered = tmp_path / "cohort"
    shutil.copytree(tjh.cohort_dir, altered)
    visits = tjh.cohort.visits.copy()
    held_out = ~visits["patient_id"].isin(tjh.arrays["train"].patient_ids)
    names = tjh.features.dynamic_names
    visits.loc[held_out, names] = visits.loc[held_out, names] * 1000
    visits.to_parquet(altered / "visits.parquet", index=False)

    datamodule = EHRDataModule(tjh.dataset_cfg, "mortality", tjh.raw_source, tjh.data_dir)
    datamodule.cohort_dir = altered
    datamodule.setup()
    for name in ("mean", "std", "median"):
        np.testing.assert_array_equal(getattr(datamodule.dynamic_stats, name), getattr(tjh.dynamic_stats, name))
    np.testing.assert_array_equal(datamodule.arrays["train"].values, tjh.arrays["train"].values)
    assert not np.allclose(datamodule.arrays["test"].values, tjh.arrays["test"].values)


def test_batches_have_documented_shapes(tjh):
    batch = next(iter(tjh.train_dataloader()))
    size, steps, width = batch["values"].shape
    assert width == 73 and batch["static"].shape == (size, 2) and batch["visit_mask"].shape == (size, steps)
    assert batch["values"].isfinite().all() and set(batch["label"].tolist()) <= {0.0, 1.0}
    assert (batch["visit_mask"].sum(1) == batch["length"]).all()
