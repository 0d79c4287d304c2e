"""The policy's internal attention over the features of its prompt, beside the expert's importance: per patient
(layers × heads × features) and over a cohort (top-k agreement, rank correlation). Used by
``notebooks/attention_maps.ipynb``; the same measurement as ``reward.attention=internal`` (METHOD §4).

    profile = attention_profile(model, tokenizer, prompt, answer_text, layers=[-4, -3, -2, -1])
    profile.mass.shape            # (layers, heads, features): share of the answer's attention per feature line
    agreement(profile.features(), expert_distribution, k=5)   # {"top_k": ..., "spearman": ...}
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from scipy.stats import spearmanr

from eagrl.data.prompt import ChatPrompt
from eagrl.policy.attention import probe_attention
from eagrl.rl.rollout import line_token_spans


@dataclass
class AttentionProfile:
    """Attention an answer puts on each feature line of its prompt.

    Attributes:
        features: feature names, in prompt order.
        layers: the probed layers (non-negative indices).
        mass: (layers, heads, features) the answer's attention mass on each feature line's tokens, normalised over
            the features for every (layer, head).
    """

    features: tuple[str, ...]
    layers: tuple[int, ...]
    mass: np.ndarray

    def distribution(self) -> np.ndarray:
        """(features,) the mass averaged over layers and heads, summing to 1."""
        mean = self.mass.mean(axis=(0, 1))
        return mean / mean.sum() if mean.sum() > 0 else mean


@torch.no_grad()
def attention_profile(model, tokenizer, prompt: ChatPrompt, answer: str, layers: Sequence[int]) -> AttentionProfile:
    """Run the policy (an ``eagrl_sdpa`` model) over ``prompt`` and ``answer`` and read where the answer looks."""
    text = tokenizer.apply_chat_template(prompt.messages(), add_generation_prompt=True, tokenize=False)
    prompt_ids, spans = line_token_spans(tokenizer, text, prompt.feature_lines)
    answer_ids = tokenizer(answer, add_special_tokens=False)["input_ids"] or [tokenizer.eos_token_id]
    ids = torch.tensor([prompt_ids + answer_ids])
    query_mask = torch.zeros(ids.shape)
    query_mask[0, len(prompt_ids) :] = 1
    resolved = sorted({layer % model.config.num_hidden_layers for layer in layers})
    with probe_attention(resolved, query_mask=query_mask, per_head=True) as probe:
        model(input_ids=ids)
    mass = np.stack([probe.mass[layer][0].numpy() for layer in resolved])  # (layers, heads, keys)
    per_feature = np.stack([mass[..., start:end].sum(-1) for start, end in spans], axis=-1)
    totals = per_feature.sum(-1, keepdims=True)
    normalised = np.divide(per_feature, totals, out=np.zeros_like(per_feature), where=totals > 0)
    return AttentionProfile(features=prompt.feature_order, layers=tuple(resolved), mass=normalised)


def agreement(policy: Sequence[float], expert: Sequence[float], k: int = 5) -> dict[str, float]:
    """Top-k overlap (|top_k(policy) ∩ top_k(expert)| / k) and Spearman's ρ of two importance vectors."""
    policy, expert = np.asarray(policy, dtype=float), np.asarray(expert, dtype=float)
    k = min(k, len(policy))
    top_policy, top_expert = set(np.argsort(-policy)[:k]), set(np.argsort(-expert)[:k])
    rho = spearmanr(policy, expert).statistic if len(policy) > 1 and np.ptp(policy) and np.ptp(expert) else np.nan
    return {"top_k": len(top_policy & top_expert) / k if k else np.nan, "spearman": float(rho)}


def policy_answers(
    model, tokenizer, prompts: Sequence[ChatPrompt], max_new_tokens: int, keys: Sequence[str]
) -> list[str]:
    """Greedy PQD answers of a policy to ``prompts`` (the generation engine, stopping at ``</Final answer>``)."""
    from eagrl.policy.engine import GenerationEngine, SamplingConfig

    engine = GenerationEngine(model, tokenizer, progress=False)
    sampling = SamplingConfig(max_new_tokens=max_new_tokens, stop_strings=("</Final answer>",))
    answers = engine.generate(engine.encode_chat([prompt.messages() for prompt in prompts]), sampling, keys=keys)
    return [samples[0].text for samples in answers]


def cohort_agreement(
    profiles: Sequence[AttentionProfile], expert: Sequence[np.ndarray], k: int = 5
) -> list[dict[str, float]]:
    """Per patient: the agreement of the policy's attention distribution with the expert's importance over the
    same features (``expert[i]`` aligned with ``profiles[i].features``)."""
    return [agreement(profile.distribution(), weights, k) for profile, weights in zip(profiles, expert, strict=True)]
