"""Stage 1 end to end with the tiny backbone on real TJH: eagrl-mcts (refusals, resume after SIGKILL,
reselection without a new search), eagrl-sft (trajectory and label-only adapters), eagrl-evaluate on an adapter."""

from __future__ import annotations

import json
import shutil

import lightning as L
import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

from eagrl.errors import ConfigError
from eagrl.policy.backbone import attach_lora, byte_tokenizer
from eagrl.policy.sft import IGNORE, ChatExample, tokenize_example
from eagrl.stages.runtime import prepared_datamodule
from tests.conftest import compose_config, kill_when, run_cli, user_error

EXPERT = ["expert=gru", "expert.params.hidden_dim=8", "trainer.max_epochs=2", "logger=none", "num_threads=1"]
#: 16 patients in shards of 2, guided by the small GRU expert
MCTS = ["experiment=tiny", "num_threads=1", "max_patients=16", "patients_per_shard=2", "salient.expert=gru"]
SFT = ["experiment=tiny", "num_threads=1", "logger=none"]


def _artifact(root, stage):
    return next((root / stage).rglob("metrics.json")).parent


@pytest.fixture(scope="module")
def searched(tmp_path_factory):
    """A trained expert and one uninterrupted search."""
    tmp = tmp_path_factory.mktemp("stage1")
    expert = run_cli("expert", EXPERT, tmp)
    assert expert.returncode == 0, expert.stderr[-2000:]
    result = run_cli("mcts", MCTS, tmp)
    assert result.returncode == 0, result.stderr[-3000:]
    return tmp, result


@pytest.mark.slow
def test_search_writes_every_patient_once_with_scored_paths(searched):
    tmp, result = searched
    folder = _artifact(tmp / "artifacts", "mcts")
    shards = sorted((folder / "shards").glob("shard-*.json"))
    assert len(shards) == 8
    patients = [p for shard in shards for p in json.loads(shard.read_text())["patients"]]
    assert len({p["patient_id"] for p in patients}) == len(patients) == 16
    assert all(p["tree"]["rollouts"] == 3 and p["expert_features"] for p in patients)
    paths = pd.read_parquet(folder / "paths.parquet")
    assert len(paths) == sum(p["tree"]["terminals"] for p in patients) > 0
    assert paths["r_total"].notna().all() and (paths.loc[paths["probability"].isna(), "r_total"] == -5.0).all()
    metrics = json.loads((folder / "metrics.json").read_text())
    assert metrics["patients"] == 16 and metrics["cost"]["reused_prompt_tokens"] > metrics["cost"]["prompt_tokens"] / 2
    assert "complete answers" in result.stdout


def test_a_user_error_ends_the_command_in_one_line(searched):
    tmp, _ = searched
    result = run_cli("mcts", [*MCTS, "salient.expert=adacare"], tmp)
    assert result.returncode == 2, result.stderr[-2000:]
    assert "run `eagrl-expert expert=adacare" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["split=test"], "train split only"),
        (["split=val"], "train split only"),
        (["prompt=vanilla"], "use prompt=pqd"),
        (["prompt=features_answer"], "mcts.final_subquestion=null mcts.min_depth=0"),
        (["mcts.final_subquestion=null", "mcts.min_depth=0", "mcts.max_depth=0"], "writes features_answer"),
        (["reward.attention=internal"], "a Stage 2 option"),
    ],
)
def test_user_errors_name_the_option(searched, overrides, message):
    """In process: the stage raises the one-line error the command prints."""
    tmp, _ = searched
    assert message in user_error("mcts", [*MCTS, *overrides], tmp)


def test_changing_the_selection_reselects_without_searching_again(searched):
    tmp, _ = searched
    folder = _artifact(tmp / "artifacts", "mcts")
    result = run_cli("mcts", [*MCTS, "mcts.selection.top_k=1", "mcts.selection.balance=none"], tmp)
    assert result.returncode == 0, result.stderr[-2000:]
    output = result.stdout + result.stderr
    assert "8 of 8 shards already searched" in output and "backbone tiny_random" not in output
    selected = pd.read_parquet(folder / "selected.parquet")
    assert selected["patient_id"].is_unique


@pytest.mark.slow
def test_resume_after_sigkill_loses_and_duplicates_nothing(searched):
    tmp, _ = searched
    killed = tmp / "killed"
    shutil.copytree(tmp / "artifacts" / "expert", killed / "expert")
    overrides = [*MCTS, f"paths.artifact_dir={killed}"]
    kill_when("mcts", overrides, tmp, killed, "shard-00000.json")
    done_at_kill = len(list(killed.rglob("shard-*.json")))
    assert 1 <= done_at_kill < 8, "the kill did not land in the middle of the search"
    resumed = run_cli("mcts", overrides, tmp)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert f"{done_at_kill} of 8 shards already searched" in resumed.stdout + resumed.stderr
    reference = pd.read_parquet(_artifact(tmp / "artifacts", "mcts") / "paths.parquet")
    again = pd.read_parquet(_artifact(killed, "mcts") / "paths.parquet")
    columns = ["patient_id", "node", "completion", "r_total"]
    pd.testing.assert_frame_equal(again[columns], reference[columns])


