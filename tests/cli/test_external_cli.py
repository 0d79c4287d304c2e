"""Scoring a trained expert on another cohort without retraining (``eagrl-expert artifact=...``), and a policy adapter
on an external cohort (``eagrl-evaluate adapter=... dataset=tjh_external``), on real TJH."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from eagrl.data.features import FeatureTable
from eagrl.data.tjh import subset_workbook
from eagrl.errors import ArtifactError
from eagrl.experts.artifact import CARD, load_card
from tests.cli.test_expert_cli import SMALL, run
from tests.conftest import RAW_SOURCE, compose_config, run_cli, user_error

TJH_FILE = Path(RAW_SOURCE) / "tjh" / "time_series_375_prerpocess_en.xlsx"
KEEP = ["Age", "Sex", "Lactate dehydrogenase", "Lymphocyte (%)", "High-sensitivity C-reactive protein"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A small GRU trained on TJH for 3 epochs; (tmp folder, artifact folder)."""
    tmp = tmp_path_factory.mktemp("external")
    result = run(tmp, "trainer.max_epochs=3")
    assert result.returncode == 0, result.stderr[-3000:]
    logs = result.stdout + result.stderr  # the importance export reports its progress
    assert "exporting integrated_gradients importance for 310 patients (train 96, val 14, test 200)" in logs
    assert "importance exported for 310 patients" in logs
    (metrics,) = (tmp / "artifacts").rglob("metrics.json")
    return tmp, metrics.parent


def external_metrics(result) -> dict:
    assert result.returncode == 0, result.stderr[-3000:]
    (line,) = [line for line in result.stdout.splitlines() if " -> " in line]
    folder = Path(line.rsplit(" -> ", 1)[1])
    return json.loads((folder / "metrics.json").read_text()) | {"folder": folder}


def test_the_artifact_holds_config_features_and_statistics(trained):
    _, artifact = trained
    card = load_card(artifact)
    assert card.expert == "gru" and card.dataset == "tjh" and card.task == "mortality"
    assert len(card.features.static) == 2 and len(card.features.dynamic) == 73
    assert len(card.normalisation.dynamic.mean) == 73 and card.checkpoint == "checkpoints/best.ckpt"
    config = (artifact / "config.yaml").read_text()
    assert "name: gru" in config and "hidden_dim: 8" in config and "paths:" not in config
    assert {CARD, "config.yaml"} <= set(json.loads((artifact / "checksums.json").read_text()))


def test_scoring_the_artifact_on_its_own_test_split_gives_the_in_process_predictions(trained):
    tmp, artifact = trained
    metrics = external_metrics(run(tmp, f"artifact={artifact}", "dataset=tjh"))
    assert metrics["external"] is False and metrics["trained_on"] == "tjh" and metrics["cohort"]["patients"] == 200
    scored = pd.read_parquet(metrics["folder"] / "importance.parquet").set_index("patient_id")
    in_process = pd.read_parquet(artifact / "importance.parquet")
    in_process = in_process[in_process["split"] == "test"].set_index("patient_id")
    assert list(scored.index) == list(in_process.index)
    np.testing.assert_allclose(scored["probability"], in_process["probability"], atol=1e-6, rtol=0)
    np.testing.assert_allclose(np.stack(scored["importance"]), np.stack(in_process["importance"]), atol=1e-6)
    assert metrics["test"]["auroc"] == pytest.approx(metrics["internal_test"]["auroc"], abs=1e-6)
    assert (artifact / "metrics.json").is_file() and json.loads((artifact / "metrics.json").read_text())["dataset"]
    low, high = metrics["test"]["ci95"]["auroc"]
    assert low <= metrics["test"]["auroc"]["mean"] <= high


