"""The RL LightningModule on the tiny model: real steps, a learnable toy reward that rises, every trainable
parameter changes; the shared-prefix scoring equals a plain forward."""

from __future__ import annotations

import json
import math
import string
import subprocess
import sys
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch

from eagrl.policy.attention import EAGRL_SDPA
from eagrl.policy.backbone import attach_lora, tiny_random
from eagrl.policy.frozen import FrozenLayerCache
from eagrl.rewards import RewardTerms
from eagrl.rl.module import PolicyRLModule, RLConfig, flat_streak, step_loader
from eagrl.rl.rollout import RLPrompt, key_token_span, line_token_spans, score_responses
from tests.configs import toy_rl
from tests.policy.conftest import TINY, nonzero_adapter, tiny

ROOT = Path(__file__).resolve().parents[2]
LORA = {"r": 8, "lora_alpha": 16, "lora_dropout": 0.0, "target_modules": ["q_proj", "v_proj", "up_proj", "down_proj"]}


def _prompts(tokenizer, count=4):
    prompts = []
    for number in range(count):
        text = tokenizer.apply_chat_template(
            [{"role": "user", "content": f"patient {number}"}], add_generation_prompt=True, tokenize=False
        )
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        prompts.append(RLPrompt(str(number), number % 2, ids, (), (), (), np.zeros(0)))
    return prompts


def letters(prompt, text, parsed, internal) -> RewardTerms:
    """Toy reward: the share of lower-case ASCII letters in the answer (learnable by a random byte model)."""
    share = sum(character in string.ascii_lowercase for character in text) / max(len(text), 1)
    return RewardTerms(total=share, cls=share, att=0.0, parsed=True)


def toy_policy():
    """The tiny LoRA policy of the toy task and its four prompts."""
    torch.manual_seed(0)
    # wide initial weights: the frozen tied embeddings must be able to express a peaked distribution
    model, tokenizer = tiny_random(
        {**TINY, "initializer_range": 0.5}, seed=0, dtype=torch.float32, attn_implementation=EAGRL_SDPA
    )
    model = attach_lora(model, LORA)
    return model, tokenizer, _prompts(tokenizer)


#: a short toy run: 2 patients per step (one per process when data-parallel), groups of 4
RL_TOY = toy_rl(steps=3, prompts_per_step=2, group_size=4, lr=2e-2, max_new_tokens=8, batch_size=8)


def _train(rl: RLConfig, reward=letters):
    model, tokenizer, prompts = toy_policy()
    initial = {name: p.detach().clone() for name, p in model.named_parameters() if p.requires_grad}
    module = PolicyRLModule(model, tokenizer, prompts, rl, reward=reward)
    trainer = L.Trainer(
        max_epochs=1, accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False,
    )  # fmt: skip
    trainer.fit(module, step_loader(rl.steps))
    return module, model, initial


@pytest.mark.slow
@pytest.mark.parametrize("updates_per_step", [1, 2])  # 1: the scoring pass is the update's forward pass (fused)
def test_toy_reward_rises_and_every_trainable_parameter_changes(updates_per_step):
    rl = toy_rl(steps=30, prompts_per_step=2, group_size=8, updates_per_step=updates_per_step, lr=2e-2,
                  max_new_tokens=12, adaptive_clip=False, batch_size=16)  # fmt: skip
    module, model, initial = _train(rl)
    history = module.history
    assert len(history) == 30 and all(math.isfinite(h["loss"]) for h in history)
    first, last = np.mean([h["reward"] for h in history[:5]]), np.mean([h["reward"] for h in history[-5:]])
    assert last > first + 0.3, (first, last)
    for name, parameter in model.named_parameters():
        if parameter.requires_grad:
            assert not torch.allclose(parameter, initial[name]), f"{name} did not change"
    assert {"clip_fraction", "kl", "entropy", "eps_high_mean", "response_tokens"} <= set(history[-1])


def test_two_runs_with_the_same_seed_are_identical():
    runs = [_train(RL_TOY) for _ in range(2)]
    histories = [[{k: v for k, v in h.items() if not k.startswith("seconds")} for h in module.history]
                 for module, _, _ in runs]  # fmt: skip
    assert histories[0] == histories[1]
    (_, first, initial), (_, second, _) = runs
    trained = {name: parameter for name, parameter in first.named_parameters() if parameter.requires_grad}
    assert any(not torch.equal(trained[name], initial[name]) for name in trained), "nothing trained"
    for name, parameter in second.named_parameters():
        if parameter.requires_grad:
            assert torch.equal(parameter, trained[name]), name


