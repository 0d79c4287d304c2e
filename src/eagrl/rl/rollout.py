"""Stage 2 rollouts: the prompts RL trains on, the per-token quantities of sampled answers, their rewards, and the
groups one step collects with their logged values.

A group is one prompt and its G sampled answers. :func:`score_responses` runs the policy over the prompt once
and over the G answers together on top of the prompt's key/value cache (the prompt is never encoded G times,
in the no-grad scoring pass and in the gradient pass alike), giving per token the log-probability of the
sampled token, the entropy of the policy there, and, inside an attention probe, the attention mass the answer
puts on every prompt token.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from omegaconf import DictConfig
from transformers import PreTrainedTokenizerBase
from transformers.cache_utils import DynamicCache

from eagrl.experts.salient import importance_distribution, salient_features
from eagrl.policy.attention import probe_attention
from eagrl.policy.frozen import FrozenLayerCache, expand_rows
from eagrl.policy.parsing import FEATURES, FeatureVocabulary, ParsedAnswer
from eagrl.rewards import RewardConfig, RewardTerms, score_answer
from eagrl.rl.objectives import token_entropy


@dataclass(frozen=True)
class RLPrompt:
    """One training patient as RL sees it.

    Attributes:
        patient_id, label: the patient and outcome (0/1).
        prompt_ids: the chat prompt's token ids, ready for the assistant's turn.
        expert_features: C_exp restricted to the features the prompt shows.
        feature_names: the dynamic features whose lines the prompt shows, in order.
        feature_spans: token ranges [start, end) of those lines in ``prompt_ids``.
        expert_distribution: the expert's importance over ``feature_names``, summing to 1.
    """

    patient_id: str
    label: int
    prompt_ids: list[int]
    expert_features: tuple[str, ...]
    feature_names: tuple[str, ...]
    feature_spans: tuple[tuple[int, int], ...]
    expert_distribution: np.ndarray


def line_token_spans(
    tokenizer: PreTrainedTokenizerBase, text: str, lines: Sequence[str]
) -> tuple[list[int], list[tuple[int, int]]]:
    """Token ids of ``text`` and the token range [start, end) covering each of ``lines`` (found in order)."""
    encoding = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    ends = [end for _, end in encoding["offset_mapping"]]
    spans, cursor = [], 0
    for line in lines:
        start_char = text.index(line, cursor)
        cursor = start_char + len(line)
        first = int(np.searchsorted(ends, start_char, side="right"))  # first token ending after the line starts
        last = int(np.searchsorted(ends, cursor, side="left"))  # the token that reaches the line's end
        spans.append((first, last + 1))
    return encoding["input_ids"], spans


def build_prompts(
    cfg: DictConfig, datamodule, tokenizer: PreTrainedTokenizerBase, importance, split: str = "train", count=None
) -> list[RLPrompt]:
    """The patients of ``split`` of the set-up ``datamodule`` as :class:`RLPrompt` (prompt tokens, feature spans,
    C_exp from the expert's ``importance`` rows, :func:`~eagrl.experts.salient.expert_importance`); ``count``
    patients (a label-stratified sample; None = all). ``cfg`` gives the task, prompt and ``salient.top_k``."""
    records, prompts = datamodule.patients(split, cfg.task, cfg.prompt, count)
    names = datamodule.features.static_names + datamodule.features.dynamic_names
    built = []
    for record, prompt in zip(records, prompts, strict=True):
        text = tokenizer.apply_chat_template(prompt.messages(), add_generation_prompt=True, tokenize=False)
        ids, spans = line_token_spans(tokenizer, text, prompt.feature_lines)
        row = importance.loc[record.patient_id]
        built.append(
            RLPrompt(
                patient_id=record.patient_id,
                label=record.label,
                prompt_ids=ids,
                expert_features=tuple(salient_features(row["ranking"], prompt.observed_features, cfg.salient.top_k)),
                feature_names=prompt.feature_order,
                feature_spans=tuple(spans),
                expert_distribution=importance_distribution(row["importance"], names, prompt.feature_order),
            )
        )
    return built


def key_token_span(tokenizer: PreTrainedTokenizerBase, token_ids: Sequence[int]) -> tuple[int, int] | None:
    """Token range [start, end) of the ``<Important Features>`` list in a generated answer: the tokens that lie
    wholly between the opening and the closing tag (neither tag included; read case-insensitively as the parser
    reads the list, up to ``<Final`` or the end when the list is not closed), or None without such a list.

    The tag positions are found in the decoded answer; the token bounds by bisection on decoded prefix lengths, so
    the range indexes the sampled tokens themselves.
    """
    match = FEATURES.search(tokenizer.decode(token_ids, skip_special_tokens=True))
    if match is None:
        return None
    body_start, body_end = match.span("body")

    def prefix_length(count: int) -> int:
        return len(tokenizer.decode(token_ids[:count], skip_special_tokens=True))

    def first_reaching(chars: int) -> int:
        """The smallest token count whose decoded prefix holds at least ``chars`` characters."""
        low, high = 0, len(token_ids)
        while low < high:
            middle = (low + high) // 2
            if prefix_length(middle) >= chars:
                high = middle
            else:
                low = middle + 1
        return low

    start = first_reaching(body_start)
    end = first_reaching(body_end + 1) - 1 if prefix_length(len(token_ids)) > body_end else len(token_ids)
    return (start, end) if end > start else None


@dataclass
class Scored:
    """Per-token quantities of G answers to one prompt (T = the longest answer).

    Attributes:
        logp: (G, T) log-probability of each sampled token.
        mask: (G, T) 1 on real answer tokens.
        entropy: (G, T) entropy of the policy at each position (nats, no gradient), or None when not asked for.
        prompt_mass: (G, prompt tokens) attention the answer puts on each prompt token (probed layers' mean, no
            gradient), or None when not asked for.
    """

    logp: torch.Tensor
    mask: torch.Tensor
    entropy: torch.Tensor | None = None
    prompt_mass: torch.Tensor | None = None


def score_responses(
    model: torch.nn.Module,
    prompt_ids: Sequence[int],
    responses: Sequence[Sequence[int]],
    pad_id: int,
    entropy: bool = False,
    probe_layers: Sequence[int] = (),
    temperature: float = 1.0,
    frozen: FrozenLayerCache | None = None,
) -> Scored:
    """Run the policy over one prompt and G answers; differentiable unless called under ``torch.no_grad``.

    The prompt (all but its last token) is encoded once into a cache expanded to G rows; the G answers, each
    preceded by the prompt's last token and right-padded, are encoded on top of it. Log-probabilities and
    entropies are those of the sampling distribution (logits divided by ``temperature``). With ``frozen`` (and no
    probed layers), the layers below the adapter are read from it (computed once per prompt and answers, then
    reused by every pass of the step: π_old, the reference, each PPO epoch) and only the adapted layers run.
    """
    group = len(responses)
    width = max(max(len(response) for response in responses), 1)
    targets = torch.full((group, width), pad_id, dtype=torch.long)
    mask = torch.zeros(group, width)
    for row, response in enumerate(responses):
        targets[row, : len(response)] = torch.tensor(list(response), dtype=torch.long)
        mask[row, : len(response)] = 1.0
    inputs = torch.cat([torch.full((group, 1), prompt_ids[-1], dtype=torch.long), targets[:, :-1]], dim=1)
    layers = {layer % model.config.num_hidden_layers for layer in probe_layers}
    cache = DynamicCache()
    if frozen is not None and not layers:
        prompt_hidden, answer_hidden = frozen.group(prompt_ids[:-1], inputs)
        with frozen.adapted_layers():
            model(inputs_embeds=prompt_hidden, past_key_values=cache, use_cache=True, logits_to_keep=1)
            expand_rows(cache, group)
            logits = model(inputs_embeds=answer_hidden, past_key_values=cache, use_cache=True).logits
        logits = logits.float() / temperature
    else:
        prompt = torch.tensor([list(prompt_ids[:-1])])
        model(input_ids=prompt, past_key_values=cache, use_cache=True, logits_to_keep=1)
        expand_rows(cache, group)
        with probe_attention(layers, query_mask=mask) as probe:
            logits = model(input_ids=inputs, past_key_values=cache, use_cache=True).logits.float() / temperature
    logp = torch.log_softmax(logits, dim=-1).gather(-1, targets[..., None]).squeeze(-1) * mask
    prompt_mass = None
    if layers:
        prompt_mass = torch.stack([probe.mass[layer] for layer in sorted(layers)]).mean(0)[:, : len(prompt_ids)]
    return Scored(
        logp=logp,
        mask=mask,
        entropy=token_entropy(logits.detach()) * mask if entropy else None,
        prompt_mass=prompt_mass,
    )


def feature_mass(prompt_mass: torch.Tensor, spans: Sequence[tuple[int, int]]) -> np.ndarray:
    """(G, features) attention mass summed over each feature line's tokens. prompt_mass: (G, prompt tokens)."""
    return np.stack([prompt_mass[:, start:end].sum(-1).numpy() for start, end in spans], axis=-1)


#: (prompt, answer text, parsed answer, internal attention agreement or None) -> reward terms
RewardFunction = Callable[[RLPrompt, str, ParsedAnswer, float | None], RewardTerms]


@dataclass
class Group:
    """One prompt, its sampled answers and everything measured on them (G answers)."""

    prompt: RLPrompt
    responses: list[list[int]]
    texts: list[str]
    terms: list[RewardTerms]
    correct: torch.Tensor
    old: Scored
    key_entropy: torch.Tensor
    ref_logp: torch.Tensor | None = None
    advantages: torch.Tensor = field(default_factory=lambda: torch.zeros(0))
    eps_high: torch.Tensor = field(default_factory=lambda: torch.zeros(0))

    @property
    def rewards(self) -> torch.Tensor:
        return torch.tensor([terms.total for terms in self.terms], dtype=torch.float32)


def paper_reward(vocabulary: FeatureVocabulary, cfg: RewardConfig) -> RewardFunction:
    """The EAG-RL reward of an answer (``src/eagrl/rewards``)."""

    def reward(prompt: RLPrompt, text: str, parsed: ParsedAnswer, internal: float | None) -> RewardTerms:
        return score_answer(parsed, prompt.label, prompt.expert_features, cfg, internal)

    return reward


def rollout_stats(sampled: list[Group], kept: list[Group], nonfinite: int) -> dict[str, float]:
    """One step's rollout values: means over every ``sampled`` answer (reward parts, accuracy, parse failures, lengths,
    entropy), group counts, ε_high over the ``kept`` groups, and the ``nonfinite`` values skipped so far."""
    terms = [terms for group in sampled for terms in group.terms]
    lengths = torch.cat([group.old.mask.sum(-1) for group in sampled])
    entropy = torch.cat([group.old.entropy.sum(-1) / group.old.mask.sum(-1).clamp_min(1) for group in sampled])
    key_entropy = torch.cat([group.key_entropy for group in sampled])
    stats = {
        "reward": float(np.mean([t.total for t in terms])),
        "reward_cls": float(np.nanmean([t.cls for t in terms])) if any(t.parsed for t in terms) else math.nan,
        "reward_att": float(np.nanmean([t.att for t in terms])) if any(t.parsed for t in terms) else math.nan,
        "accuracy": float(torch.cat([group.correct for group in sampled]).float().mean()),
        "parse_failure": float(np.mean([not t.parsed for t in terms])),
        "response_tokens": float(lengths.mean()),
        "entropy": float(entropy.mean()),
        "key_entropy": float(np.nanmean(key_entropy.numpy())) if torch.isfinite(key_entropy).any() else math.nan,
        "groups_sampled": float(len(sampled)),
        "groups_kept": float(len(kept)),
        # kept groups with one reward for every answer (advantage 0: no policy-gradient signal)
        "groups_flat": float(sum(bool((group.rewards == group.rewards[0]).all()) for group in kept)),
        "nonfinite": float(nonfinite),
    }
    if kept:
        eps_high = torch.cat([group.eps_high for group in kept])
        stats |= {"eps_high_mean": float(eps_high.mean()), "eps_high_max": float(eps_high.max())}
    return stats
