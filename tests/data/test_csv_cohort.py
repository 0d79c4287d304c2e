"""The generic cohort format: TJH round-trips to identical tensors and prompts; bad files fail in one line."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from omegaconf import OmegaConf

from eagrl.data.cohort import SPLITS, prepare_cohort
from eagrl.data.csv_cohort import export_csv_cohort
from eagrl.data.datamodule import EHRDataModule
from eagrl.errors import ConfigError, DataError
from tests.conftest import RAW_SOURCE, compose_config, user_error

#: dataset settings that must match TJH's for the same cohort and prompts
SHARED_KEYS = ("labels", "split", "time_unit", "time_description", "context", "drop_empty_visits", "min_visits")


def csv_dataset(tmp_path, cohort_dir, overrides=(), like=None):
    """The ``dataset=csv`` config pointed at ``cohort_dir`` (with ``like``'s protocol settings when given)."""
    cfg = compose_config("data", ["dataset=csv", f"dataset.cohort_dir={cohort_dir}", *overrides], tmp_path)
    if like is not None:
        cfg.dataset = OmegaConf.merge(cfg.dataset, {key: like[key] for key in SHARED_KEYS})
    return cfg.dataset


@pytest.mark.parametrize("layout", ["wide", "long"])
def test_tjh_round_trip_gives_identical_tensors_and_prompts(tjh, tmp_path, layout):
    export_csv_cohort(tjh.cohort, tmp_path / "cohort", layout=layout)
    dataset = csv_dataset(tmp_path, tmp_path / "cohort", [f"dataset.loader.layout={layout}"], like=tjh.dataset_cfg)
    again = EHRDataModule(dataset=dataset, task="mortality", raw_source=RAW_SOURCE, data_dir=str(tmp_path / "data"))
    again.setup()
    for split in SPLITS:
        original, copy = tjh.arrays[split], again.arrays[split]
        assert copy.patient_ids == original.patient_ids and copy.time_labels == original.time_labels
        for field in ("raw", "values", "observed", "times", "lengths", "static", "static_raw", "labels"):
            np.testing.assert_array_equal(getattr(copy, field), getattr(original, field), err_msg=field)
    cfg = compose_config("data", ["dataset=tjh"], tmp_path)
    assert again.prompts("test", cfg.task, cfg.prompt) == tjh.prompts("test", cfg.task, cfg.prompt)


@pytest.fixture(scope="module")
def exported(tjh, tmp_path_factory):
    """TJH in the generic format, as data frames to corrupt one at a time."""
    paths = export_csv_cohort(tjh.cohort, tmp_path_factory.mktemp("tjh_csv"))
    return {key: pd.read_csv(path, dtype=str) for key, path in paths.items()}


def write(tmp_path, frames, **changed):
    folder = tmp_path / "cohort"
    folder.mkdir()
    for key, frame in (frames | changed).items():
        frame.to_csv(folder / f"{key}.csv", index=False)
    return folder


def prepare(tmp_path, folder, *overrides):
    dataset = csv_dataset(tmp_path, folder, overrides)
    return prepare_cohort(dataset, RAW_SOURCE, tmp_path / "data")


def test_missing_column_names_file_and_column(exported, tmp_path):
    folder = write(tmp_path, exported, labels=exported["labels"].drop(columns="mortality"))
    with pytest.raises(DataError, match=r"labels\.csv: missing column 'mortality'"):
        prepare(tmp_path, folder)


def test_missing_column_is_a_one_line_error(exported, tmp_path):
    """A missing key column stops the run; a missing feature column is a feature never measured
    (tests/data/test_external_cohort.py)."""
    folder = write(tmp_path, exported, static=exported["static"].drop(columns="patient_id"))
    message = user_error("data", ["dataset=csv", f"dataset.cohort_dir={folder}", "logger=none"], tmp_path)
    assert "static.csv: missing column 'patient_id'" in message


def test_label_must_be_binary(exported, tmp_path):
    labels = exported["labels"].copy()
    labels.loc[3, "mortality"] = "2"
    with pytest.raises(DataError, match=r"labels\.csv: column 'mortality' must be 0 or 1"):
        prepare(tmp_path, write(tmp_path, exported, labels=labels))


def test_non_numeric_value_names_file_column_and_row(exported, tmp_path):
    events = exported["events"].copy()
    events.loc[4, "hemoglobin"] = "high"
    with pytest.raises(
        DataError, match=r"events\.csv: column 'hemoglobin' has non-numeric value 'high' \(data row 5\)"
    ):
        prepare(tmp_path, write(tmp_path, exported, events=events))


def test_unknown_feature_in_long_layout(tjh, tmp_path):
    paths = export_csv_cohort(tjh.cohort, tmp_path / "cohort", layout="long")
    events = pd.read_csv(paths["events"], dtype=str)
    events.loc[0, "feature"] = "Troponin X"
    events.to_csv(paths["events"], index=False)
    with pytest.raises(DataError, match=r"events\.csv: column 'feature' has 'Troponin X'"):
        prepare(tmp_path, tmp_path / "cohort", "dataset.loader.layout=long")


def test_corrupt_csv(exported, tmp_path):
    folder = write(tmp_path, exported)
    (folder / "static.csv").write_bytes(b'patient_id,age\n"1,2\n\x00\x00"oops')
    with pytest.raises(DataError, match=r"static\.csv: (cannot read as CSV|none of its 1 patient_id values is in)"):
        prepare(tmp_path, folder)


def test_empty_cohort(exported, tmp_path):
    with pytest.raises(DataError, match=r"empty cohort.*dataset\.min_visits"):
        prepare(tmp_path, write(tmp_path, exported), "dataset.min_visits=1000")


def test_cohort_dir_is_required(tmp_path):
    with pytest.raises(ConfigError, match=r"dataset\.raw_files\.events\.source is not set.*dataset\.cohort_dir"):
        prepare_cohort(compose_config("data", ["dataset=csv"], tmp_path).dataset, RAW_SOURCE, tmp_path / "data")


def test_non_numeric_bound_in_feature_metadata(exported, tmp_path):
    metadata = exported["features"].copy()
    metadata["valid_low"] = ""
    metadata.loc[5, "valid_low"] = "zero"
    folder = write(tmp_path, exported, features=metadata)
    with pytest.raises(
        DataError, match=r"features\.csv: column 'valid_low' of feature .* is 'zero', expected a number"
    ):
        prepare(tmp_path, folder)


def test_bounds_in_feature_metadata_drop_outliers(exported, tmp_path, tjh):
    metadata = exported["features"].copy()
    metadata["valid_low"], metadata["valid_high"] = "", ""
    metadata.loc[metadata["name"] == "Hemoglobin", "valid_high"] = "120"
    directory = prepare(tmp_path, write(tmp_path, exported, features=metadata))
    visits = pd.read_parquet(directory / "visits.parquet")
    expected = int((tjh.cohort.visits["Hemoglobin"] > 120).sum())
    assert json.loads((directory / "manifest.json").read_text())["outliers"]["counts"] == {"Hemoglobin": expected}
    assert expected > 0 and visits["Hemoglobin"].max() <= 120