@pytest.mark.slow
def test_two_process_ddp_matches_one_process(tmp_path):
    """RolloutParallel with 2 gloo processes: each samples one of the step's 2 patients, gradients are averaged,
    so rewards and the trained adapter match the 1-process run within float tolerance."""
    runs = {}
    for processes in (1, 2):
        output = tmp_path / f"{processes}.json"
        result = subprocess.run([sys.executable, "-m", "tests.rl.toy_run", str(processes), str(output)],
                                capture_output=True, text=True, timeout=600, cwd=ROOT)  # fmt: skip
        assert result.returncode == 0, result.stderr[-3000:]
        runs[processes] = json.loads(output.read_text())
    one, two = runs[1], runs[2]
    assert [h["groups_sampled"] for h in two["history"]] == [2.0] * RL_TOY.steps
    for key in ("reward", "accuracy", "response_tokens", "loss"):
        np.testing.assert_allclose([h[key] for h in two["history"]], [h[key] for h in one["history"]], atol=1e-4)
    np.testing.assert_allclose(list(two["adapter"].values()), list(one["adapter"].values()), rtol=1e-3, atol=1e-4)
    assert one["history"][-1]["loss"] != 0.0


def test_dynamic_sampling_drops_groups_of_equal_accuracy():
    # no answer of the random model parses, so every group is all-wrong: DAPO keeps none and updates nothing
    rl = toy_rl(steps=2, prompts_per_step=2, group_size=2, max_new_tokens=4, dynamic_sampling=True,
                  max_resample_rounds=1)  # fmt: skip
    module, model, initial = _train(rl)
    assert [h["groups_kept"] for h in module.history] == [0.0, 0.0]
    assert [h["groups_sampled"] for h in module.history] == [4.0, 4.0]  # the first draw and one resample round
    assert all(torch.equal(p, initial[n]) for n, p in model.named_parameters() if p.requires_grad)


def test_shared_prefix_scoring_equals_a_plain_forward():
    model, tokenizer = tiny()
    prompt = tokenizer("<|im_start|>user\nhello<|im_end|>\n<|im_start|>assistant\n", add_special_tokens=False)[
        "input_ids"
    ]
    responses = [[70, 71, 72], [73, 74]]
    scored = score_responses(model, prompt, responses, tokenizer.pad_token_id, entropy=True)
    for row, response in enumerate(responses):
        ids = torch.tensor([prompt + response])
        logp = torch.log_softmax(model(input_ids=ids).logits[0, len(prompt) - 1 : -1].float(), -1)
        expected = logp.gather(-1, torch.tensor(response)[:, None]).squeeze(-1)
        torch.testing.assert_close(scored.logp[row, : len(response)], expected, atol=1e-5, rtol=1e-4)
    assert scored.mask.tolist() == [[1, 1, 1], [1, 1, 0]] and scored.logp[1, 2] == 0


def test_scoring_on_the_frozen_layer_cache_equals_the_full_pass_with_its_gradients():
    """LoRA on the top layer: the bottom layer's hidden states of a prompt and its answers are computed on the first
    pass and read on the next (π_old, then the update); log-probabilities, entropies and adapter gradients equal
    the full pass's, and clearing the cache (a new step) runs the bottom layer again."""
    model, tokenizer = tiny()
    policy = nonzero_adapter(attach_lora(model, {**LORA, "layers_to_transform": [1]}))
    prompt = tokenizer("<|im_start|>user\nhello<|im_end|>\n<|im_start|>assistant\n", add_special_tokens=False)[
        "input_ids"
    ]
    responses = [[70, 71, 72], [73, 74]]
    frozen = FrozenLayerCache.attach(policy, budget_gb=1.0)
    reference = score_responses(policy, prompt, responses, tokenizer.pad_token_id, entropy=True)
    reference.logp.sum().backward()
    expected = [p.grad.clone() for p in policy.parameters() if p.requires_grad]
    for passes in (1, 2):
        policy.zero_grad()
        scored = score_responses(policy, prompt, responses, tokenizer.pad_token_id, entropy=True, frozen=frozen)
        scored.logp.sum().backward()
        torch.testing.assert_close(scored.logp, reference.logp, atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(scored.entropy, reference.entropy, atol=1e-5, rtol=1e-4)
        for ours, theirs in zip([p.grad for p in policy.parameters() if p.requires_grad], expected, strict=True):
            torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-4)
        assert (frozen.hits, frozen.misses) == (passes - 1, 1)
    frozen.clear()
    score_responses(policy, prompt, responses, tokenizer.pad_token_id, frozen=frozen)
    assert (frozen.hits, frozen.misses) == (1, 2)


