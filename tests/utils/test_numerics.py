"""Non-finite losses, rewards and advantages are caught, counted and skipped, or stop the run (on_nonfinite)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from eagrl.errors import ConfigError
from eagrl.experts.module import ExpertModule
from eagrl.policy.sft import PolicySFTModule
from eagrl.rewards import RewardTerms
from eagrl.rl.module import PolicyRLModule
from eagrl.rl.rollout import RLPrompt
from eagrl.utils.numerics import NonFiniteGuard, NumericalError
from tests.configs import toy_rl
from tests.policy.conftest import tiny

pytestmark = pytest.mark.filterwarnings("ignore:You are trying to `self.log()`")


def _nan_batch() -> dict[str, torch.Tensor]:
    return {
        "values": torch.full((2, 4, 3), float("nan")), "observed": torch.ones(2, 4, 3, dtype=torch.bool),
        "times": torch.zeros(2, 4), "visit_mask": torch.ones(2, 4, dtype=torch.bool), "length": torch.tensor([4, 4]),
        "static": torch.zeros(2, 1), "label": torch.tensor([0.0, 1.0]), "index": torch.tensor([0, 1]),
    }  # fmt: skip


def test_expert_skips_a_nan_batch_or_stops():
    module = ExpertModule("gru", 3, 1, {"hidden_dim": 8}, 1e-3, 0.0)
    assert module.training_step(_nan_batch(), 0) is None and module.guard.count == 1
    stopping = ExpertModule("gru", 3, 1, {"hidden_dim": 8}, 1e-3, 0.0, on_nonfinite="stop")
    with pytest.raises(NumericalError, match=r"train\.on_nonfinite=stop"):
        stopping.training_step(_nan_batch(), 0)


def test_sft_skips_a_nan_loss():
    model, _ = tiny()
    module = PolicySFTModule(model)
    module.forward = lambda batch: torch.tensor(float("nan"))
    assert module.training_step({"input_ids": torch.zeros(1, 3, dtype=torch.long)}, 0) is None
    assert module.guard.count == 1


def test_rl_drops_a_group_with_a_nan_reward():
    model, tokenizer = tiny()
    ids = tokenizer("<|im_start|>user\nx<|im_end|>\n<|im_start|>assistant\n", add_special_tokens=False)["input_ids"]
    prompts = [RLPrompt(str(n), 0, ids, (), (), (), np.zeros(0)) for n in range(2)]

    def reward(prompt, text, parsed, internal):
        value = float("nan") if prompt.patient_id == "0" else float(len(text) % 3)
        return RewardTerms(total=value, cls=value, att=0.0, parsed=True)

    rl = toy_rl(steps=1, prompts_per_step=2, group_size=2, max_new_tokens=4)
    module = PolicyRLModule(model, tokenizer, prompts, rl, reward=reward)
    kept, stats = module.collect(step=0)
    assert [group.prompt.patient_id for group in kept] == ["1"] and stats["nonfinite"] == 1.0
    with pytest.raises(NumericalError, match="reward"):
        PolicyRLModule(model, tokenizer, prompts, toy_rl(**{**rl.__dict__, "on_nonfinite": "stop"}), reward).collect(0)


def test_unknown_policy_is_a_config_error():
    with pytest.raises(ConfigError, match=r"x\.on_nonfinite=.retry."):
        NonFiniteGuard("retry", "x.on_nonfinite")
