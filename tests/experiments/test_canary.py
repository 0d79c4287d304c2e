"""experiments/canary.sh and experiments/canary_compare.py end to end with the tiny backbone on real TJH: three arms
of one seed, the GRPO arm reusing the EAG-RL arm's Stage 1, the trajectory arm searching for its own, and the
comparison block they write."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import RAW_SOURCE, REPO

SCRIPT = REPO / "experiments" / "canary.sh"
#: tiny stages: a small GRU expert, Stage 1 on its features and the label, one RL step
OVERRIDES = [
    "num_threads=1",
    "salient.expert=gru",
    "stages=[expert,baselines,sft,rl,evaluate]",
    "stage_overrides.expert=['expert.params.hidden_dim=8','trainer.max_epochs=2','logger=none']",
    "stage_overrides.sft=['sft=expert_label','sft.val_score=null']",
    "stage_overrides.rl=['rl.steps=1']",
]
#: a paired-bootstrap cell: +1.2 [-3.4, +5.6]
INTERVAL = r"[+-]\d+\.\d+ \[[+-]\d+\.\d+, [+-]\d+\.\d+\]"


def run_canary(tmp_path: Path, arms: str) -> subprocess.CompletedProcess:
    """canary.sh for seed 0 of experiment=tiny with every output (artifacts, data, run, BENCHMARKS) under tmp_path."""
    env = {
        **os.environ,
        "EAGRL_ROOT": str(tmp_path),
        "EAGRL_RAW_SOURCE": RAW_SOURCE,
        "VENV_BIN": str(Path(sys.executable).parent),
        "RUN_DIR": str(tmp_path / "run"),
        "SEEDS": "0",
        "EXPERIMENT": "tiny",
        "ARMS": arms,
        "BENCHMARKS": str(tmp_path / "BENCHMARKS.md"),
        "WANDB_SILENT": "true",
    }
    return subprocess.run(["bash", str(SCRIPT), *OVERRIDES], capture_output=True, text=True, env=env, timeout=900)


@pytest.mark.slow
def test_canary_script_runs_the_arms_and_writes_the_paired_comparison(tmp_path):
    (tmp_path / "BENCHMARKS.md").write_text("# Benchmarks\n")
    result = run_canary(tmp_path, "eagrl grpo trajectory")
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]

    times = (tmp_path / "run" / "times.tsv").read_text()
    assert all(f"{arm}-seed0\t" in times for arm in ("eagrl", "grpo", "trajectory"))
    # the GRPO arm starts from the EAG-RL arm's Stage-1 adapter (expert-label SFT); the trajectory arm searches and
    # trains its own, whatever Stage 1 the command line asked for: two SFT adapters, two RL adapters
    artifacts = tmp_path / "artifacts"
    sft = sorted(path.parent.name.split("-")[0] for path in artifacts.rglob("sft/**/eagrl_adapter.json"))
    assert sft == ["expert_label", "trajectory"]
    assert len(list(artifacts.rglob("rl/**/eagrl_adapter.json"))) == 2
    assert list(artifacts.rglob("mcts/**/selected.parquet"))
    evaluated = json.loads((tmp_path / "run" / "trajectory-seed0" / "evaluate:sft" / "metrics.json").read_text())
    assert evaluated["method"] == "sft-trajectory"

    text = (tmp_path / "BENCHMARKS.md").read_text()
    start, end = "<!-- canary_comparison_tiny:start -->", "<!-- canary_comparison_tiny:end -->"
    block = text[text.index(start) : text.index(end)]
    assert "EXPERIMENT=tiny bash experiments/canary.sh" in block and "Seeds [0]" in block
    for method in ("base", "Stage-1 SFT", "trajectory SFT (MCTS, PQD)", "GRPO (R_att 0, fixed clip)", "EAG-RL"):
        assert re.search(rf"^\| {re.escape(method)} \| \d+\.\d ± \d+\.\d \|", block, re.MULTILINE), method
    # arms the run lacks have no row
    assert "| DAPO |" not in block and "| label-only SFT |" not in block
    for other in ("GRPO (R_att 0, fixed clip)", "Stage-1 SFT", "trajectory SFT (MCTS, PQD)", "base"):
        assert re.search(rf"^\| EAG-RL − {re.escape(other)} \| {INTERVAL} \|", block, re.MULTILINE), other
    # the RL table: both arms, the GRPO adapter's distance from EAG-RL's as a number
    assert re.search(r"^\| eagrl \| 0 \| .* \| — \|$", block, re.MULTILINE)
    assert re.search(r"^\| grpo \| 0 \| .* \| \d\.\d\de[+-]\d\d \|$", block, re.MULTILINE)


def test_canary_script_refuses_an_unknown_arm_before_running_anything(tmp_path):
    result = run_canary(tmp_path, "eagrl bogus")
    assert result.returncode == 2
    assert "unknown arm 'bogus'" in result.stderr
    assert not (tmp_path / "run").exists() and not (tmp_path / "artifacts").exists()