def test_rl_drops_a_frozen_layer_cache_whose_split_pass_disagrees():
    """The module checks the cache on its first scored group: a decoder that treats ``inputs_embeds`` differently
    from its own embeddings (as Gemma scales them) fails, the cache is dropped, and the scores are the full pass's;
    a decoder it reproduces keeps it."""
    for breaks in (False, True):
        model, tokenizer = tiny()
        policy = attach_lora(model, {**LORA, "layers_to_transform": [1]})
        if breaks:
            model.model.register_forward_pre_hook(
                lambda module, args, kwargs: (args, {**kwargs, "inputs_embeds": kwargs["inputs_embeds"] * 2})
                if kwargs.get("inputs_embeds") is not None else None,
                with_kwargs=True,
            )  # fmt: skip
        prompts = _prompts(tokenizer)
        module = PolicyRLModule(policy, tokenizer, prompts, toy_rl(frozen_cache_gb=1.0), reward=letters)
        scored = module._score(prompts[0], [[70, 71, 72], [73, 74]])
        expected = score_responses(policy, prompts[0].prompt_ids, [[70, 71, 72], [73, 74]], tokenizer.pad_token_id)
        assert (module.frozen is None) == breaks
        torch.testing.assert_close(scored.logp, expected.logp, atol=1e-5, rtol=1e-4)


def test_key_token_span_and_line_spans():
    _, tokenizer = tiny()
    text = "<Subquestion> a </Subquestion>\n<Important Features> LDH; Albumin </Important Features>\n<Final answer> 0.3"
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    start, end = key_token_span(tokenizer, ids)
    assert tokenizer.decode(ids[start:end]) == " LDH; Albumin "  # the list alone, without its tags
    for answer, body in [
        ("<important features>LDH</IMPORTANT FEATURES>", "LDH"),  # case-insensitive, as the parser reads it
        ("<Important Features> LDH; Albumin\n<Final answer> 0.3", " LDH; Albumin\n"),  # not closed
    ]:
        ids = tokenizer(answer, add_special_tokens=False)["input_ids"]
        start, end = key_token_span(tokenizer, ids)
        assert tokenizer.decode(ids[start:end]) == body
    assert key_token_span(tokenizer, tokenizer("no block", add_special_tokens=False)["input_ids"]) is None
    prompt = "intro\n- LDH (Unit: U/L): [300]\n- Albumin (Unit: g/L): [30]\nend"
    token_ids, spans = line_token_spans(tokenizer, prompt, ["- LDH (Unit: U/L): [300]", "- Albumin (Unit: g/L): [30]"])
    assert [tokenizer.decode(token_ids[a:b]) for a, b in spans] == [
        "- LDH (Unit: U/L): [300]",
        "- Albumin (Unit: g/L): [30]",
    ]


def test_adaptive_band_holds_tokens_and_eagrl_trains_another_adapter_than_grpo(monkeypatch):
    """Several PPO epochs at a high learning rate push ratios past 1.2; with key tokens whose entropies differ, the
    band (1.2, 1 + ε_high(τ)] holds a share of them, and the EAG-RL adapter differs from the fixed-clip one."""
    import eagrl.rl.module as module_code

    # the random byte model writes no <Important Features> list: take every answer token as a key token
    monkeypatch.setattr(module_code, "key_token_span", lambda tokenizer, ids: (0, len(ids)))
    settings = {"steps": 3, "prompts_per_step": 2, "group_size": 4, "lr": 5e-2, "max_new_tokens": 8, "batch_size": 8,
                "updates_per_step": 2, "ppo_epochs": 4}  # fmt: skip
    eagrl, eagrl_model, _ = _train(toy_rl(**settings, adaptive_clip=True, eps_min=0.2, eps_max=0.4))
    grpo, grpo_model, _ = _train(toy_rl(**settings, adaptive_clip=False, eps_high=0.2))
    assert max(h["ratio_max"] for h in eagrl.history) > 1.2
    assert sum(h["band_fraction"] for h in eagrl.history) > 0
    assert all(h["band_fraction"] == 0 for h in grpo.history)  # a fixed clip has no band
    trained = dict(grpo_model.named_parameters())
    assert any(
        not torch.allclose(parameter, trained[name]) for name, parameter in eagrl_model.named_parameters()
        if parameter.requires_grad
    )  # fmt: skip


