"""AdaCare expert (Ma et al., AAAI 2020, "AdaCare: Explainable Clinical Health Status Representation Learning via
Scale-Adaptive Feature Extraction and Recalibration").

Each visit's input is its static features followed by its dynamic values, x (B, T, C) with C = S + F.

1. Multi-scale feature extraction: causal dilated 1-D convolutions (kernel 2, dilations 1, 3, 5, ``kernel_num``
   filters each; left padding only, so a visit never sees later visits), ReLU -> (B, T, 3 * kernel_num).
2. Recalibration (squeeze-and-excitation per visit): the convolutional features are rescaled by a sigmoid gate
   computed from themselves, and the input features by a gate (sparsemax by default, or sigmoid) computed from the
   visit's input, (B, T, C).
3. A GRU reads the recalibrated inputs concatenated with the recalibrated convolutional features; its state at the
   last real visit (B, hidden_dim) goes through dropout and a linear layer to one logit per patient (B,).

Native importance: the input recalibration gates averaged over each patient's real visits, (B, S + F).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional

from eagrl.errors import ConfigError
from eagrl.experts.base import ExpertNet, last_visit, register_expert

ACTIVATIONS = ("sparsemax", "sigmoid")


def sparsemax(scores: torch.Tensor) -> torch.Tensor:
    """Sparsemax (Martins & Astudillo, ICML 2016) over the last dimension: the Euclidean projection onto the
    probability simplex, so rows sum to 1 with exact zeros. (..., C) -> (..., C)."""
    sorted_scores, _ = scores.sort(dim=-1, descending=True)
    cumulative = sorted_scores.cumsum(dim=-1) - 1
    ranks = torch.arange(1, scores.shape[-1] + 1, device=scores.device, dtype=scores.dtype)
    support_size = (ranks * sorted_scores > cumulative).sum(dim=-1, keepdim=True)
    threshold = cumulative.gather(-1, support_size - 1) / support_size
    return (scores - threshold).clamp(min=0)


class Recalibration(nn.Module):
    """Per-visit squeeze-and-excitation: gate = activation(W_2 relu(W_1 x_t)), output x_t * gate.

    W_2 starts at zero, so every gate starts equal (1 / C for sparsemax, 1/2 for sigmoid). With random W_2, sparsemax
    starts with some gates at exactly 0, where it passes no gradient, and they can stay shut for the whole training.

    Args:
        channels: C, width of the features recalibrated.
        reduction: compression ratio r of the squeeze layer (width max(1, C // r)).
        activation: ``sigmoid`` (independent gates) or ``sparsemax`` (gates on the simplex).
    """

    def __init__(self, channels: int, reduction: int, activation: str):
        super().__init__()
        squeezed = max(1, channels // reduction)
        self.squeeze = nn.Linear(channels, squeezed)
        self.excite = nn.Linear(squeezed, channels)
        nn.init.zeros_(self.excite.weight)
        nn.init.zeros_(self.excite.bias)
        self.activation = sparsemax if activation == "sparsemax" else torch.sigmoid

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """features (B, T, C) -> recalibrated features (B, T, C), gates (B, T, C)."""
        gates = self.activation(self.excite(torch.relu(self.squeeze(features))))
        return features * gates, gates


@register_expert("adacare")
class AdaCare(ExpertNet):
    """Dilated causal convolutions + feature recalibration + GRU.

    Args:
        kernel_size: convolution kernel size.
        kernel_num: filters per dilation.
        dilations: one causal convolution per dilation (the paper's scales).
        input_reduction: squeeze ratio r_v of the input recalibration.
        conv_reduction: squeeze ratio r_c of the convolutional recalibration.
        activation: gate of the input recalibration, ``sparsemax`` or ``sigmoid``.
    """

    has_native_importance = True

    def __init__(
        self,
        n_dynamic: int,
        n_static: int,
        hidden_dim: int = 64,
        dropout: float = 0.1,
        kernel_size: int = 2,
        kernel_num: int = 64,
        dilations: tuple[int, ...] = (1, 3, 5),
        input_reduction: int = 4,
        conv_reduction: int = 4,
        activation: str = "sparsemax",
    ):
        super().__init__(n_dynamic, n_static, hidden_dim, dropout)
        if activation not in ACTIVATIONS:
            raise ConfigError(f"expert.params.activation={activation!r}; choose from {ACTIVATIONS}")
        channels = n_static + n_dynamic
        self.convolutions = nn.ModuleList(
            nn.Conv1d(channels, kernel_num, kernel_size, dilation=dilation) for dilation in dilations
        )
        for convolution in self.convolutions:
            nn.init.xavier_uniform_(convolution.weight)
        conv_channels = kernel_num * len(self.convolutions)
        self.conv_recalibration = Recalibration(conv_channels, conv_reduction, "sigmoid")
        self.input_recalibration = Recalibration(channels, input_reduction, activation)
        self.rnn = nn.GRU(channels + conv_channels, hidden_dim, batch_first=True)
        self.output_dropout = nn.Dropout(dropout)
        self.head = nn.Linear(hidden_dim, 1)

    def _predict(
        self, values: torch.Tensor, static: torch.Tensor, visit_mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits (B,) and the input recalibration gates (B, T, S + F)."""
        inputs = torch.cat([static.unsqueeze(1).expand(-1, values.shape[1], -1), values], dim=-1)
        series = inputs.transpose(1, 2)  # (B, C, T)
        multi_scale = torch.cat(
            [
                convolution(functional.pad(series, ((convolution.kernel_size[0] - 1) * convolution.dilation[0], 0)))
                for convolution in self.convolutions
            ],
            dim=1,
        )
        conv_features, _ = self.conv_recalibration(torch.relu(multi_scale).transpose(1, 2))
        recalibrated_inputs, input_gates = self.input_recalibration(inputs)
        states, _ = self.rnn(torch.cat([recalibrated_inputs, conv_features], dim=-1))
        logits = self.head(self.output_dropout(last_visit(states, visit_mask))).squeeze(-1)
        return logits, input_gates

    def forward(
        self, values: torch.Tensor, static: torch.Tensor, visit_mask: torch.Tensor, times: torch.Tensor
    ) -> torch.Tensor:
        """values (B, T, F), static (B, S), visit_mask (B, T), times (B, T; unused) -> logits (B,)."""
        return self._predict(values, static, visit_mask)[0]

    def native_importance(
        self, values: torch.Tensor, static: torch.Tensor, visit_mask: torch.Tensor, times: torch.Tensor
    ) -> torch.Tensor:
        """Input recalibration gates averaged over each patient's real visits: (B, S + F)."""
        with torch.no_grad():
            _, input_gates = self._predict(values, static, visit_mask)
        real = visit_mask.unsqueeze(-1).to(input_gates.dtype)
        return (input_gates * real).sum(dim=1) / real.sum(dim=1).clamp(min=1)
