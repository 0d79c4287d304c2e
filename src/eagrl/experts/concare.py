"""ConCare expert (Ma et al., AAAI 2020, "ConCare: Personalized Clinical Feature Embedding via Capturing the
Healthcare Context").

1. Every dynamic feature has its own GRU over its values, (B, T) -> visit states (B, T, F, H), run as one grouped
   GRU (per-feature weights, batched matrix products over the F features).
2. The paper's time-aware attention over each feature's real visits, queried by its state at the last real visit,
   with a learned per-feature decay on the time elapsed back from that visit (in the dataset's time unit), gives one
   embedding per dynamic feature (B, F, H).
3. Each static feature is embedded as its own token, tanh(w_s * x_s + b_s) (B, S, H): our generalisation of the
   paper's single demographic embedding, so that the importance covers every static feature.
4. The paper's encoder block over the S + F feature tokens: multi-head self-attention and a position-wise
   feed-forward network, each with a residual connection and layer norm -> contexts (B, S + F, H).
5. The paper's final attention pools the contexts (B, S + F, H) -> (B, H), queried by the demographic context (the
   mean of the static tokens' contexts; the mean of all contexts when S = 0); an MLP head gives one logit (B,).

Native importance is that final attention, (B, S + F), rows summing to 1. The paper's DeCov regulariser on the
self-attention output is available as ``aux_loss`` (weight ``decov_weight``, 0 by default).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from eagrl.experts.base import ExpertNet, register_expert, require_divisible


class GroupedGRU(nn.Module):
    """One GRU per input channel, each reading that channel's scalar sequence: (B, T, F) -> (F, B, T, H).

    Same equations and initialisation as ``nn.GRU``; the F recurrences run together as batched matrix products.
    """

    def __init__(self, n_channels: int, hidden_dim: int):
        super().__init__()
        bound = 1 / math.sqrt(hidden_dim)
        self.weight_input = nn.Parameter(torch.empty(n_channels, 1, 3 * hidden_dim).uniform_(-bound, bound))
        self.bias_input = nn.Parameter(torch.empty(n_channels, 1, 3 * hidden_dim).uniform_(-bound, bound))
        self.weight_hidden = nn.Parameter(torch.empty(n_channels, hidden_dim, 3 * hidden_dim).uniform_(-bound, bound))
        self.bias_hidden = nn.Parameter(torch.empty(n_channels, 1, 3 * hidden_dim).uniform_(-bound, bound))
        self.hidden_dim = hidden_dim

    def forward(self, sequences: torch.Tensor) -> torch.Tensor:
        """sequences (B, T, F) -> every channel's state at every visit (F, B, T, H)."""
        batch_size, n_visits, n_channels = sequences.shape
        state = sequences.new_zeros(n_channels, batch_size, self.hidden_dim)
        channel_inputs = sequences.permute(2, 0, 1).unsqueeze(-1)  # (F, B, T, 1)
        states = []
        for visit in range(n_visits):
            from_input = torch.baddbmm(self.bias_input, channel_inputs[:, :, visit], self.weight_input)
            from_state = torch.baddbmm(self.bias_hidden, state, self.weight_hidden)
            reset_in, update_in, candidate_in = from_input.chunk(3, dim=-1)
            reset_state, update_state, candidate_state = from_state.chunk(3, dim=-1)
            reset = torch.sigmoid(reset_in + reset_state)
            update = torch.sigmoid(update_in + update_state)
            candidate = torch.tanh(candidate_in + reset * candidate_state)
            state = (1 - update) * candidate + update * state
            states.append(state)
        return torch.stack(states, dim=2)


class TimeAwareAttention(nn.Module):
    """The paper's time-aware attention ('new' SingleAttention), one set of weights per feature.

    For feature f and real visit t, with q = W_q h_last and k_t = W_k h_t (both ``attention_dim`` wide) and
    d_t = 1 + time elapsed from visit t to the last real visit:
    e_t = relu(sigmoid(q.k_t) / (sigmoid(rate_f) * log(2.72 + 1 - sigmoid(q.k_t)) * d_t)), softmax over real visits.
    """

    def __init__(self, n_features: int, hidden_dim: int, attention_dim: int = 8):
        super().__init__()
        bound = 1 / math.sqrt(hidden_dim)
        self.query = nn.Parameter(torch.empty(n_features, hidden_dim, attention_dim).uniform_(-bound, bound))
        self.key = nn.Parameter(torch.empty(n_features, hidden_dim, attention_dim).uniform_(-bound, bound))
        self.rate = nn.Parameter(torch.full((n_features, 1, 1), 0.8))

    def forward(self, states: torch.Tensor, visit_mask: torch.Tensor, times: torch.Tensor) -> torch.Tensor:
        """states (F, B, T, H), visit_mask (B, T), times (B, T) -> one embedding per feature (F, B, H)."""
        last = visit_mask.long().sum(dim=1).clamp(min=1) - 1
        batch_index = torch.arange(states.shape[1], device=states.device)
        query = torch.bmm(states[:, batch_index, last], self.query)  # (F, B, A)
        keys = torch.einsum("fbth,fha->fbta", states, self.key)
        similarity = torch.sigmoid(torch.einsum("fba,fbta->fbt", query, keys))
        elapsed = (times.gather(1, last.unsqueeze(1)) - times).clamp(min=0)
        decay = torch.where(visit_mask, elapsed + 1, torch.ones_like(elapsed))
        denominator = torch.sigmoid(self.rate) * torch.log(2.72 + 1 - similarity) * decay
        scores = torch.relu(similarity / denominator).masked_fill(~visit_mask, float("-inf"))
        weights = torch.softmax(scores, dim=-1)
        return (weights.unsqueeze(-1) * states).sum(dim=2)


