"""``eagrl_sdpa``: PyTorch SDPA with a fast CPU decode path, and an attention probe for chosen layers.

Registered with transformers' ``AttentionInterface`` as ``attn_implementation: eagrl_sdpa`` (the default of every
backbone). Two things differ from transformers' ``sdpa``:

- decoding one token with grouped-query attention takes SDPA's packed path (an all-zero additive mask selects
  it): the default ``enable_gqa`` path is ~10× slower for a single query on CPUs (BENCHMARKS.md);
- inside :func:`probe_attention`, the chosen layers also compute their attention probabilities explicitly and
  record, per key position, the mass it receives from the probed query rows (head mean, summed over rows):
  the policy's *internal* attention over its prompt (reward.attention=internal, attention-map notebooks),
  without eager attention in every layer.

    with probe_attention(layers={10, 20}, query_mask=response_mask) as probe:
        model(input_ids=...)
    probe.mass[10]  # (batch, keys) attention mass per key position at layer 10
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

#: our attention implementation's name
EAGRL_SDPA = "eagrl_sdpa"


@dataclass
class AttentionProbe:
    """Attention mass per key position, recorded by the probed layers during a forward pass.

    Attributes:
        layers: layer indices to record (0-based).
        query_mask: (batch, queries) 1 for the query rows whose attention is summed (e.g. the response tokens of
            this forward's input), or None for every row.
        per_head: keep every head, (batch, heads, keys), instead of the head mean (batch, keys).
        mass: layer -> float32 Σ over probed rows of the attention probability, head mean or per head.
    """

    layers: set[int]
    query_mask: torch.Tensor | None = None
    per_head: bool = False
    mass: dict[int, torch.Tensor] = field(default_factory=dict)

    def record(self, layer: int, probabilities: torch.Tensor) -> None:
        """Add one layer's probabilities (batch, heads, queries, keys); recorded without gradient."""
        probabilities = probabilities.detach()
        per_query = probabilities if self.per_head else probabilities.mean(dim=1, keepdim=True)
        if self.query_mask is not None:
            per_query = per_query * self.query_mask[:, None, -per_query.shape[2] :, None].to(per_query.dtype)
        mass = per_query.sum(dim=2)
        mass = mass if self.per_head else mass[:, 0]
        self.mass[layer] = self.mass[layer] + mass if layer in self.mass else mass


_ACTIVE: list[AttentionProbe] = []


@contextlib.contextmanager
def probe_attention(
    layers: set[int] | list[int], query_mask: torch.Tensor | None = None, per_head: bool = False
) -> Iterator[AttentionProbe]:
    """Record attention mass of ``layers`` during the forward passes inside the block (eagrl_sdpa models only)."""
    probe = AttentionProbe(layers=set(layers), query_mask=query_mask, per_head=per_head)
    _ACTIVE.append(probe)
    try:
        yield probe
    finally:
        _ACTIVE.remove(probe)


def attention_probabilities(
    query: torch.Tensor, key: torch.Tensor, attention_mask: torch.Tensor | None, scaling: float
) -> torch.Tensor:
    """Softmax attention (batch, heads, queries, keys) in float32, key/value heads repeated for grouped queries.

    ``attention_mask`` is SDPA's: None (causal, the queries being the last rows), boolean (True = attend) or additive.
    """
    groups = query.shape[1] // key.shape[1]
    scores = query.float() @ key.float().repeat_interleave(groups, dim=1).transpose(-1, -2) * scaling
    if attention_mask is None:
        queries, keys = scores.shape[-2:]
        allowed = torch.ones(queries, keys, dtype=torch.bool, device=scores.device).tril(keys - queries)
        scores = scores.masked_fill(~allowed, -torch.inf)
    elif attention_mask.dtype == torch.bool:
        scores = scores.masked_fill(~attention_mask, -torch.inf)
    else:
        scores = scores + attention_mask.float()
    return scores.softmax(dim=-1)


def eagrl_sdpa(module, query, key, value, attention_mask, **kwargs):
    """SDPA, packed for single-token grouped-query decoding, recording probed layers. query (batch, heads, q, dim)."""
    if _ACTIVE and getattr(module, "layer_idx", None) in _ACTIVE[-1].layers:
        scaling = kwargs.get("scaling") or query.shape[-1] ** -0.5
        _ACTIVE[-1].record(module.layer_idx, attention_probabilities(query, key, attention_mask, scaling))
    if attention_mask is None and query.shape[2] == 1 and getattr(module, "num_key_value_groups", 1) > 1:
        attention_mask = torch.zeros(1, 1, 1, key.shape[2], dtype=query.dtype, device=query.device)
    return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)


AttentionInterface.register(EAGRL_SDPA, eagrl_sdpa)
AttentionMaskInterface.register(EAGRL_SDPA, sdpa_mask)
