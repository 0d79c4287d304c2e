"""The GRPO family's math as pure tensor functions (METHOD §6), registered by name so a config picks them.

Shapes: ``G`` samples per group, ``N`` sequences in a batch, ``T`` response tokens (right-padded, ``mask`` 1 on
real tokens). Log-probabilities are per token, in nats.

- advantages: GRPO's group-relative ``(R − mean_G R) / (std_G R + δ)`` (Shao et al. 2024, DeepSeekMath), or
  Dr. GRPO's ``R − mean_G R`` (Liu et al. 2025, "Understanding R1-Zero-Like Training");
- the clipped surrogate ``min(r·Â, clip(r, 1 − ε_low, 1 + ε_high)·Â)`` with a per-sequence ``ε_high`` (DAPO's
  clip-higher, Yu et al. 2025; EAG-RL's entropy-aware adaptive up-clip);
- EAG-RL's ``ε_high(τ) = ε_min + (ε_max − ε_min)·norm(H̄(τ))``, H̄ = mean token entropy of π_old over the key
  clinical tokens, min–max normalised within the group;
- the k3 estimator of KL(π_θ ‖ π_ref) (Schulman 2020): ``exp(ref − logp) − (ref − logp) − 1``;
- loss aggregations, as per-token weights: ``grpo`` (token mean per sequence, then mean over sequences),
  ``dapo`` (token mean over the batch), ``dr_grpo`` (token sum per sequence over a constant length, then mean
  over sequences).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

#: name -> per-token weights (N, T) from the response mask (N, T): loss = Σ weights · per-token loss. Weights
#: (not a reduction) let a batch be backpropagated one prompt at a time with the same result.
AGGREGATIONS: dict[str, Callable[..., torch.Tensor]] = {}
#: name -> group advantages from rewards (groups, G)
ADVANTAGES: dict[str, Callable[..., torch.Tensor]] = {}


def register(registry: dict, name: str) -> Callable:
    """Decorator: add a function to ``registry`` under ``name``; a name registered twice raises ``ValueError`` (the
    second would silently replace the first)."""

    def add(function: Callable) -> Callable:
        if name in registry:
            raise ValueError(f"{name!r} is registered twice ({registry[name].__name__} and {function.__name__})")
        registry[name] = function
        return function

    return add


@register(ADVANTAGES, "grpo")
def grpo_advantages(rewards: torch.Tensor, eps: float = 1e-4) -> torch.Tensor:
    """(R − mean) / (std + eps) within each group; a group of equal rewards gets zeros. rewards: (groups, G)."""
    mean = rewards.mean(dim=-1, keepdim=True)
    std = rewards.std(dim=-1, keepdim=True, unbiased=False)
    return (rewards - mean) / (std + eps)


@register(ADVANTAGES, "dr_grpo")
def centred_advantages(rewards: torch.Tensor, eps: float = 1e-4) -> torch.Tensor:
    """R − mean within each group (Dr. GRPO: no division by the std). rewards: (groups, G)."""
    return rewards - rewards.mean(dim=-1, keepdim=True)


def adaptive_clip_high(entropy: torch.Tensor, eps_min: float, eps_max: float, delta: float = 1e-6) -> torch.Tensor:
    """ε_high per trajectory from its mean key-token entropy, min–max normalised within the group with the paper's
    +δ: ``norm(H̄) = (H̄ − min_G H̄) / (max_G H̄ − min_G H̄ + δ)``.

    Args:
        entropy: (groups, G) mean entropy of π_old over each trajectory's key clinical tokens (nats); NaN for a
            trajectory without key tokens.
        eps_min, eps_max: the range of ε_high.
        delta: δ of the denominator (keeps a group of equal entropies at ``eps_min``).

    Returns:
        (groups, G) ε_high in [eps_min, eps_max). A group whose finite entropies are all equal, and a trajectory with
        NaN entropy, get ``eps_min`` (no evidence to loosen the clip: the fixed-clip GRPO case).
    """
    finite = torch.isfinite(entropy)
    low = torch.where(finite, entropy, torch.inf).amin(dim=-1, keepdim=True)
    high = torch.where(finite, entropy, -torch.inf).amax(dim=-1, keepdim=True)
    spread = torch.where(torch.isfinite(high - low), high - low, 0.0)
    normalised = torch.where(finite, (entropy - low) / (spread + delta), 0.0)
    return eps_min + (eps_max - eps_min) * normalised


def clipped_surrogate(
    logp: torch.Tensor,
    old_logp: torch.Tensor,
    advantages: torch.Tensor,
    eps_low: float,
    eps_high: torch.Tensor | float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token PPO surrogate loss (to minimise) and where the clip was active.

    Args:
        logp, old_logp: (N, T) log π_θ and log π_old of the sampled tokens.
        advantages: (N,) one advantage per sequence (every token of a sequence shares it).
        eps_low: lower clip, the ratio is kept above 1 − eps_low.
        eps_high: upper clip, a float or (N,) per sequence.

    Returns:
        loss (N, T) = −min(r·Â, clip(r)·Â), and clipped (N, T) bool: the clipped term was the smaller one.
    """
    ratio = torch.exp(logp - old_logp)
    high = torch.as_tensor(eps_high, dtype=ratio.dtype, device=ratio.device)
    high = high[:, None] if high.ndim == 1 else high
    advantage = advantages[:, None]
    unclipped = ratio * advantage
    clipped_ratio = torch.minimum(torch.maximum(ratio, torch.full_like(ratio, 1 - eps_low)), 1 + high)
    clipped = clipped_ratio * advantage
    return -torch.minimum(unclipped, clipped), clipped < unclipped


