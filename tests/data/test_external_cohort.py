"""External cohorts: files that lack feature columns (never measured), ``dataset.split=none`` (all of it is test),
and a datamodule normalised with another cohort's training statistics."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from eagrl.data.cohort import Cohort, assign_splits, prepare_cohort
from eagrl.data.csv_cohort import export_csv_cohort
from eagrl.data.datamodule import EHRDataModule, Normalisation
from eagrl.data.tjh import subset_workbook
from eagrl.errors import ConfigError
from tests.conftest import RAW_SOURCE, compose_config

TJH_FILE = Path(RAW_SOURCE) / "tjh" / "time_series_375_prerpocess_en.xlsx"
LABS = ["Lactate dehydrogenase", "Lymphocyte (%)", "High-sensitivity C-reactive protein"]


@pytest.fixture(scope="module")
def three_labs(tmp_path_factory, tjh) -> Path:
    """The TJH workbook's first 60 test patients with age, sex and 3 labs (the other 70 lab columns left out)."""
    folder = tmp_path_factory.mktemp("tjh3")
    patients = tjh.arrays["test"].patient_ids[:60]
    subset_workbook(TJH_FILE, folder / "cohort.xlsx", tjh.features, ["Age", "Sex", *LABS], patients)
    return folder


def external(three_labs: Path, tmp_path: Path, *extra: str):
    return compose_config("data", ["dataset=tjh_external", f"dataset.cohort_dir={three_labs}", *extra], tmp_path)


def test_a_workbook_without_most_labs_is_read_with_them_never_measured(three_labs, tjh, tmp_path, caplog):
    """The TJH loader used to stop at the first absent column ('missing column ...')."""
    cfg = external(three_labs, tmp_path)
    with caplog.at_level(logging.WARNING):
        cohort = Cohort.load(prepare_cohort(cfg.dataset, RAW_SOURCE, tmp_path / "data"))
    absent = [name for name in tjh.features.dynamic_names if name not in LABS]
    assert cohort.manifest["absent_features"] == absent and len(absent) == 70
    assert "70 of 75 feature columns absent, treated as never measured" in caplog.text
    assert cohort.visits[absent].isna().all().all() and cohort.visits[LABS].notna().any(axis=1).all()
    assert all(cohort.manifest["never_measured"][name] == len(cohort.patients) for name in absent)
    # split none: every patient is a test patient
    assert set(cohort.patients["split"]) == {"test"} and cohort.manifest["cohort"]["train"]["patients"] == 0
    assert set(cohort.patients["patient_id"]) <= set(tjh.arrays["test"].patient_ids[:60])
    # the kept values are those of the full cohort (same days, same means) where the full cohort has that day
    full = tjh.cohort.visits.set_index(["patient_id", "time_label"])[LABS]
    mine = cohort.visits.set_index(["patient_id", "time_label"])[LABS]
    np.testing.assert_allclose(mine.to_numpy(), full.loc[mine.index].to_numpy(), equal_nan=True)


def test_a_csv_cohort_without_some_columns(tjh, tmp_path, caplog):
    folder = tmp_path / "cohort"
    paths = export_csv_cohort(tjh.cohort, folder)
    events = pd.read_csv(paths["events"])
    events.drop(columns=["Lactate dehydrogenase", "hemoglobin"]).to_csv(paths["events"], index=False)
    pd.read_csv(paths["static"]).drop(columns="age").to_csv(paths["static"], index=False)
    cfg = compose_config("data", ["dataset=csv", f"dataset.cohort_dir={folder}", "dataset.split=none"], tmp_path)
    with caplog.at_level(logging.WARNING):
        cohort = Cohort.load(prepare_cohort(cfg.dataset, RAW_SOURCE, tmp_path / "data"))
    assert set(cohort.manifest["absent_features"]) >= {"Age", "Lactate dehydrogenase", "Hemoglobin"}
    assert cohort.patients["Age"].isna().all() and cohort.visits["Hemoglobin"].isna().all()
    assert "2 of 73 feature columns absent" in caplog.text


def test_split_none_and_a_bad_split_value():
    patients = pd.DataFrame({"patient_id": ["a", "b", "c"], "mortality": [0, 1, 0]})
    assert assign_splits(patients, "none").tolist() == ["test"] * 3
    assert assign_splits(patients, "None").tolist() == ["test"] * 3
    with pytest.raises(ConfigError, match=r"dataset\.split must be 'none' or a split protocol"):
        assign_splits(patients, "random")


def test_an_external_cohort_is_normalised_with_the_training_statistics(three_labs, tjh, tmp_path):
    cfg = external(three_labs, tmp_path)
    stats = tjh.normalisation
    again = Normalisation.from_json(json.loads(json.dumps(stats.to_json())))  # float32 through JSON: exact
    assert again.static_names == stats.static_names and again.dynamic_names == stats.dynamic_names
    for kind in ("static", "dynamic"):
        for key in ("mean", "std", "median"):
            assert np.array_equal(getattr(getattr(again, kind), key), getattr(getattr(stats, kind), key))
    datamodule = EHRDataModule(cfg.dataset, "mortality", RAW_SOURCE, str(tmp_path / "data"), normalisation=stats)
    datamodule.setup()
    arrays = datamodule.arrays["test"]
    assert not datamodule.arrays["train"].patient_ids and len(arrays.patient_ids) > 0
    column = tjh.features.dynamic_names.index("Hemoglobin")  # never measured here: the training median, normalised
    expected = (stats.dynamic.median[column] - stats.dynamic.mean[column]) / stats.dynamic.std[column]
    assert np.allclose(arrays.values[:, :, column], expected) and not arrays.observed[:, :, column].any()
    # the same patient's record in the full cohort: identical inputs for the labs both hold on its first visit
    row, pid = 0, arrays.patient_ids[0]
    full = tjh.arrays["test"]
    full_row = full.patient_ids.index(pid)
    for name in LABS:
        index = tjh.features.dynamic_names.index(name)
        if full.observed[full_row, 0, index] and arrays.observed[row, 0, index]:
            assert arrays.values[row, 0, index] == full.values[full_row, 0, index]
    assert len(datamodule.records("test", max_patients=10)) == 10  # split none: sampling still seeded


def test_statistics_of_other_features_are_refused(three_labs, tjh, tmp_path):
    cfg = external(three_labs, tmp_path)
    stats = tjh.normalisation
    for static_names, message in (
        (["Age", "Height"], "the model's feature 'Height' is not in it"),
        (["Sex", "Age"], "the same names in another order"),
    ):
        other = Normalisation(static_names, stats.dynamic_names, stats.static, stats.dynamic)
        datamodule = EHRDataModule(cfg.dataset, "mortality", RAW_SOURCE, str(tmp_path / "data"), normalisation=other)
        with pytest.raises(ConfigError, match=f"has other static features than the model \\({message}"):
            datamodule.setup()