class FinalAttention(nn.Module):
    """The paper's final attention (FinalAttentionQKV, multiplicative): (B, N, H) and a query (B, H) -> (B, H), (B, N).

    The returned weights are before dropout (dropout only perturbs the pooling during training).
    """

    def __init__(self, hidden_dim: int, dropout: float):
        super().__init__()
        self.query = nn.Linear(hidden_dim, hidden_dim)
        self.key = nn.Linear(hidden_dim, hidden_dim)
        self.value = nn.Linear(hidden_dim, hidden_dim)
        self.weight_dropout = nn.Dropout(dropout)

    def forward(self, contexts: torch.Tensor, query_context: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        scores = torch.einsum("bnh,bh->bn", self.key(contexts), self.query(query_context))
        weights = torch.softmax(scores, dim=-1)
        pooled = torch.einsum("bn,bnh->bh", self.weight_dropout(weights), self.value(contexts))
        return pooled, weights


def decov_loss(contexts: torch.Tensor) -> torch.Tensor:
    """The paper's DeCov loss: per token, half the squared off-diagonal Frobenius norm of the (H, H) covariance
    of its context across the batch, summed over tokens. contexts (B, N, H) -> scalar."""
    centred = contexts - contexts.mean(dim=0, keepdim=True)
    covariance = torch.einsum("bnh,bng->nhg", centred, centred) / max(contexts.shape[0] - 1, 1)
    off_diagonal = covariance.pow(2).sum() - torch.diagonal(covariance, dim1=1, dim2=2).pow(2).sum()
    return 0.5 * off_diagonal


@register_expert("concare")
class ConCare(ExpertNet):
    """Per-feature GRUs + time-aware attention, static feature tokens, feature self-attention, final attention.

    Args:
        num_heads: self-attention heads (must divide ``hidden_dim``).
        feedforward_dim: width of the position-wise feed-forward network (the paper's code uses 64).
        time_attention_dim: width of the time-aware attention's query and key (the paper's code uses 8).
        decov_weight: weight of the DeCov loss exposed as ``aux_loss`` (0 disables it).
    """

    has_native_importance = True

    def __init__(
        self,
        n_dynamic: int,
        n_static: int,
        hidden_dim: int = 64,
        dropout: float = 0.1,
        num_heads: int = 4,
        feedforward_dim: int = 64,
        time_attention_dim: int = 8,
        decov_weight: float = 0.0,
    ):
        super().__init__(n_dynamic, n_static, hidden_dim, dropout)
        require_divisible(hidden_dim, num_heads=num_heads)
        self.decov_weight = decov_weight
        self.aux_loss: torch.Tensor | None = None
        self.feature_grus = GroupedGRU(n_dynamic, hidden_dim)
        self.time_attention = TimeAwareAttention(n_dynamic, hidden_dim, time_attention_dim)
        # one nn.Linear(1, hidden_dim) per static feature (same initialisation), stored as (S, H) tensors
        self.static_weight = nn.Parameter(torch.empty(n_static, hidden_dim).uniform_(-1, 1))
        self.static_bias = nn.Parameter(torch.empty(n_static, hidden_dim).uniform_(-1, 1))
        self.token_dropout = nn.Dropout(dropout)
        self.self_attention = nn.MultiheadAttention(hidden_dim, num_heads, dropout=dropout, batch_first=True)
        self.attention_norm = nn.LayerNorm(hidden_dim)
        self.feedforward = nn.Sequential(
            nn.Linear(hidden_dim, feedforward_dim),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(feedforward_dim, hidden_dim),
        )
        self.feedforward_norm = nn.LayerNorm(hidden_dim)
        self.residual_dropout = nn.Dropout(dropout)
        self.final_attention = FinalAttention(hidden_dim, dropout)
        self.head = nn.Sequential(
            nn.Linear(hidden_dim, hidden_dim), nn.ReLU(), nn.Dropout(dropout), nn.Linear(hidden_dim, 1)
        )

    def _predict(
        self, values: torch.Tensor, static: torch.Tensor, visit_mask: torch.Tensor, times: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits (B,) and the final attention weights over the S + F feature tokens (B, S + F)."""
        visit_states = self.feature_grus(values)
        dynamic_tokens = self.time_attention(visit_states, visit_mask, times).transpose(0, 1)  # (B, F, H)
        static_tokens = torch.tanh(static.unsqueeze(-1) * self.static_weight + self.static_bias)  # (B, S, H)
        tokens = self.token_dropout(torch.cat([static_tokens, dynamic_tokens], dim=1))
        attended, _ = self.self_attention(tokens, tokens, tokens, need_weights=False)
        self.aux_loss = self.decov_weight * decov_loss(attended) if self.decov_weight else None
        contexts = self.attention_norm(tokens + self.residual_dropout(attended))
        contexts = self.feedforward_norm(contexts + self.residual_dropout(self.feedforward(contexts)))
        demographic_contexts = contexts[:, : self.n_static] if self.n_static else contexts
        pooled, weights = self.final_attention(contexts, demographic_contexts.mean(dim=1))
        return self.head(pooled).squeeze(-1), weights

    def forward(
        self, values: torch.Tensor, static: torch.Tensor, visit_mask: torch.Tensor, times: torch.Tensor
    ) -> torch.Tensor:
        """values (B, T, F), static (B, S), visit_mask (B, T), times (B, T) -> logits (B,)."""
        return self._predict(values, static, visit_mask, times)[0]

    def native_importance(
        self, values: torch.Tensor, static: torch.Tensor, visit_mask: torch.Tensor, times: torch.Tensor
    ) -> torch.Tensor:
        """The final attention weights over the static then dynamic features, rows summing to 1: (B, S + F)."""
        with torch.no_grad():
            return self._predict(values, static, visit_mask, times)[1]
