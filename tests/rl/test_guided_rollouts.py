"""rl.guided: the rollouts of each patient are sampled under that patient's whole-answer grammar."""

from __future__ import annotations

import numpy as np
import pytest

from eagrl.policy.backbone import attach_lora
from eagrl.policy.guided import answer_grammar
from eagrl.rewards import RewardTerms
from eagrl.rl.module import PolicyRLModule
from eagrl.rl.rollout import RLPrompt
from tests.configs import toy_rl
from tests.policy.conftest import tiny

LORA = {"r": 4, "lora_alpha": 8, "lora_dropout": 0.0, "target_modules": ["q_proj", "v_proj"]}


def constant(prompt, text, parsed, internal) -> RewardTerms:
    return RewardTerms(total=0.0, cls=0.0, att=0.0, parsed=parsed.parsed)


@pytest.mark.parametrize("guided", [True, False])
def test_rollouts_follow_each_patients_grammar(guided):
    model, tokenizer = tiny()
    model = attach_lora(model, LORA)
    prompts = []
    for number, names in enumerate((("LDH", "Albumin"), ("D-dimer",))):
        text = tokenizer.apply_chat_template([{"role": "user", "content": f"patient {number}"}], tokenize=False,
                                             add_generation_prompt=True)  # fmt: skip
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        prompts.append(RLPrompt(patient_id=str(number), label=number % 2, prompt_ids=ids, expert_features=(),
                                feature_names=names, feature_spans=(), expert_distribution=np.zeros(0)))  # fmt: skip
    rl = toy_rl(steps=1, prompts_per_step=2, group_size=2, max_new_tokens=8, guided=guided, guided_features=2)
    module = PolicyRLModule(model, tokenizer, prompts, rl, reward=constant)
    seen = []
    generate = module.engine.generate

    def spy(*args, grammars=None, **kwargs):
        seen.append(grammars)
        return generate(*args, grammars=grammars, **kwargs)

    module.engine.generate = spy
    groups = module.sample_groups(prompts, step=0)
    assert len(groups) == 2 and all(len(group.responses) == 2 for group in groups)
    expected = [answer_grammar(prompt.feature_names, 2) for prompt in prompts] if guided else None
    assert seen == [expected]
    assert (module.engine.stats.guide_seconds > 0) == guided