@pytest.mark.slow
def test_sft_on_trajectories_saves_an_adapter_that_evaluate_loads(searched):
    tmp, _ = searched
    result = run_cli("sft", SFT, tmp)
    assert result.returncode == 0, result.stderr[-3000:]
    folder = _artifact(tmp / "artifacts", "sft")
    assert folder.name.startswith("trajectory-")
    assert {"adapter_config.json", "adapter_model.safetensors", "eagrl_adapter.json"} <= {
        p.name for p in folder.iterdir()
    }
    metrics = json.loads((folder / "metrics.json").read_text())
    assert metrics["method"] == "sft-trajectory" and metrics["examples"]["train"] >= 1
    assert torch.isfinite(torch.tensor(metrics["train_loss"]))
    evaluated = run_cli(
        "evaluate", [*SFT, f"adapter={folder}", "split=val", "generation.max_new_tokens=8", "logger=none"], tmp
    )
    assert evaluated.returncode == 0, evaluated.stderr[-2000:]
    assert "tiny_random sft-trajectory on tjh/mortality val" in evaluated.stdout


@pytest.mark.slow
def test_sft_resumed_after_sigkill_equals_an_uninterrupted_run(tmp_path):
    """Label-only SFT killed after its first epoch checkpoint: the rerun resumes there (RNG states and the epoch's
    shuffle restored) and ends with the adapter of an uninterrupted run."""
    overrides = [*SFT, "sft=label_only", "sft.epochs=4", "sft.val_fraction=0"]
    full = run_cli("sft", [*overrides, f"paths.artifact_dir={tmp_path / 'full'}"], tmp_path)
    assert full.returncode == 0, full.stderr[-3000:]
    assert all(f"sft-label_only epoch {epoch}/4: " in full.stdout + full.stderr for epoch in range(1, 5))
    kill_when(
        "sft", [*overrides, f"paths.artifact_dir={tmp_path / 'killed'}"], tmp_path, tmp_path / "killed", "last.ckpt"
    )
    assert not list((tmp_path / "killed").rglob("metrics.json")), "the kill came after the last epoch"
    resumed = run_cli("sft", [*overrides, f"paths.artifact_dir={tmp_path / 'killed'}"], tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resuming from" in resumed.stdout + resumed.stderr
    assert "epoch 4/4: " in resumed.stdout + resumed.stderr and "epoch 1/4" not in resumed.stdout + resumed.stderr
    adapters = [
        load_file(_artifact(tmp_path / root, "sft") / "adapter_model.safetensors") for root in ("full", "killed")
    ]
    assert adapters[0].keys() == adapters[1].keys()
    for name, weight in adapters[0].items():
        torch.testing.assert_close(adapters[1][name], weight, rtol=0, atol=1e-6)
    # the epoch chosen on validation and the validation curve survive the kill
    validations = [
        pd.read_csv(_artifact(tmp_path / root, "sft") / "validation.csv").drop(columns="seconds")
        for root in ("full", "killed")
    ]
    assert validations[0]["epoch"].tolist() == [1, 2, 3, 4]
    pd.testing.assert_frame_equal(validations[0], validations[1])


@pytest.mark.slow
def test_label_only_sft_changes_every_trainable_parameter(searched):
    tmp, _ = searched
    result = run_cli("sft", [*SFT, "sft=label_only"], tmp)
    assert result.returncode == 0, result.stderr[-3000:]
    folder = next((tmp / "artifacts" / "sft").rglob("label_only-*"))
    metrics = json.loads((folder / "metrics.json").read_text())
    assert metrics["examples"] == {"train": 86, "val": 10, "too_long": 0} and metrics["optimizer_steps"] == 43
    info = json.loads((folder / "eagrl_adapter.json").read_text())
    assert info["method"] == "sft-label_only" and info["prompt"]["style"] == "vanilla"
    # validated after its one epoch, on the 14 validation patients: that epoch is the adapter saved
    assert metrics["selected"]["by"] == "validation auroc" and metrics["selected"]["epoch"] == 1
    validation = pd.read_csv(folder / "validation.csv")
    assert validation["epoch"].tolist() == [1] and 0 <= validation["auroc"].iloc[0] <= 1
    assert "validation after epoch 1: AUROC" in result.stdout + result.stderr
    trained = load_file(folder / "adapter_model.safetensors")
    # the adapter as eagrl-sft initialised it (same seed, same order of random draws)
    cfg = compose_config("sft", SFT, tmp)
    L.seed_everything(0, verbose=False)
    from hydra.utils import instantiate

    model, _ = instantiate(cfg.backbone.loader, dtype=torch.float32, attn_implementation="eager")
    initial = {
        name: p.detach() for name, p in attach_lora(model, cfg.backbone.lora).named_parameters() if p.requires_grad
    }
    assert len(trained) == len(initial) > 0
    for name, weight in trained.items():
        start = initial[name.replace(".weight", ".default.weight")]
        assert not torch.allclose(weight, start), f"{name} did not change"


def test_expert_label_examples_name_the_experts_salient_set_and_the_labels_answer(searched):
    from eagrl.experts.salient import expert_importance
    from eagrl.stages.sft import load_examples

    tmp, _ = searched
    overrides = [*SFT, "sft=expert_label", "salient.expert=gru", f"paths.artifact_dir={tmp / 'artifacts'}"]
    cfg = compose_config("sft", overrides, tmp)
    examples, source = load_examples(cfg)
    path, importance = expert_importance(cfg)
    assert source == path and len(examples) == 96
    labels = {record.patient_id: record.label for record in _train_records(cfg)}
    for example in examples:
        ranking = list(importance.loc[example.patient_id, "ranking"])
        head, answer = example.completion.split("</Important Features>")
        names = head.removeprefix("<Important Features>").strip().split("; ")
        assert 1 <= len(names) <= cfg.salient.top_k and all(name in example.messages[1]["content"] for name in names)
        # the expert's order, best first: each name outranks the next
        assert [ranking.index(name) for name in names] == sorted(ranking.index(name) for name in names)
        assert answer.strip() == f"<Final answer> {['0.10', '0.90'][labels[example.patient_id]]} </Final answer>"
    broken = compose_config("sft", [*overrides, "sft.completion='{label} {probability}'"], tmp)
    with pytest.raises(ConfigError, match="its fields are"):
        load_examples(broken)


def test_max_patients_trains_on_a_label_stratified_sample(tmp_path):
    from omegaconf import OmegaConf

    from eagrl.stages.sft import artifact, load_examples
    from eagrl.utils.artifacts import config_hash

    cfg = compose_config("sft", [*SFT, "sft=label_only", "max_patients=40"], tmp_path)
    examples, _ = load_examples(cfg)
    labels = {record.patient_id: record.label for record in _train_records(cfg)}
    assert len(examples) == len({example.patient_id for example in examples}) == 40
    assert {example.patient_id for example in examples} <= set(labels)
    deaths = sum(labels[example.patient_id] for example in examples)
    assert abs(deaths / 40 - sum(labels.values()) / len(labels)) <= 1 / 40  # the training split's prevalence
    again, _ = load_examples(cfg)
    assert [example.patient_id for example in again] == [example.patient_id for example in examples]
    # the sample has its own adapter folder; max_patients=null keeps the folder of the configs without the key
    everyone = compose_config("sft", [*SFT, "sft=label_only"], tmp_path)
    without_key = OmegaConf.masked_copy(everyone, [key for key in everyone if key != "max_patients"])
    assert artifact(everyone, {}).folder.name == f"label_only-{config_hash(without_key, inputs={})}"
    assert artifact(cfg, {}).folder != artifact(everyone, {}).folder


@pytest.mark.slow
def test_trajectory_sft_keeps_the_trajectories_of_its_max_patients_sample(searched):
    """The search's max_patients sample is the SFT's with the same value: every trajectory stays; a smaller sample
    keeps only its own patients' trajectories."""
    from eagrl.stages.sft import load_examples

    tmp, _ = searched
    overrides = [*SFT, f"paths.artifact_dir={tmp / 'artifacts'}"]
    everyone, _ = load_examples(compose_config("sft", overrides, tmp))
    searched_sample, _ = load_examples(compose_config("sft", [*overrides, "max_patients=16"], tmp))
    assert [example.patient_id for example in searched_sample] == [example.patient_id for example in everyone]
    cfg = compose_config("sft", [*overrides, "max_patients=4"], tmp)
    sample = {record.patient_id for record in _train_records(cfg, 4)}
    fewer, _ = load_examples(cfg)
    assert {example.patient_id for example in fewer} <= sample and len(fewer) < len(everyone)


def _train_records(cfg, count=None):
    """The training split's patients (a label-stratified sample of ``count``; None = all)."""
    datamodule = prepared_datamodule(cfg)
    return datamodule.records("train", count)


def test_prompt_tokens_are_masked_and_the_turn_ends():
    tokenizer = byte_tokenizer()
    example = ChatExample("p", [{"role": "user", "content": "hello"}], "<Final answer> 1 </Final answer>")
    item = tokenize_example(tokenizer, example)
    prompt = tokenizer.apply_chat_template(example.messages, add_generation_prompt=True, tokenize=False)
    prompt_length = len(tokenizer(prompt, add_special_tokens=False)["input_ids"])
    assert item["labels"][:prompt_length] == [IGNORE] * prompt_length
    assert item["labels"][prompt_length:] == item["input_ids"][prompt_length:]
    assert tokenizer.decode(item["input_ids"][prompt_length:-1]) == example.completion
    assert item["input_ids"][-1] == tokenizer.eos_token_id
