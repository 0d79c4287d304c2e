"""Transformer expert: a causal self-attention encoder over the visits (Vaswani et al., NeurIPS 2017, "Attention Is
All You Need").

Each visit's input is its dynamic values with the static features appended, (B, T, S + F); a linear projection to
``hidden_dim`` plus a sinusoidal encoding of the visit index feeds a pre-norm ``nn.TransformerEncoder`` whose
attention is causal (a visit never attends to later ones) and ignores padded visits. The output at the last real
visit (B, hidden_dim) goes through dropout and a linear head to one logit per patient (B,).

Because padding is on the right and attention is causal, every query row can see visit 0, which is always real:
no attention row is fully masked, so single-visit patients are fine.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from eagrl.experts.base import ExpertNet, last_visit, register_expert, require_divisible


def sinusoidal_positions(length: int, dim: int, device: torch.device) -> torch.Tensor:
    """The fixed sin/cos encoding of positions 0..length-1: (length, dim)."""
    positions = torch.arange(length, device=device, dtype=torch.float32).unsqueeze(1)
    frequencies = torch.exp(torch.arange(0, dim, 2, device=device, dtype=torch.float32) * (-math.log(10000.0) / dim))
    angles = positions * frequencies
    return torch.stack([angles.sin(), angles.cos()], dim=-1).flatten(1)[:, :dim]


@register_expert("transformer")
class TransformerExpert(ExpertNet):
    """Causal Transformer encoder over the visits.

    Args:
        num_layers: encoder layers.
        num_heads: attention heads (must divide ``hidden_dim``); the feed-forward width is ``4 * hidden_dim``.
    """

    def __init__(
        self,
        n_dynamic: int,
        n_static: int,
        hidden_dim: int = 64,
        dropout: float = 0.1,
        num_layers: int = 2,
        num_heads: int = 4,
    ):
        super().__init__(n_dynamic, n_static, hidden_dim, dropout)
        require_divisible(hidden_dim, num_heads=num_heads)
        self.input_projection = nn.Linear(n_static + n_dynamic, hidden_dim)
        layer = nn.TransformerEncoderLayer(
            hidden_dim, num_heads, dim_feedforward=4 * hidden_dim, dropout=dropout, batch_first=True, norm_first=True
        )
        self.encoder = nn.TransformerEncoder(
            layer, num_layers, norm=nn.LayerNorm(hidden_dim), enable_nested_tensor=False
        )
        self.output_dropout = nn.Dropout(dropout)
        self.head = nn.Linear(hidden_dim, 1)

    def forward(
        self, values: torch.Tensor, static: torch.Tensor, visit_mask: torch.Tensor, times: torch.Tensor
    ) -> torch.Tensor:
        """values (B, T, F), static (B, S), visit_mask (B, T), times (B, T; unused) -> logits (B,)."""
        n_visits = values.shape[1]
        inputs = torch.cat([static.unsqueeze(1).expand(-1, n_visits, -1), values], dim=-1)
        projected = self.input_projection(inputs)
        embedded = projected + sinusoidal_positions(n_visits, self.hidden_dim, values.device).to(projected.dtype)
        later_visits = torch.ones(n_visits, n_visits, dtype=torch.bool, device=values.device).triu(diagonal=1)
        encoded = self.encoder(embedded, mask=later_visits, src_key_padding_mask=~visit_mask, is_causal=True)
        return self.head(self.output_dropout(last_visit(encoded, visit_mask))).squeeze(-1)
