"""eagrl-pipeline end to end with the tiny backbone on real TJH: every stage and the report; a SIGKILL in the
middle and a rerun that redoes no finished stage."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from eagrl.utils.artifacts import file_digest
from tests.conftest import kill_when, run_cli, user_error

PIPELINE = [
    "experiment=tiny",
    "num_threads=1",
    "salient.expert=gru",
    "stage_overrides.expert=['expert.params.hidden_dim=8','trainer.max_epochs=2','logger=none']",
]


@pytest.mark.slow
def test_killed_pipeline_resumes_without_redoing_finished_stages(tmp_path):
    kill_when("pipeline", PIPELINE, tmp_path, tmp_path / "artifacts", "shards/shard-00000.json")
    assert not list((tmp_path / "artifacts").rglob("mcts/**/metrics.json")), "the kill came after the search"

    resumed = run_cli("pipeline", PIPELINE, tmp_path)
    output = resumed.stdout + resumed.stderr
    assert resumed.returncode == 0, output[-3000:]
    assert "expert already trained" in output and "already evaluated" in output
    assert "shards already searched" in output
    for stage in ("mcts", "sft-trajectory", "rl-eagrl", "tiny_random sft-trajectory on tjh", "tiny_random rl-eagrl on"):
        assert stage in output, stage
    (report,) = (tmp_path / "run").rglob("report.md") or list(tmp_path.rglob("report.md"))
    text = report.read_text()
    assert "| expert gru |" in text and "tiny_random / rl-eagrl" in text and "![RL curves](rl_curves.png)" in text
    assert "tiny_random / rl-eagrl against the other methods (paired bootstrap" in text
    assert (report.parent / "roc.png").stat().st_size > 0 and (report.parent / "rl_curves.png").stat().st_size > 0

    again = run_cli("pipeline", PIPELINE, tmp_path)
    assert again.returncode == 0
    assert again.stdout.count("already") + again.stderr.count("already") >= 5  # every stage only reports


@pytest.mark.slow
def test_pipeline_without_the_search_trains_stage_one_on_its_experts_features(tmp_path):
    """stages without mcts and sft=expert_label (experiment=canary_expert_label's shape): SFT reads the importance
    file of the expert this pipeline trained, RL starts from that adapter, and evaluate_adapters=[rl] scores only the
    RL adapter."""
    overrides = [
        *PIPELINE,
        "stages=[expert,sft,rl,evaluate]",
        "evaluate_adapters=[rl]",
        "stage_overrides.sft=['sft=expert_label','sft.val_score=null']",
        "stage_overrides.rl=['rl.steps=1']",
    ]
    result = run_cli("pipeline", overrides, tmp_path)
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    # evaluate_adapters=[rl]: the RL adapter is scored on the test split, the SFT adapter is not
    assert "pipeline stage evaluate:rl done" in result.stderr + result.stdout
    assert "pipeline stage evaluate:sft" not in result.stderr + result.stdout
    (importance,) = (tmp_path / "artifacts").rglob("expert/**/gru/*/importance.parquet")
    (info_path,) = (tmp_path / "artifacts").rglob("sft/**/expert_label-*/eagrl_adapter.json")
    info = json.loads(info_path.read_text())
    assert info["method"] == "sft-expert_label"
    assert info["inputs"] == {"expert": file_digest(importance)}
    (rl_info,) = (tmp_path / "artifacts").rglob("rl/**/eagrl_adapter.json")
    assert Path(json.loads(rl_info.read_text())["init_adapter"]).resolve() == info_path.parent.resolve()


@pytest.mark.parametrize(
    ("override", "message"),
    [("stages=[expert,search]", "unknown stage 'search'"), ("evaluate_adapters=[mcts]", "unknown adapter 'mcts'")],
)
def test_pipeline_refuses_an_unknown_stage_or_adapter(tmp_path, override, message):
    assert message in user_error("pipeline", [*PIPELINE, override], tmp_path)


def test_a_user_error_ends_the_pipeline_in_one_line_before_running_anything(tmp_path):
    result = run_cli("pipeline", [*PIPELINE, "stages=[expert,search]"], tmp_path)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "unknown stage 'search'" in result.stderr
    assert not (tmp_path / "artifacts").exists() or not list((tmp_path / "artifacts").rglob("metrics.json"))
