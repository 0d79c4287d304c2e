"""eagrl-evaluate end to end with the tiny backbone on real TJH prompts: artifacts, resume, one-line errors."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from tests.conftest import run_cli, user_error

#: tiny backbone, short answers, the 14 TJH validation patients (6 deaths); the TJH prompts are long in bytes; the
#: greedy score (every score is tested in tests/policy/test_scoring.py)
TINY = ["backbone=tiny_random", "generation.max_new_tokens=6", "generation.batch_size=8", "split=val",
        "prompt.max_visits=1", "prompt.omit_unobserved=true", "paths.artifact_dir=artifacts",
        "score.method=greedy"]  # fmt: skip


def _artifact(tmp_path):
    return next((tmp_path / "artifacts" / "evaluate").rglob("metrics.json")).parent


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("evaluate")
    result = run_cli("evaluate", TINY, tmp)
    assert result.returncode == 0, result.stderr[-2000:]
    return tmp, result


def test_writes_predictions_metrics_and_plots(evaluated):
    tmp, result = evaluated
    folder = _artifact(tmp)
    predictions = pd.read_parquet(folder / "predictions.parquet")
    assert len(predictions) == 14 and predictions["patient_id"].is_unique
    assert {"label", "probability", "parse_status", "features", "text", "finish_reason"} <= set(predictions.columns)
    # a random model cannot answer in format: every patient falls back to 0.5, counted as a parse failure
    metrics = json.loads((folder / "metrics.json").read_text())
    assert metrics["parsing"]["parse_failure_rate"] == 1.0
    assert (predictions["probability"] == 0.5).all()
    assert metrics["val"]["auroc"]["mean"] == pytest.approx(0.5)
    assert metrics["generation"]["generated_tokens"] == predictions["generated_tokens"].sum()
    assert (folder / "roc.png").stat().st_size > 0 and (folder / "pr.png").stat().st_size > 0
    assert (tmp / "run" / "metrics.json").is_file()
    assert "parse failures 100.0 %" in result.stdout


@pytest.mark.slow
def test_rerun_reports_and_resume_answers_only_missing_patients(evaluated):
    tmp, _ = evaluated
    folder = _artifact(tmp)
    again = run_cli("evaluate", TINY, tmp)
    assert again.returncode == 0 and "already evaluated" in again.stderr + again.stdout
    # simulate a killed run: drop the metrics, keep 6 answers and a torn last line
    lines = (folder / "answers.jsonl").read_text().splitlines()
    (folder / "metrics.json").unlink()
    (folder / "answers.jsonl").write_text("\n".join(lines[:6]) + '\n{"patient_id": "torn')
    resumed = run_cli("evaluate", TINY, tmp)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    metrics = json.loads((folder / "metrics.json").read_text())
    assert metrics["generation"]["patients_answered_this_run"] == 8
    assert pd.read_parquet(folder / "predictions.parquet")["patient_id"].is_unique


def test_a_user_error_ends_the_command_in_one_line(tmp_path):
    result = run_cli("evaluate", [*TINY, "adapter=/nonexistent/adapter"], tmp_path)
    assert result.returncode == 2
    assert "holds no adapter_config.json" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["backbone.loader.config.max_position_embeddings=64"], "exceeds the backbone's context of 64 tokens"),
        (["max_patients=1"], "hold one outcome only"),
    ],
)
def test_user_errors_name_the_option(tmp_path, overrides, message):
    """In process: the stage raises the one-line error the command prints."""
    assert message in user_error("evaluate", [*TINY, *overrides], tmp_path)
