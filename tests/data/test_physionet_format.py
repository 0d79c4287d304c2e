"""PhysioNet-2012-format input from elsewhere: one outcome file, one set, an empty Parameter row, a RecordID in
two outcome tables, out-of-range values and parameters that never appear — logged, counted fixes or one-line errors,
never a traceback."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from eagrl.data.cohort import prepare_cohort
from eagrl.data.features import FeatureTable
from eagrl.data.physionet2012 import load_physionet2012
from eagrl.errors import DataError
from tests.conftest import compose_config, user_error

FEATURES = FeatureTable.load("physionet2012_features.csv")
#: record id -> (set, died); records 1-6 in set a, 7-10 in set b
RECORDS = {str(record): ("a" if record <= 6 else "b", record % 2) for record in range(1, 11)}


def long_rows(record: str, chosen: str) -> list[tuple]:
    """Descriptors at 00:00, then heart rate and pH over three hours (values differ per record)."""
    number = int(record)
    rows = [(chosen, record, "00:00", name, value) for name, value in
            (("RecordID", number), ("Age", 50 + number), ("Gender", number % 2), ("Height", 170.0),
             ("ICUType", 2), ("Weight", 70.0 + number))]  # fmt: skip
    rows += [(chosen, record, f"0{hour}:30", "HR", 80.0 + number + hour) for hour in range(3)]
    rows += [(chosen, record, "01:00", "pH", 7.40), (chosen, record, "02:10", "pH", 7.30)]
    return rows


def write_cohort(folder: Path, extra_rows: tuple = (), outcomes: dict[str, list[str]] | None = None) -> Path:
    """A PhysioNet-format long file (all records) and outcome tables (file name -> records) under ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = [row for record, (chosen, _) in RECORDS.items() for row in long_rows(record, chosen)]
    frame = pd.DataFrame([*rows, *extra_rows], columns=["set", "RecordID", "Time", "Parameter", "Value"])
    frame.to_csv(folder / "long.csv", index=False)
    outcomes = outcomes or {"Outcomes-a.txt": [r for r, (s, _) in RECORDS.items() if s == "a"],
                            "Outcomes-b.txt": [r for r, (s, _) in RECORDS.items() if s == "b"]}  # fmt: skip
    for name, records in outcomes.items():
        table = pd.DataFrame({"RecordID": records, "SAPS-I": 10, "In-hospital_death": [RECORDS[r][1] for r in records]})
        table.to_csv(folder / name, index=False)
    return folder


def load(folder: Path, outcome_files: tuple[str, ...] = ("Outcomes-a.txt", "Outcomes-b.txt"), **kwargs):
    files = {"timeseries": folder / "long.csv"} | {f"outcomes_{i}": folder / n for i, n in enumerate(outcome_files)}
    return load_physionet2012(files, FEATURES, **kwargs)


def dataset_overrides(folder: Path, *extra: str) -> list[str]:
    """dataset=physionet2012_a pointed at ``folder``'s files (unverified), as a user's own set would be."""
    return [
        "dataset=physionet2012_a",
        f"paths.raw_source={folder}",
        "dataset.raw_files.timeseries.path=long.csv",
        "dataset.raw_files.timeseries.sha256=null",
        "dataset.raw_files.outcomes_a.path=Outcomes-a.txt",
        "dataset.raw_files.outcomes_a.sha256=null",
        "dataset.split=none",
        *extra,
    ]


def test_one_set_with_its_own_outcome_file(tmp_path):
    """dataset.raw_files.outcomes_b=null (physionet2012_a) used to end in an AttributeError traceback."""
    folder = write_cohort(tmp_path / "source")
    cfg = compose_config("data", dataset_overrides(folder), tmp_path)
    assert cfg.dataset.raw_files.outcomes_b is None and list(cfg.dataset.loader.sets) == ["a"]
    directory = prepare_cohort(cfg.dataset, str(folder), tmp_path / "data")
    manifest = json.loads((directory / "manifest.json").read_text())
    assert manifest["splits"]["test"] == [str(r) for r in range(1, 7)] and not manifest["splits"]["train"]
    assert set(manifest["raw_files"]) == {"timeseries", "outcomes_a"}
    # without the set filter the set-B stays have no outcome: dropped and counted, not a crash
    raw = load(folder, ("Outcomes-a.txt",))
    assert raw.dropped["no outcome"] == 4 and list(raw.patients["patient_id"]) == [str(r) for r in range(1, 7)]


def test_a_row_with_an_empty_parameter_is_ignored_and_counted(tmp_path, caplog):
    """An empty Parameter made the unknown-parameter warning's sorted() raise TypeError (str vs float NaN)."""
    folder = write_cohort(tmp_path, extra_rows=(("a", "1", "01:00", None, 5.0), ("a", "2", "01:00", "", 3.0),
                                                ("a", "3", "01:00", "Mystery", 1.0)))  # fmt: skip
    with caplog.at_level(logging.WARNING):
        raw = load(folder)
    assert raw.ignored_rows == {"empty Parameter": 2}
    assert "ignoring 2 rows with an empty Parameter" in caplog.text and "Mystery" in caplog.text
    assert len(raw.patients) == 10


