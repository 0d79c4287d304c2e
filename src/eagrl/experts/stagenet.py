"""StageNet expert (Gao et al., WWW 2020, "StageNet: Stage-Aware Neural Networks for Health Risk Prediction").

Each visit's input is its static features followed by its dynamic values, (B, T, S + F), plus the stage-variation
input: the time since the previous visit (B, T), in the dataset's time unit (0 for the first visit and for padding).

1. Stage-aware LSTM: the hidden state (B, hidden_dim) is split into ``levels`` chunks; cumax master forget / input
   gates, computed from the input, the previous state and the time interval, decide how many chunks are kept or
   rewritten at each visit. The stage variation of visit t is 1 - mean(master forget gate).
2. Stage-adaptive convolution: the ``conv_size`` most recent hidden states up to the last real visit (zeros before
   the first visit) are weighted by softmax(cumsum(stage variations)), recalibrated by a squeeze-and-excitation
   gate and convolved to (B, hidden_dim); the last real visit's hidden state is added as a residual (dropout
   ``dropres``).
3. Dropout and a linear layer give one logit per patient (B,).

The convolution is computed only at the last real visit, the only prediction we need; the recurrence runs forward
in time, so right padding never reaches it.
"""

from __future__ import annotations

import torch
from torch import nn

from eagrl.experts.base import ExpertNet, last_visit, register_expert, require_divisible


def cumax(logits: torch.Tensor, reverse: bool = False) -> torch.Tensor:
    """Cumulative softmax over the last dimension (increasing to 1; decreasing from 1 if ``reverse``)."""
    probabilities = torch.softmax(logits, dim=-1)
    if reverse:
        return probabilities.flip(-1).cumsum(dim=-1).flip(-1)
    return probabilities.cumsum(dim=-1)


@register_expert("stagenet")
class StageNet(ExpertNet):
    """Stage-aware LSTM + stage-adaptive convolution, predicting at the last real visit.

    Args:
        levels: number of hidden-state chunks (must divide ``hidden_dim``).
        conv_size: window of recent hidden states convolved (the paper's code uses 10).
        dropconnect: dropout on the input and recurrent pre-activations.
        dropres: dropout on the residual hidden state.
        reduction: squeeze ratio of the convolution's recalibration (the paper's code uses 6).
    """

    def __init__(
        self,
        n_dynamic: int,
        n_static: int,
        hidden_dim: int = 64,
        dropout: float = 0.1,
        levels: int = 4,
        conv_size: int = 10,
        dropconnect: float = 0.0,
        dropres: float = 0.3,
        reduction: int = 6,
    ):
        super().__init__(n_dynamic, n_static, hidden_dim, dropout)
        require_divisible(hidden_dim, levels=levels)
        self.levels, self.conv_size = levels, conv_size
        gate_width = 4 * hidden_dim + 2 * levels
        self.input_kernel = nn.Linear(n_static + n_dynamic + 1, gate_width)
        self.recurrent_kernel = nn.Linear(hidden_dim + 1, gate_width)
        nn.init.xavier_uniform_(self.input_kernel.weight)
        nn.init.orthogonal_(self.recurrent_kernel.weight)
        nn.init.zeros_(self.input_kernel.bias)
        nn.init.zeros_(self.recurrent_kernel.bias)
        self.input_dropconnect = nn.Dropout(dropconnect)
        self.recurrent_dropconnect = nn.Dropout(dropconnect)
        self.theme_squeeze = nn.Linear(hidden_dim, max(1, hidden_dim // reduction))
        self.theme_excite = nn.Linear(max(1, hidden_dim // reduction), hidden_dim)
        self.stage_convolution = nn.Conv1d(hidden_dim, hidden_dim, conv_size)
        self.residual_dropout = nn.Dropout(dropres)
        self.output_dropout = nn.Dropout(dropout)
        self.head = nn.Linear(hidden_dim, 1)

    def _recur(self, inputs: torch.Tensor, intervals: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """inputs (B, T, D), intervals (B, T) -> hidden states (B, T, H), stage variations (B, T)."""
        batch_size, n_visits, _ = inputs.shape
        intervals = intervals.unsqueeze(-1)
        from_inputs = self.input_dropconnect(self.input_kernel(torch.cat([inputs, intervals], dim=-1)))
        hidden = inputs.new_zeros(batch_size, self.hidden_dim)
        cell = inputs.new_zeros(batch_size, self.levels, self.hidden_dim // self.levels)
        states, variations = [], []
        for visit in range(n_visits):
            from_state = self.recurrent_kernel(torch.cat([hidden, intervals[:, visit]], dim=-1))
            gates = from_inputs[:, visit] + self.recurrent_dropconnect(from_state)
            master_forget = cumax(gates[:, : self.levels]).unsqueeze(-1)  # (B, L, 1)
            master_input = cumax(gates[:, self.levels : 2 * self.levels], reverse=True).unsqueeze(-1)
            chunk_gates = gates[:, 2 * self.levels :].reshape(batch_size, 4 * self.levels, -1)
            forget, input_, output, candidate = chunk_gates.chunk(4, dim=1)  # each (B, L, H / L)
            overlap = master_forget * master_input
            cell = (
                overlap * (torch.sigmoid(forget) * cell + torch.sigmoid(input_) * torch.tanh(candidate))
                + (master_forget - overlap) * cell
                + (master_input - overlap) * torch.tanh(candidate)
            )
            hidden = (torch.sigmoid(output) * torch.tanh(cell)).reshape(batch_size, self.hidden_dim)
            states.append(hidden)
            variations.append(1 - master_forget.mean(dim=(1, 2)))
        return torch.stack(states, dim=1), torch.stack(variations, dim=1)

    def forward(
        self, values: torch.Tensor, static: torch.Tensor, visit_mask: torch.Tensor, times: torch.Tensor
    ) -> torch.Tensor:
        """values (B, T, F), static (B, S), visit_mask (B, T), times (B, T) -> logits (B,)."""
        inputs = torch.cat([static.unsqueeze(1).expand(-1, values.shape[1], -1), values], dim=-1)
        gaps = (times[:, 1:] - times[:, :-1]) * visit_mask[:, 1:]
        intervals = torch.cat([torch.zeros_like(times[:, :1]), gaps], dim=1)
        states, variations = self._recur(inputs, intervals)

        # the conv_size visits ending at the last real visit, zero states / variations before the first visit
        padded_states = nn.functional.pad(states, (0, 0, self.conv_size - 1, 0))
        padded_variations = nn.functional.pad(variations, (self.conv_size - 1, 0))
        last = visit_mask.long().sum(dim=1).clamp(min=1) - 1
        window = last.unsqueeze(1) + torch.arange(self.conv_size, device=values.device)  # (B, K) padded positions
        window_states = padded_states.gather(1, window.unsqueeze(-1).expand(-1, -1, self.hidden_dim))
        window_weights = torch.softmax(padded_variations.gather(1, window).cumsum(dim=1), dim=1)
        weighted_states = (window_states * window_weights.unsqueeze(-1)).transpose(1, 2)  # (B, H, K)

        theme = torch.sigmoid(self.theme_excite(torch.relu(self.theme_squeeze(weighted_states.mean(dim=-1)))))
        convolved = theme * self.stage_convolution(weighted_states).squeeze(-1)
        representation = convolved + self.residual_dropout(last_visit(states, visit_mask))
        return self.head(self.output_dropout(representation)).squeeze(-1)
