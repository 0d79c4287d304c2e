"""eagrl-pipeline end to end with the tiny backbone on real TJH: every stage and the report; a SIGKILL in the
middle and a rerun that redoes no finished stage."""

from __future__ import annotations

import signal
import subprocess
import time

import pytest

from tests.conftest import cli_command, run_cli

PIPELINE = [
    "experiment=tiny",
    "num_threads=1",
    "salient.expert=gru",
    "stage_overrides.expert=['expert.params.hidden_dim=8','trainer.max_epochs=2','logger=none']",
]


@pytest.mark.slow
def test_killed_pipeline_resumes_without_redoing_finished_stages(tmp_path):
    command, env = cli_command("pipeline", PIPELINE, tmp_path)
    process = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 600
    while not list((tmp_path / "artifacts").rglob("shards/shard-00000.json")):
        assert time.monotonic() < deadline and process.poll() is None, "the pipeline ended before the search started"
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
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
