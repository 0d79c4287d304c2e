"""The synthetic canary (issue 16): seeded, the outcome tied to the planted features only, at a Bayes AUROC of ~0.9."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from eagrl.data.cohort import Cohort, prepare_cohort
from eagrl.data.synthetic import RISK
from eagrl.errors import ConfigError
from eagrl.stages.schemas import check_groups
from tests.conftest import compose_config


def build(tmp_path, overrides: list[str] = ()) -> Cohort:
    """The synthetic cohort of the shipped config with ``overrides``, processed under ``tmp_path``."""
    cfg = compose_config("data", ["dataset=synthetic", *overrides], tmp_path)
    check_groups(cfg)
    return Cohort.load(prepare_cohort(cfg.dataset, cfg.paths.raw_source, cfg.paths.data_dir))


@pytest.fixture(scope="module")
def cohort(tmp_path_factory) -> Cohort:
    """The default cohort (600 patients)."""
    return build(tmp_path_factory.mktemp("synthetic"))


def last_values(cohort: Cohort) -> pd.DataFrame:
    """Each patient's dynamic values at the last visit, carried forward (what a model reads), in patient order."""
    names = cohort.features.dynamic_names
    return cohort.visits.groupby("patient_id")[names].last().loc[cohort.patients["patient_id"]]


def abnormal(cohort: Cohort) -> np.ndarray:
    """Last-visit values outside their reference range: (n patients, F) bool."""
    low = np.array([spec.ref_low for spec in cohort.features.dynamic])
    high = np.array([spec.ref_high for spec in cohort.features.dynamic])
    values = last_values(cohort).to_numpy()
    return (values < low) | (values > high)


def test_small_cohort_is_deterministic_by_seed(tmp_path):
    small = ["dataset.loader.n_patients=80", "dataset.split.test_size=20"]
    first, again = build(tmp_path / "a", small), build(tmp_path / "b", small)
    other = build(tmp_path / "c", [*small, "dataset.loader.seed=1"])
    pd.testing.assert_frame_equal(first.visits, again.visits)
    pd.testing.assert_frame_equal(first.patients, again.patients)
    assert first.manifest["splits"] == again.manifest["splits"]
    assert first.manifest["version"] != other.manifest["version"]  # generator parameters key the cache
    assert not first.visits.equals(other.visits)


def test_record_format(cohort):
    visits, patients = cohort.visits, cohort.patients
    assert len(patients) == 600 and patients["split"].value_counts().to_dict() == {"train": 340, "test": 200, "val": 60}
    counts = visits.groupby("patient_id").size()
    assert counts.min() == 1 and counts.max() == 3 and set(counts) == {1, 2, 3}
    assert (visits.groupby("patient_id")["time"].diff().dropna() > 0).all()
    assert len(cohort.features.dynamic) == 16 and cohort.features.static_names == ["Age", "Sex"]
    assert cohort.manifest["outliers"]["counts"] == {}  # every generated value lies within its valid range
    assert patients["Sex"].isin([0.0, 1.0]).all() and patients["Age"].between(18, 90).all()


def test_missingness_present(cohort):
    missing = cohort.visits[cohort.features.dynamic_names].isna().mean()
    assert (missing > 0).all() and 0.07 < missing.mean() < 0.13


def test_abnormal_rates_equal_for_planted_and_others(cohort):
    planted = np.isin(cohort.features.dynamic_names, cohort.manifest["config"]["planted"])
    rates = abnormal(cohort).mean(axis=0)
    assert np.all(np.abs(rates - 0.2) < 0.05), rates
    assert abs(rates[planted].mean() - rates[~planted].mean()) < 0.03


def test_only_planted_features_are_associated_with_the_label(cohort):
    names = cohort.features.dynamic_names
    planted = np.isin(names, cohort.manifest["config"]["planted"])
    assert planted.sum() == 3
    flags, labels = abnormal(cohort), cohort.patients["mortality"].to_numpy()
    auroc = np.array([roc_auc_score(labels, flags[:, index]) for index in range(len(names))])
    by_name = dict(zip(names, auroc.round(3), strict=True))
    assert auroc[planted].min() > 0.62 and np.abs(auroc[~planted] - 0.5).max() < 0.08, by_name
    for static in cohort.features.static_names:
        assert abs(roc_auc_score(labels, cohort.patients[static]) - 0.5) < 0.08


def test_bayes_auroc_and_outcome_rate(cohort):
    test = cohort.patients[cohort.patients["split"] == "test"]
    assert 0.85 <= roc_auc_score(test["mortality"], test[RISK]) <= 0.95
    assert 0.3 <= cohort.patients["mortality"].mean() <= 0.5


def test_planted_features_must_be_dynamic_features(tmp_path):
    with pytest.raises(ConfigError, match=r"Albumen.*Albumin"):
        build(tmp_path, ["dataset.planted=[Albumen]"])
    with pytest.raises(ConfigError, match="static feature"):
        build(tmp_path, ["dataset.planted=[Age]"])
