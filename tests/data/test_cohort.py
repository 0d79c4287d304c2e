"""The paper's data protocol on the real TJH and PhysioNet 2012 files."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from eagrl.data.cohort import SPLITS, Cohort, apply_bounds, assign_splits, cohort_table, prepare_cohort
from eagrl.data.features import FeatureSpec
from tests.conftest import RAW_SOURCE, compose_config

#: TJH after the protocol (README "Cohorts"): 375 raw -> 361 with a dated record (ClinicRealm's 361 / 166)
#: -> 310 with >= 2 visits holding a lab value; split 200 test (random), rest 7/8 train, 1/8 val (stratified).
TJH_TABLE = {
    "train": {"patients": 96, "mortality=1": 41, "visits": 402},
    "val": {"patients": 14, "mortality=1": 6, "visits": 56},
    "test": {"patients": 200, "mortality=1": 87, "visits": 831},
    "all": {"patients": 310, "mortality=1": 134, "visits": 1289},
}


def test_tjh_cohort_matches_documented_numbers(tjh):
    table = cohort_table(tjh.cohort.patients, tjh.cohort.visits, ["mortality"])
    for split, expected in TJH_TABLE.items():
        assert table.loc[split, list(expected)].to_dict() == expected, split
    assert tjh.cohort.manifest["dropped"] == {"no dated record": 14, "fewer than 2 visits": 51}
    assert len(tjh.features.static) == 2 and len(tjh.features.dynamic) == 73


@pytest.mark.parametrize("name", ["tjh", "physionet"])
def test_no_patient_in_two_splits(name, request):
    datamodule = request.getfixturevalue(name)
    ids = {split: set(datamodule.arrays[split].patient_ids) for split in SPLITS}
    assert not ids["train"] & ids["val"] and not ids["train"] & ids["test"] and not ids["val"] & ids["test"]
    assert sum(map(len, ids.values())) == len(datamodule.cohort.patients)
    manifest_ids = {split: set(datamodule.cohort.manifest["splits"][split]) for split in SPLITS}
    assert manifest_ids == ids


def test_every_patient_has_min_visits_and_ordered_times(tjh, physionet):
    for datamodule in (tjh, physionet):
        visits = datamodule.cohort.visits
        assert visits.groupby("patient_id").size().min() >= 2
        assert (visits.groupby("patient_id")["time"].diff().dropna() > 0).all()
        assert visits[datamodule.features.dynamic_names].notna().any(axis=1).all()


def test_physionet_protocol(physionet):
    manifest = physionet.cohort.manifest
    assert manifest["dropped"]["no time series"] == 10  # stays with descriptors only (README "Cohorts")
    patients = physionet.cohort.patients
    assert len(patients) == 8000 - 10 - manifest["dropped"]["fewer than 2 visits"]
    rates = patients.groupby("split")["mortality"].mean()
    assert rates.max() - rates.min() < 0.01  # stratified
    counts = patients["split"].value_counts(normalize=True)
    assert counts["train"] == pytest.approx(0.8, abs=0.005) and counts["test"] == pytest.approx(0.1, abs=0.005)
    assert physionet.cohort.visits["time"].max() <= 47 and len(physionet.features.dynamic) == 37


def test_split_is_reproducible_and_seeded():
    patients = pd.DataFrame({"patient_id": [str(i) for i in range(300)], "y": np.arange(300) % 3 == 0})
    cfg = {"seed": 42, "test_size": 100, "val_size": 0.125, "stratify_test": False, "stratify_val": True, "label": "y"}
    first, again = assign_splits(patients, cfg), assign_splits(patients, cfg)
    other = assign_splits(patients, cfg | {"seed": 7})
    assert first.equals(again) and not first.equals(other)
    assert (first == "test").sum() == 100 and (first == "val").sum() == 25


def test_grouped_split_keeps_a_subject_in_one_split_and_samples_train_val():
    subjects = [str(i // 3) for i in range(600)]  # 200 subjects with 3 admissions each
    patients = pd.DataFrame({"patient_id": [str(i) for i in range(600)], "subject_id": subjects})
    patients["y"] = patients["subject_id"].astype(int) % 4 == 0
    cfg = {"seed": 1, "test_size": 40, "val_size": 20, "stratify_test": True, "stratify_val": True, "label": "y"}
    split = assign_splits(patients, cfg | {"group": "subject_id", "train_val_size": 100})
    assert (split.groupby(patients["subject_id"]).nunique(dropna=False) == 1).all()
    per_subject = split.groupby(patients["subject_id"]).first().value_counts(dropna=False)
    assert per_subject.to_dict() == {"train": 80, np.nan: 60, "test": 40, "val": 20}


def test_bounds_drop_or_clip_and_count():
    spec = FeatureSpec(column="hr", name="Heart rate", kind="dynamic", valid_low=0.0, valid_high=300.0)
    frame = pd.DataFrame({"Heart rate": [-5.0, 80.0, np.nan, 999.0]})
    dropped, counts = apply_bounds(frame, (spec,), "drop")
    clipped, _ = apply_bounds(frame, (spec,), "clip")
    assert counts == {"Heart rate": 2} and frame["Heart rate"].iloc[0] == -5.0
    np.testing.assert_array_equal(dropped["Heart rate"], [np.nan, 80.0, np.nan, np.nan])
    np.testing.assert_array_equal(clipped["Heart rate"], [0.0, 80.0, np.nan, 300.0])


def test_rerun_reuses_cache(tjh, data_root):
    cfg = compose_config("data", ["dataset=tjh"], data_root)
    manifest = tjh.cohort_dir / "manifest.json"
    before = manifest.stat().st_mtime_ns
    again = prepare_cohort(cfg.dataset, RAW_SOURCE, data_root / "data")
    assert again == tjh.cohort_dir and manifest.stat().st_mtime_ns == before
    changed = compose_config("data", ["dataset=tjh", "dataset.min_visits=3"], data_root)
    other = prepare_cohort(changed.dataset, RAW_SOURCE, data_root / "data")
    assert other != tjh.cohort_dir
    assert json.loads((other / "manifest.json").read_text())["cohort"]["all"]["patients"] < 310
    assert Cohort.load(other).patients["patient_id"].isin(tjh.cohort.patients["patient_id"]).all()


def test_prompt_only_settings_do_not_reprocess(tjh, data_root):
    cfg = compose_config("data", ["dataset=tjh", "dataset.salient_top_k=3", "dataset.context=Other text."], data_root)
    assert prepare_cohort(cfg.dataset, RAW_SOURCE, data_root / "data") == tjh.cohort_dir
