"""LSTM expert: a long short-term memory network over the visits (Hochreiter & Schmidhuber, Neural Computation 1997,
"Long Short-Term Memory").

Identical to the GRU expert apart from the recurrent cell (see :class:`eagrl.experts.gru.RecurrentExpert`):
per-visit input (B, T, S + F) -> linear projection -> LSTM -> state at the last real visit (B, hidden_dim)
-> dropout -> linear head -> logits (B,).
"""

from __future__ import annotations

from torch import nn

from eagrl.experts.base import register_expert
from eagrl.experts.gru import RecurrentExpert


@register_expert("lstm")
class LSTMExpert(RecurrentExpert):
    """LSTM over the visits."""

    rnn_class = nn.LSTM