@pytest.mark.parametrize("select_on", ["auroc", "reward"])
def test_validation_every_n_steps_keeps_the_best_adapter(select_on):
    model, tokenizer, prompts = toy_policy()
    rl = toy_rl(steps=2, prompts_per_step=2, group_size=2, lr=5e-2, max_new_tokens=6, batch_size=8,
                  val_every_steps=1, val_score="token_expectation", select_on=select_on)  # fmt: skip
    module = PolicyRLModule(model, tokenizer, prompts, rl, reward=letters, val_prompts=prompts)
    trainer = L.Trainer(max_epochs=1, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False)  # fmt: skip
    trainer.fit(module, step_loader(rl.steps))
    assert [row["step"] for row in module.validations] == [0.0, 1.0, 2.0]
    assert all(0.0 <= row["auroc"] <= 1.0 for row in module.validations)
    # the greedy answers are rewarded too: the mean of the toy reward (a share of letters) and of its terms
    assert all(0.0 <= row["reward"] <= 1.0 and row["reward_cls"] == row["reward"] for row in module.validations)
    best = max(module.validations, key=lambda row: row[select_on])  # ties: the earliest
    selected = module.best.restore(model)
    assert selected["step"] == best["step"]
    for name, parameter in model.named_parameters():
        if parameter.requires_grad:
            assert torch.equal(parameter, module.best.weights[name])


def constant(prompt, text, parsed, internal) -> RewardTerms:
    """Every answer the parse-failure reward: no group has a spread, every advantage is 0."""
    return RewardTerms(total=-5.0, cls=math.nan, att=math.nan, parsed=False)


def test_steps_without_a_reward_spread_stop_the_run_early_and_validate_there(caplog):
    model, tokenizer, prompts = toy_policy()
    rl = toy_rl(steps=10, prompts_per_step=2, group_size=2, max_new_tokens=4, batch_size=8, val_every_steps=4,
                  stop_after_flat_steps=2)  # fmt: skip
    module = PolicyRLModule(model, tokenizer, prompts, rl, reward=constant, val_prompts=prompts)
    trainer = L.Trainer(max_epochs=1, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False)  # fmt: skip
    with caplog.at_level("WARNING"):
        trainer.fit(module, step_loader(rl.steps))
    assert [(h["groups_flat"], h["groups_kept"]) for h in module.history] == [(2.0, 2.0), (2.0, 2.0)]
    assert [row["step"] for row in module.validations] == [0.0, 2.0]  # step 0, and where the run stopped
    assert "RL stops after step 2 of 10" in caplog.text
    # a run resumed from the stop's checkpoint (its history restored) takes no further step
    L.Trainer(max_epochs=1, accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
              enable_model_summary=False).fit(module, step_loader(rl.steps))  # fmt: skip
    assert len(module.history) == 2 and len(module.validations) == 2


def test_a_reward_spread_keeps_the_run_going():
    module, _, _ = _train(toy_rl(**{**RL_TOY.__dict__, "stop_after_flat_steps": 1}))
    assert len(module.history) == RL_TOY.steps and all(h["groups_flat"] < h["groups_kept"] for h in module.history)


def test_flat_streak_counts_the_trailing_steps_without_signal():
    counts = [(2.0, 2.0), (1.0, 2.0), (0.0, 0.0), (2.0, 2.0)]  # (flat, kept); none kept is flat too
    assert flat_streak([{"groups_flat": flat, "groups_kept": kept} for flat, kept in counts]) == 2
    assert flat_streak([{"groups_flat": 0.0, "groups_kept": 2.0}]) == 0 and flat_streak([]) == 0