@pytest.mark.slow
def test_scoring_a_cohort_that_measured_three_labs(trained):
    tmp, artifact = trained
    cohort = tmp / "tjh3"
    frame = pd.read_excel(TJH_FILE)
    first = frame["PATIENT_ID"].ffill().drop_duplicates().astype(int).astype(str).tolist()[::3]  # both outcomes
    subset_workbook(TJH_FILE, cohort / "cohort.xlsx", FeatureTable.load("tjh_features.csv"), KEEP, first)
    result = run(tmp, f"artifact={artifact}", "dataset=tjh_external", f"dataset.cohort_dir={cohort}",
                 "dataset.min_visits=1")  # fmt: skip
    metrics = external_metrics(result)
    assert metrics["external"] is True and metrics["expert"] == "gru@tjh" and metrics["dataset"] == "tjh_external"
    assert len(metrics["cohort"]["absent_features"]) == 70 and metrics["cohort"]["patients"] > 100
    assert metrics["cohort"]["never_measured"]["Hemoglobin"] == metrics["cohort"]["patients"]
    assert "scored as never measured: " in result.stdout + result.stderr
    assert "gru@tjh on tjh_external/mortality" in result.stdout
    assert metrics["folder"].parent == artifact / "external"
    again = run(tmp, f"artifact={artifact}", "dataset=tjh_external", f"dataset.cohort_dir={cohort}",
                "dataset.min_visits=1")  # fmt: skip
    assert again.returncode == 0 and "already scored" in again.stdout + again.stderr


def test_user_errors_name_the_cause(trained, tmp_path):
    """In process (test_bad_expert_params_end_in_one_line checks the command's exit status and stderr)."""
    tmp, artifact = trained

    def refused(*overrides: str) -> str:
        return user_error("expert", [*SMALL, *overrides], tmp)

    wrong_task = refused(f"artifact={artifact}", "dataset=tjh", "task=readmission")
    assert "predicts 'mortality', not 'readmission'" in wrong_task
    assert "has no training patients (dataset.split=none)" in refused("dataset.split=none")
    # an artifact written before cards existed: no expert.json, and none in its checksums
    old = tmp_path / "old"
    shutil.copytree(artifact, old)
    (old / CARD).unlink()
    sums = json.loads((old / "checksums.json").read_text())
    (old / "checksums.json").write_text(json.dumps({k: v for k, v in sums.items() if k != CARD}))
    assert "holds no expert.json" in refused(f"artifact={old}", "dataset=tjh")


def test_a_damaged_card_is_refused_naming_the_key(trained, tmp_path):
    _, artifact = trained
    folder = tmp_path / "artifact"
    shutil.copytree(artifact, folder)
    card = json.loads((folder / CARD).read_text())
    card["normalisation"]["dynamic"]["mean"] = "not a list"
    (folder / CARD).write_text(json.dumps(card))
    with pytest.raises(ArtifactError, match=r"normalisation\.dynamic\.mean"):
        load_card(folder)
    card["normalisation"]["dynamic"]["mean"] = [0.0]
    (folder / CARD).write_text(json.dumps(card))
    with pytest.raises(ArtifactError, match=r"normalisation\.dynamic does not match features\.dynamic"):
        load_card(folder)


@pytest.mark.slow
def test_a_policy_adapter_on_an_external_cohort(tmp_path):
    """eagrl-evaluate with an adapter trained on TJH answers a 3-lab TJH-format cohort scored whole (split none)."""
    from eagrl.policy.backbone import attach_lora, write_adapter_info
    from tests.policy.conftest import tiny

    cfg = compose_config("evaluate", ["backbone=tiny_random", "dataset=tjh"], tmp_path)
    adapter = tmp_path / "adapter"
    attach_lora(tiny()[0], cfg.backbone.lora).save_pretrained(adapter)
    write_adapter_info(adapter, cfg, "sft-trajectory")
    frame = pd.read_excel(TJH_FILE)
    first = frame["PATIENT_ID"].ffill().drop_duplicates().astype(int).astype(str).tolist()[::9]  # both outcomes
    subset_workbook(TJH_FILE, tmp_path / "tjh3" / "cohort.xlsx", FeatureTable.load("tjh_features.csv"), KEEP, first)
    overrides = ["backbone=tiny_random", f"adapter={adapter}", "dataset=tjh_external",
                 f"dataset.cohort_dir={tmp_path / 'tjh3'}", "dataset.min_visits=1", "generation.max_new_tokens=4",
                 "prompt.max_visits=1", "prompt.omit_unobserved=true", "paths.artifact_dir=artifacts"]  # fmt: skip
    result = run_cli("evaluate", overrides, tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "external cohort: an adapter trained on tjh answers" in result.stdout + result.stderr
    (metrics_path,) = (tmp_path / "artifacts" / "evaluate").rglob("metrics.json")
    metrics = json.loads(metrics_path.read_text())
    assert metrics["method"] == "sft-trajectory@tjh" and metrics["trained_on"] == "tjh"
    assert len(metrics["absent_features"]) == 70 and metrics["test"]["n"] > 30
