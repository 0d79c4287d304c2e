"""Tiny backbones for policy tests: random, and one trained to answer in the PQD closing format."""

from __future__ import annotations

import pytest
import torch

from eagrl.policy.attention import EAGRL_SDPA
from eagrl.policy.backbone import tiny_random

TINY = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
        "num_key_value_heads": 2, "max_position_embeddings": 4096}  # fmt: skip
#: what the trained tiny model learns to say after any prompt
SCRIPTED_ANSWER = "<Important Features> LDH </Important Features>\n<Final answer> 0.7 </Final answer> and more"


def tiny(attn_implementation: str = EAGRL_SDPA, seed: int = 0):
    """A random tiny Llama and its byte tokenizer."""
    return tiny_random(TINY, seed=seed, dtype=torch.float32, attn_implementation=attn_implementation)


def nonzero_adapter(policy, std: float = 0.1, seed: int = 0):
    """``policy`` with its LoRA B matrices drawn from N(0, std²) (peft starts them at 0), so the adapter's path
    counts in the forward pass and A has gradients, as in a trained adapter."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in policy.named_parameters():
            if "lora_B" in name:
                parameter.normal_(std=std, generator=generator)
    return policy


@pytest.fixture(scope="session")
def tiny_backbone():
    return tiny()


@pytest.fixture(scope="session")
def scripted_backbone():
    """The tiny model overfit (Adam, 250 steps) to continue a chat prompt with :data:`SCRIPTED_ANSWER`."""
    model, tokenizer = tiny(seed=1)
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": "patient"}], add_generation_prompt=True,
                                           tokenize=False)  # fmt: skip
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    answer_ids = tokenizer(SCRIPTED_ANSWER, add_special_tokens=False)["input_ids"]
    ids = torch.tensor([prompt_ids + answer_ids])
    labels = ids.clone()
    labels[:, : len(prompt_ids)] = -100
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    model.train()
    torch.manual_seed(0)
    for _ in range(250):
        optimizer.zero_grad()
        model(input_ids=ids, labels=labels).loss.backward()
        optimizer.step()
    model.eval()
    return model, tokenizer, prompt_ids