def test_a_record_in_two_outcome_tables(tmp_path, caplog):
    """A RecordID in two outcome tables made the label .map raise pandas' InvalidIndexError."""
    a_records = [r for r, (s, _) in RECORDS.items() if s == "a"]
    folder = write_cohort(tmp_path / "same", outcomes={"Outcomes-a.txt": a_records, "Outcomes-b.txt": ["1", "7", "8"]})
    with caplog.at_level(logging.WARNING):
        raw = load(folder)
    assert "1 outcome rows repeat a RecordID with the same label" in caplog.text
    assert raw.patients.set_index("patient_id")["mortality"].to_dict()["1"] == RECORDS["1"][1]

    conflicting = write_cohort(tmp_path / "conflict", outcomes={"Outcomes-a.txt": a_records, "Outcomes-b.txt": ["7"]})
    table = pd.read_csv(conflicting / "Outcomes-b.txt", dtype=str)
    pd.concat([table, table.assign(RecordID="2", **{"In-hospital_death": "1"})]).to_csv(
        conflicting / "Outcomes-b.txt", index=False
    )  # record 2 survived in table a, died in table b
    expected = r"RecordID 2 has two different outcomes \(Outcomes-a\.txt: 0, Outcomes-b\.txt: 1"
    with pytest.raises(DataError, match=expected):
        load(conflicting)


def test_out_of_range_values_are_dropped_and_counted(tmp_path):
    folder = write_cohort(tmp_path / "source", extra_rows=(
        ("a", "1", "00:40", "HR", 999.0), ("a", "1", "01:05", "pH", 735.0), ("a", "2", "01:20", "Weight", 0.0),
        ("a", "2", "01:25", "Weight", -1.0), ("a", "3", "02:00", "Temp", 36.9),
    ))  # fmt: skip
    raw = load(folder)
    assert raw.outliers == {"Heart rate": 1, "Arterial pH": 1, "Weight": 1}  # -1 is a missing marker, not an outlier
    first = raw.visits[raw.visits["patient_id"] == "1"].set_index("time")
    assert first.loc[0.0, "Heart rate"] == 81.0 and first.loc[1.0, "Arterial pH"] == pytest.approx(7.40)
    clipped = load(folder, outliers="clip").visits.set_index(["patient_id", "time"])
    assert clipped.loc[("1", 0.0), "Heart rate"] == pytest.approx((81.0 + 300.0) / 2)
    # through the cohort: the manifest counts them (and the static Height bound: 3 cm is a recording error)
    extra = ("a", "4", "00:00", "Height", 3.0)
    folder = write_cohort(tmp_path / "with_height", extra_rows=(("a", "1", "00:40", "HR", 999.0),))
    frame = pd.read_csv(folder / "long.csv", dtype=str)
    frame.loc[(frame["RecordID"] == extra[1]) & (frame["Parameter"] == "Height"), "Value"] = str(extra[4])
    frame.to_csv(folder / "long.csv", index=False)
    cfg = compose_config("data", dataset_overrides(folder), tmp_path)
    manifest = json.loads((prepare_cohort(cfg.dataset, str(folder), tmp_path / "data") / "manifest.json").read_text())
    assert manifest["outliers"] == {"mode": "drop", "counts": {"Heart rate": 1, "Height": 1}}


def test_parameters_that_never_appear_are_never_measured(tmp_path, caplog):
    """A cohort that records no pH and no height: both all-missing and logged, not an error."""
    folder = write_cohort(tmp_path)
    frame = pd.read_csv(folder / "long.csv", dtype=str)
    frame[~frame["Parameter"].isin(["pH", "Height"])].drop(columns="set").to_csv(folder / "long.csv", index=False)
    with caplog.at_level(logging.WARNING):
        raw = load(folder)
    assert set(raw.absent) >= {"Arterial pH", "Height"} and "Heart rate" not in raw.absent
    assert raw.patients["Height"].isna().all() and raw.visits["Arterial pH"].isna().all()
    assert "never appear, treated as never measured" in caplog.text
    assert np.allclose(raw.patients["Age"], [50 + int(r) for r in raw.patients["patient_id"]])


def test_conflicting_outcomes_end_in_one_line(tmp_path):
    folder = write_cohort(tmp_path / "source", outcomes={"Outcomes-a.txt": ["1", "2", "3"], "Outcomes-b.txt": ["4"]})
    table = pd.read_csv(folder / "Outcomes-a.txt", dtype=str)
    table.loc[len(table)] = ["3", "10", str(1 - RECORDS["3"][1])]
    table.to_csv(folder / "Outcomes-a.txt", index=False)
    message = user_error("data", [*dataset_overrides(folder), "logger=none", "show_prompt=false"], tmp_path)
    assert "RecordID 3 has two different outcomes" in message


def test_times_past_99_hours_bin_and_a_malformed_time_is_named(tmp_path):
    """``HHH:MM`` past 99 hours reads as minutes (and falls outside the 48 h window); ``1:5`` is named, not cast."""
    folder = write_cohort(tmp_path / "long_stay", extra_rows=(("a", "1", "47:59", "HR", 90.0),
                                                              ("a", "1", "120:00", "HR", 95.0)))  # fmt: skip
    visits = load(folder).visits.set_index(["patient_id", "time"])
    assert visits.loc[("1", 47.0), "Heart rate"] == 90.0 and visits.index.get_level_values("time").max() == 47.0
    folder = write_cohort(tmp_path / "malformed", extra_rows=(("a", "1", "1:5", "HR", 90.0),))
    with pytest.raises(DataError, match=r"column 'Time' has value '1:5', expected HH:MM"):
        load(folder)
