"""RETAIN expert (Choi et al., NeurIPS 2016, "RETAIN: An Interpretable Predictive Model for Healthcare using Reverse
Time Attention Mechanism").

Each visit's input x_j is its static features followed by its dynamic values, (B, T, S + F), embedded linearly as
v_j = W_emb x_j (B, T, hidden_dim). Two GRUs read the embeddings in reverse time order, each patient's real visits
flipped within its own length (padding stays on the right, after the reversed real visits, so it never reaches
them). They give the visit-level attention alpha (B, T), a softmax over real visits only, and the variable-level
attention beta (B, T, hidden_dim), a tanh. The context c = sum_j alpha_j * (beta_j ⊙ v_j) (B, hidden_dim) goes
through a linear layer to one logit per patient (B,), the prediction at the last real visit.

Native importance is the paper's contribution of variable k at visit j,
omega(y, x_{j,k}) = alpha_j * w^T (beta_j ⊙ W_emb[:, k]) * x_{j,k}, in absolute value (inputs are z-normalised, so
they can be negative), summed over real visits and normalised to sum to 1 per patient: (B, S + F).
"""

from __future__ import annotations

import torch
from torch import nn

from eagrl.experts.base import ExpertNet, register_expert


def reverse_visits(sequence: torch.Tensor, visit_mask: torch.Tensor) -> torch.Tensor:
    """Each patient's real visits in reverse order, padding left in place: (B, T, D) -> (B, T, D)."""
    lengths = visit_mask.sum(dim=1, keepdim=True)
    positions = torch.arange(sequence.shape[1], device=sequence.device).unsqueeze(0)
    source = torch.where(positions < lengths, lengths - 1 - positions, positions)
    return sequence.gather(1, source.unsqueeze(-1).expand_as(sequence))


@register_expert("retain")
class RETAIN(ExpertNet):
    """Reverse-time two-level attention over the visits; dropout on the embeddings and the context, as in the paper.

    The embedding and the alpha/beta read-outs are initialised at N(0, 0.01^2) (the paper leaves init open).
    """

    has_native_importance = True

    def __init__(self, n_dynamic: int, n_static: int, hidden_dim: int = 64, dropout: float = 0.1):
        super().__init__(n_dynamic, n_static, hidden_dim, dropout)
        self.embedding = nn.Linear(n_static + n_dynamic, hidden_dim, bias=False)
        self.embedding_dropout = nn.Dropout(dropout)
        self.alpha_rnn = nn.GRU(hidden_dim, hidden_dim, batch_first=True)
        self.alpha_score = nn.Linear(hidden_dim, 1)
        self.beta_rnn = nn.GRU(hidden_dim, hidden_dim, batch_first=True)
        self.beta_gate = nn.Linear(hidden_dim, hidden_dim)
        self.context_dropout = nn.Dropout(dropout)
        self.output = nn.Linear(hidden_dim, 1)
        # Start close to a linear model of the visit-averaged inputs (uniform alpha, near-constant beta). From the
        # default init the gates learn to carry the signal through unrelated inputs and the native importance drifts.
        for weight in (self.embedding.weight, self.alpha_score.weight, self.beta_gate.weight):
            nn.init.normal_(weight, std=0.01)

    def _attend(
        self, values: torch.Tensor, static: torch.Tensor, visit_mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Reverse-ordered inputs x (B, T, S + F), embeddings v (B, T, H), alpha (B, T) and beta (B, T, H).

        Everything is in each patient's reversed visit order, which the sums over visits do not depend on.
        """
        inputs = torch.cat([static.unsqueeze(1).expand(-1, values.shape[1], -1), values], dim=-1)
        reversed_inputs = reverse_visits(inputs, visit_mask)
        embedded = self.embedding_dropout(self.embedding(reversed_inputs))
        alpha_states, _ = self.alpha_rnn(embedded)
        alpha_scores = self.alpha_score(alpha_states).squeeze(-1).masked_fill(~visit_mask, float("-inf"))
        alpha = torch.softmax(alpha_scores, dim=1)
        beta_states, _ = self.beta_rnn(embedded)
        beta = torch.tanh(self.beta_gate(beta_states))
        return reversed_inputs, embedded, alpha, beta

    def forward(
        self, values: torch.Tensor, static: torch.Tensor, visit_mask: torch.Tensor, times: torch.Tensor
    ) -> torch.Tensor:
        """values (B, T, F), static (B, S), visit_mask (B, T), times (B, T; unused) -> logits (B,)."""
        _, embedded, alpha, beta = self._attend(values, static, visit_mask)
        context = (alpha.unsqueeze(-1) * beta * embedded).sum(dim=1)
        return self.output(self.context_dropout(context)).squeeze(-1)

    def native_importance(
        self, values: torch.Tensor, static: torch.Tensor, visit_mask: torch.Tensor, times: torch.Tensor
    ) -> torch.Tensor:
        """|omega(y, x_{j,k})| summed over real visits, each row normalised to sum 1: (B, S + F).

        Exact in eval mode, where the signed contributions plus the output bias add up to the logit.
        """
        inputs, _, alpha, beta = self._attend(values, static, visit_mask)
        weighted_gates = alpha.unsqueeze(-1) * beta * self.output.weight.squeeze(0)
        contributions = (weighted_gates @ self.embedding.weight) * inputs
        importance = contributions.abs().sum(dim=1)
        return importance / importance.sum(dim=1, keepdim=True).clamp_min(torch.finfo(importance.dtype).tiny)
