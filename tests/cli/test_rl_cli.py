"""eagrl-rl end to end with the tiny backbone on real TJH: artifacts and history, the evaluate hand-off, the
ablations' starts, resume after SIGKILL, one-line errors."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

from tests.cli.test_stage1_cli import EXPERT, MCTS, SFT
from tests.conftest import kill_when, run_cli, user_error

RL = ["experiment=tiny", "num_threads=1", "logger=none", "salient.expert=gru"]


@pytest.fixture(scope="module")
def stage1(tmp_path_factory):
    """An expert, a search and a trajectory SFT adapter to start RL from."""
    tmp = tmp_path_factory.mktemp("rl")
    for stage, overrides in (("expert", EXPERT), ("mcts", MCTS), ("sft", SFT)):
        result = run_cli(stage, overrides, tmp)
        assert result.returncode == 0, result.stderr[-2000:]
    return tmp


def _folder(tmp, pattern):
    return next((tmp / "artifacts" / "rl").rglob(pattern))


@pytest.mark.slow
def test_rl_writes_adapter_history_and_evaluate_reads_it(stage1):
    result = run_cli("rl", [*RL, "reward.attention=internal"], stage1)
    assert result.returncode == 0, result.stderr[-3000:]
    folder = _folder(stage1, "eagrl-none-*")
    history = pd.read_csv(folder / "history.csv")
    assert history["step"].tolist() == [0, 1, 2]
    for column in ("reward", "accuracy", "parse_failure", "response_tokens", "entropy", "groups_kept", "loss",
                   "clip_fraction", "kl", "eps_high_mean", "seconds/rollout"):  # fmt: skip
        assert column in history, column
    # the KL reference is the starting (SFT) policy, not the base model: nothing has moved the policy from it yet
    # (every tiny answer fails to parse, so every advantage is 0)
    assert history["kl"].abs().max() < 1e-6
    info = json.loads((folder / "eagrl_adapter.json").read_text())
    assert info["method"] == "rl-eagrl" and info["init_adapter"].split("/")[-1].startswith("trajectory-")
    assert set(load_file(folder / "adapter_model.safetensors")) == set(
        load_file(f"{info['init_adapter']}/adapter_model.safetensors")
    )
    evaluated = run_cli(
        "evaluate", [*SFT, f"adapter={folder}", "split=val", "generation.max_new_tokens=8", "logger=none"], stage1
    )
    assert evaluated.returncode == 0, evaluated.stderr[-2000:]
    assert "tiny_random rl-eagrl on tjh/mortality val" in evaluated.stdout


def test_a_run_without_reward_spread_stops_early_and_says_so(stage1):
    # every tiny answer fails to parse: each group's rewards are equal, so the first flat step ends the run
    result = run_cli("rl", [*RL, "rl=dapo", "rl.steps=3", "rl.stop_after_flat_steps=1"], stage1)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "stopped early: no reward spread" in result.stdout
    metrics = json.loads((_folder(stage1, "dapo-none-*") / "metrics.json").read_text())
    assert metrics["steps"] == 1 and metrics["stopped_without_signal"] and metrics["flat_steps_at_end"] == 1


@pytest.mark.slow
def test_two_process_ddp_run_writes_one_artifact(stage1):
    """trainer=ddp runs eagrl-rl in 2 gloo processes (RolloutParallel): each samples one of the step's patients,
    rank 0 alone writes the adapter, the merged history and the metrics."""
    result = run_cli("rl", [*RL, "trainer=ddp", "trainer.devices=2", "rl.steps=2"], stage1)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("rl-eagrl") == 1
    (metrics,) = [json.loads(path.read_text()) for path in (stage1 / "artifacts" / "rl").rglob("metrics.json")
                  if json.loads(path.read_text())["steps"] == 2]  # fmt: skip
    history = pd.read_csv(f"{metrics['artifact_dir']}/history.csv")
    assert history["step"].tolist() == [0, 1] and history["groups_sampled"].tolist() == [2.0, 2.0]


@pytest.mark.slow
def test_ablations_start_where_they_should(stage1):
    without_rl = run_cli("rl", [*RL, "ablation=no_stage2"], stage1)
    assert without_rl.returncode == 0, without_rl.stderr[-2000:]
    folder = _folder(stage1, "eagrl-no_stage2-*")
    info = json.loads((folder / "eagrl_adapter.json").read_text())
    assert info["method"] == "rl-eagrl-no_stage2"
    sft = load_file(f"{info['init_adapter']}/adapter_model.safetensors")
    saved = load_file(folder / "adapter_model.safetensors")
    assert sft.keys() == saved.keys() and all(torch.equal(sft[key], saved[key]) for key in sft)

    from_base = run_cli("rl", [*RL, "ablation=no_stage1", "rl=dapo"], stage1)
    assert from_base.returncode == 0, from_base.stderr[-2000:]
    info = json.loads((_folder(stage1, "dapo-no_stage1-*") / "eagrl_adapter.json").read_text())
    assert info["method"] == "rl-dapo-no_stage1" and info["init_adapter"] is None


@pytest.mark.slow
def test_resume_after_sigkill_runs_every_step_once(stage1):
    overrides = [*RL, "rl=grpo", "rl.steps=30", "paths.artifact_dir=artifacts"]
    kill_when("rl", overrides, stage1, stage1 / "artifacts" / "rl", "grpo-none-*/checkpoints/last.ckpt")
    assert not list((stage1 / "artifacts" / "rl").rglob("grpo-none-*/metrics.json"))
    resumed = run_cli("rl", overrides, stage1)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resuming from" in resumed.stdout + resumed.stderr
    folder = _folder(stage1, "grpo-none-*")
    assert pd.read_csv(folder / "history.csv")["step"].tolist() == list(range(30))
    assert json.loads((folder / "metrics.json").read_text())["resumed"]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["init.adapter=/nonexistent"], "not a finished artifact"),
        (["init.from=sft_and_more"], "init.from="),
        (["rl.group_size=1"], "rl.group_size must be >= 2"),
        (["reward.attention=internal", "backbone.attn_implementation=sdpa"], "reads attention through"),
    ],
)
def test_user_errors_name_the_option(stage1, overrides, message):
    """In process: the stage raises the one-line error the command prints (its exit status and stderr are checked by
    test_no_sft_adapter_names_the_command_to_run)."""
    assert message in user_error("rl", [*RL, *overrides], stage1)


def test_no_sft_adapter_names_the_command_to_run(tmp_path):
    result = run_cli("rl", [*RL, "salient.dir=/nonexistent"], tmp_path)
    assert result.returncode == 2 and "run `eagrl-sft" in result.stderr
