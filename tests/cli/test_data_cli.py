"""``eagrl-data`` end to end: cohort tables, loggers, and one-line errors for bad input (the messages checked in
process through ``eagrl.stages.data.run``; one command line checks that a user error ends it in one line)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pandas as pd
import pytest

from tests.conftest import RAW_SOURCE, run_cli, user_error

TJH_FILE = "tjh/time_series_375_prerpocess_en.xlsx"


def assert_one_line_error(result, *fragments: str) -> None:
    assert result.returncode != 0, result.stdout
    assert "Traceback" not in result.stderr + result.stdout
    errors = [line for line in result.stderr.splitlines() if "error" in line.lower()]
    assert errors, result.stderr
    for fragment in fragments:
        assert fragment in errors[0], errors[0]


@pytest.fixture(scope="module")
def small_tjh() -> pd.DataFrame:
    """The first 40 patients of the real TJH workbook (rows in file order)."""
    frame = pd.read_excel(Path(RAW_SOURCE) / TJH_FILE)
    patient = frame["PATIENT_ID"].ffill()
    return frame[patient <= 40].copy()


def write_source(tmp_path: Path, frame: pd.DataFrame) -> tuple[str, str]:
    """Write a TJH-like workbook into a source folder; return (folder, sha256)."""
    target = tmp_path / "source" / TJH_FILE
    target.parent.mkdir(parents=True)
    frame.to_excel(target, index=False)
    return str(tmp_path / "source"), hashlib.sha256(target.read_bytes()).hexdigest()


def run_tjh(tmp_path: Path, source: str, sha: str, *extra: str):
    return run_cli(
        "data",
        ["dataset=tjh", f"dataset.raw_files.xlsx.sha256={sha}", "logger=none", *extra],
        tmp_path,
        raw_source=source,
    )


def assert_user_error(tmp_path: Path, source: str, sha: str | None, *fragments: str, extra: tuple[str, ...] = ()):
    """The data stage, in process on the TJH workbook under ``source``, stops with one line naming every fragment."""
    checksum = [f"dataset.raw_files.xlsx.sha256={sha}"] if sha else []
    message = user_error("data", ["dataset=tjh", "logger=none", *checksum, *extra], tmp_path, raw_source=source)
    assert all(fragment in message for fragment in fragments), message


@pytest.mark.slow
@pytest.mark.parametrize("name", ["tjh", "physionet2012"])
def test_prints_cohort_table(tmp_path, name, request, data_root):
    """The command on the session's processed cohort (the fixture processed it from the raw files once)."""
    request.getfixturevalue({"tjh": "tjh", "physionet2012": "physionet"}[name])
    (tmp_path / "data").symlink_to(data_root / "data")
    result = run_cli("data", [f"dataset={name}"], tmp_path)
    assert result.returncode == 0, result.stderr
    assert "| train |" in result.stdout and "| test  |" in result.stdout and "mortality=1" in result.stdout
    run = tmp_path / "run"
    assert (run / "cohort.md").is_file() and (run / "example_prompt.txt").is_file()
    assert (run / "csv" / "metrics.csv").is_file()


def test_small_workbook_runs(tmp_path, small_tjh):
    source, sha = write_source(tmp_path, small_tjh)
    result = run_tjh(tmp_path, source, sha, "dataset.split.test_size=10")
    assert result.returncode == 0, result.stderr
    assert "| test  |         10 |" in result.stdout


def test_wandb_offline_run_writes_local_files(tmp_path, small_tjh):
    source, sha = write_source(tmp_path, small_tjh)
    result = run_cli(
        "data",
        [
            "dataset=tjh",
            f"dataset.raw_files.xlsx.sha256={sha}",
            "dataset.split.test_size=10",
            "logger=wandb",
            "show_prompt=false",
        ],
        tmp_path,
        raw_source=source,
    )
    assert result.returncode == 0, result.stderr
    runs = list((tmp_path / "run" / "wandb").glob("offline-run-*"))
    assert len(runs) == 1
    (record,) = runs[0].glob("run-*.wandb")  # wandb's local run log: config and metrics, ready for `wandb sync`
    content = record.read_bytes()
    assert b"cohort/test/patients" in content and b"raw_source" in content


def test_a_missing_file_ends_the_command_in_one_line(tmp_path):
    (tmp_path / "empty").mkdir()
    result = run_cli("data", ["dataset=tjh", "logger=none"], tmp_path, raw_source=str(tmp_path / "empty"))
    assert_one_line_error(result, "raw file not found", TJH_FILE)


def test_wrong_checksum(tmp_path):
    assert_user_error(
        tmp_path, RAW_SOURCE, "0" * 64, "checksum mismatch", TJH_FILE.split("/")[-1], "dataset.raw_files.xlsx.sha256"
    )


def test_missing_column(tmp_path, small_tjh):
    source, sha = write_source(tmp_path, small_tjh.drop(columns="outcome"))
    assert_user_error(tmp_path, source, sha, "missing column 'outcome'", TJH_FILE)


def test_non_numeric_value(tmp_path, small_tjh):
    frame = small_tjh.astype({"hemoglobin": object})
    frame.iloc[5, frame.columns.get_loc("hemoglobin")] = "abc"
    source, sha = write_source(tmp_path, frame)
    assert_user_error(tmp_path, source, sha, "column 'hemoglobin'", "'abc'", TJH_FILE)


def test_corrupt_file(tmp_path):
    target = tmp_path / "source" / TJH_FILE
    target.parent.mkdir(parents=True)
    target.write_bytes(b"PK\x03\x04 not really a workbook")
    sha = hashlib.sha256(target.read_bytes()).hexdigest()
    assert_user_error(tmp_path, str(tmp_path / "source"), sha, "cannot read as an Excel workbook")


def test_empty_cohort_after_filtering(tmp_path, small_tjh):
    source, sha = write_source(tmp_path, small_tjh)
    assert_user_error(tmp_path, source, sha, "empty cohort", "dataset.min_visits", extra=("dataset.min_visits=1000",))


def test_unknown_dataset_name(tmp_path):
    result = run_cli("data", ["dataset=mimic5"], tmp_path)
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert "Could not find 'dataset/mimic5'" in result.stderr.splitlines()[0]
    assert "tjh" in result.stderr  # the available options are listed