def k3_kl(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    """Per-token k3 estimate of KL(π_θ ‖ π_ref): exp(ref − logp) − (ref − logp) − 1 ≥ 0. Shapes (N, T)."""
    delta = ref_logp - logp
    return torch.exp(delta) - delta - 1


@register(AGGREGATIONS, "grpo")
def sequence_mean_weights(mask: torch.Tensor, max_tokens: int = 0) -> torch.Tensor:
    """Token mean within each sequence, then mean over sequences (GRPO): w = 1 / (len_n · N)."""
    lengths = mask.sum(-1, keepdim=True).clamp_min(1)
    return mask / lengths / mask.shape[0]


@register(AGGREGATIONS, "dapo")
def token_mean_weights(mask: torch.Tensor, max_tokens: int = 0) -> torch.Tensor:
    """Mean over every token of the batch (DAPO: a long answer weighs by its length): w = 1 / Σ len."""
    return mask / mask.sum().clamp_min(1)


@register(AGGREGATIONS, "dr_grpo")
def constant_length_weights(mask: torch.Tensor, max_tokens: int = 0) -> torch.Tensor:
    """Token sum per sequence over a constant (the token budget), mean over sequences (Dr. GRPO: no length
    bias): w = 1 / (max_tokens · N)."""
    return mask / max(max_tokens, 1) / mask.shape[0]


def token_entropy(logits: torch.Tensor) -> torch.Tensor:
    """Entropy (nats) of each position's next-token distribution. logits (..., vocab) -> (...)."""
    logp = torch.log_softmax(logits.float(), dim=-1)
    return -(logp.exp() * logp).sum(-1)


def policy_loss(
    new_logp: torch.Tensor,
    old_logp: torch.Tensor,
    advantages: torch.Tensor,
    weights: torch.Tensor,
    mask: torch.Tensor,
    eps_low: float,
    eps_high: torch.Tensor,
    eps_fixed: float,
    ref_logp: torch.Tensor | None = None,
    kl_coef: float = 0.0,
) -> tuple[torch.Tensor, dict[str, float]]:
    """The GRPO-family loss of one group's G answers and what explains it (the verl ``core_algos`` shape: the loss
    and its metrics as a dict).

    Args:
        new_logp, old_logp: log π_θ and log π_old of every answer token (G, T); ``old_logp`` without gradient.
        advantages: one per answer (G,).
        weights: the aggregation's loss weight of every token (G, T), 0 on padding.
        mask: 1 on real answer tokens (G, T).
        eps_low: the down-clip ε_low.
        eps_high: each answer's up-clip ε_high (G,): adaptive ε_high(τ) for EAG-RL, the fixed one otherwise.
        eps_fixed: GRPO's fixed up-clip (``rl.eps_high``), the lower edge of EAG-RL's adaptive band.
        ref_logp: log π_ref (G, T) for the k3 KL penalty, or None (no penalty).
        kl_coef: the penalty's weight.

    Returns:
        The weighted loss (a scalar with gradient) and token counts over the real tokens: ``clip_fraction`` (clipped
        surrogate), ``clip_high_fraction`` (A > 0, ratio past 1 + ε_high), ``clip_low_fraction`` (A < 0, ratio below
        1 − ε_low), ``band_fraction`` (A > 0, ratio past 1 + ``eps_fixed`` and within 1 + ε_high: the only tokens
        whose gradient EAG-RL keeps and GRPO clips away), ``kl`` (summed k3), ``tokens``, and ``ratio_max``.
    """
    per_token, clipped = clipped_surrogate(new_logp, old_logp, advantages, eps_low, eps_high)
    kl = k3_kl(new_logp, ref_logp) if ref_logp is not None else torch.zeros_like(per_token)
    loss = (weights * (per_token + kl_coef * kl)).sum()
    real = mask > 0
    ratio = torch.exp(new_logp.detach() - old_logp)
    positive, negative = (advantages > 0)[:, None], (advantages < 0)[:, None]
    band = (ratio > 1 + eps_fixed) & (ratio <= 1 + eps_high[:, None])
    counts = {
        "clip_fraction": float((clipped & real).sum()),
        "clip_high_fraction": float(((ratio > 1 + eps_high[:, None]) & positive & real).sum()),
        "clip_low_fraction": float(((ratio < 1 - eps_low) & negative & real).sum()),
        "band_fraction": float((band & positive & real).sum()),
        "kl": float((kl.detach() * real).sum()),
        "tokens": float(real.sum()),
        "ratio_max": float(ratio[real].max()) if real.any() else 0.0,
    }
    return loss, counts
