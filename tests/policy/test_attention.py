"""eagrl_sdpa's attention probe records what eager attention computes, with and without a cache."""

from __future__ import annotations

import torch
from transformers.cache_utils import DynamicCache

from eagrl.policy.attention import probe_attention
from tests.policy.conftest import tiny


def _inputs():
    generator = torch.Generator().manual_seed(0)
    return torch.randint(3, 250, (2, 12), generator=generator)


def test_probe_matches_eager_attention_and_changes_nothing():
    model, _ = tiny()
    eager, _ = tiny("eager")
    ids = _inputs()
    query_mask = torch.zeros(2, 12)
    query_mask[:, 8:] = 1  # e.g. the response tokens
    with probe_attention({0, 1}, query_mask) as probe:
        probed = model(input_ids=ids).logits
    reference = eager(input_ids=ids, output_attentions=True).attentions  # per layer (batch, heads, q, k)
    for layer in (0, 1):
        expected = (reference[layer].mean(dim=1) * query_mask[:, :, None]).sum(dim=1)
        torch.testing.assert_close(probe.mass[layer], expected, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(probed, model(input_ids=ids).logits)


def test_probe_over_a_cached_prefix_sees_every_key():
    model, _ = tiny()
    eager, _ = tiny("eager")
    ids = _inputs()
    cache = DynamicCache()
    model(input_ids=ids[:, :8], past_key_values=cache, use_cache=True)
    with probe_attention({1}) as probe:
        model(input_ids=ids[:, 8:], past_key_values=cache, use_cache=True)
    reference = eager(input_ids=ids, output_attentions=True).attentions[1][:, :, 8:]
    torch.testing.assert_close(probe.mass[1], reference.mean(dim=1).sum(dim=1), atol=1e-5, rtol=1e-4)
    assert 0 not in probe.mass
