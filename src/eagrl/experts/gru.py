"""GRU expert: a gated recurrent network over the visits (Cho et al., EMNLP 2014, "Learning Phrase Representations
using RNN Encoder-Decoder for Statistical Machine Translation").

Each visit's input is its dynamic values with the static features appended, (B, T, S + F); a linear projection
to ``hidden_dim`` feeds the recurrent network, and the state at the last real visit (B, hidden_dim) goes through
dropout and a linear head to one logit per patient (B,). The network runs forward in time, so right padding never
reaches a real visit's state.

:class:`RecurrentExpert` holds the logic shared with the LSTM expert (:mod:`eagrl.experts.lstm`).
"""

from __future__ import annotations

import torch
from torch import nn

from eagrl.experts.base import ExpertNet, last_visit, register_expert


class RecurrentExpert(ExpertNet):
    """Input projection -> ``rnn_class`` -> dropout -> linear head on the last real visit's state.

    Args:
        num_layers: stacked recurrent layers (dropout is applied between them when > 1).
    """

    rnn_class: type[nn.RNNBase]

    def __init__(self, n_dynamic: int, n_static: int, hidden_dim: int = 64, dropout: float = 0.1, num_layers: int = 1):
        super().__init__(n_dynamic, n_static, hidden_dim, dropout)
        self.input_projection = nn.Linear(n_static + n_dynamic, hidden_dim)
        self.rnn = self.rnn_class(
            hidden_dim, hidden_dim, num_layers=num_layers, batch_first=True, dropout=dropout if num_layers > 1 else 0.0
        )
        self.output_dropout = nn.Dropout(dropout)
        self.head = nn.Linear(hidden_dim, 1)

    def forward(
        self, values: torch.Tensor, static: torch.Tensor, visit_mask: torch.Tensor, times: torch.Tensor
    ) -> torch.Tensor:
        """values (B, T, F), static (B, S), visit_mask (B, T), times (B, T; unused) -> logits (B,)."""
        inputs = torch.cat([static.unsqueeze(1).expand(-1, values.shape[1], -1), values], dim=-1)
        states, _ = self.rnn(self.input_projection(inputs))
        return self.head(self.output_dropout(last_visit(states, visit_mask))).squeeze(-1)


@register_expert("gru")
class GRUExpert(RecurrentExpert):
    """GRU over the visits."""

    rnn_class = nn.GRU
