"""eagrl-pipeline end to end with the tiny backbone on real TJH: every stage and the report; a SIGKILL in the
middle and a rerun that redoes no finished stage."""

from __future__ import annotations

import pytest

from tests.conftest import kill_when, run_cli

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
    assert "| expert gru |" in text and "tiny_random / rl-eagrl" in text and "![reward](reward.png)" in text
    assert (report.parent / "roc.png").stat().st_size > 0 and (report.parent / "reward.png").stat().st_size > 0

    again = run_cli("pipeline", PIPELINE, tmp_path)
    assert again.returncode == 0
    assert again.stdout.count("already") + again.stderr.count("already") >= 5  # every stage only reports
