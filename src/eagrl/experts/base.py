"""The interface every expert network implements, and the registry that maps config names to classes.

All experts read the same tensors (the EHRDataModule's batch):

- ``values`` (B, T, F): dynamic features, LOCF + train-median imputed, z-normalised; right-padded.
- ``static`` (B, S): static features (demographics), imputed and z-normalised.
- ``visit_mask`` (B, T) bool: True on real visits (each patient has >= 1; padding after the last).
- ``times`` (B, T): visit times in the dataset's unit (days or hours since the first visit).

and return one logit per patient for the prediction at the **last real visit**. Feature order everywhere is
static features first, then dynamic ones (S + F), as in :attr:`FeatureTable.all`.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from eagrl.errors import ConfigError

EXPERTS: dict[str, type[ExpertNet]] = {}
#: batch keys an expert's forward takes, in order
NET_INPUTS = ("values", "static", "visit_mask", "times")


def net_inputs(batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, ...]:
    """The tensors of an EHRDataModule batch that :meth:`ExpertNet.forward` takes, in order."""
    return tuple(batch[key] for key in NET_INPUTS)


def register_expert(name: str) -> Callable[[type[ExpertNet]], type[ExpertNet]]:
    """Class decorator: make an expert selectable as ``expert=<name>``."""

    def decorate(cls: type[ExpertNet]) -> type[ExpertNet]:
        if name in EXPERTS:
            raise ValueError(f"expert {name!r} registered twice")
        EXPERTS[name] = cls
        cls.name = name
        return cls

    return decorate


def last_visit(sequence: torch.Tensor, visit_mask: torch.Tensor) -> torch.Tensor:
    """The hidden state at each patient's last real visit.

    Args:
        sequence: (B, T, H) per-visit states.
        visit_mask: (B, T) bool, True on real visits (right-padded).

    Returns:
        (B, H).
    """
    last = visit_mask.long().sum(dim=1).clamp(min=1) - 1
    return sequence[torch.arange(sequence.shape[0], device=sequence.device), last]


def require_divisible(hidden_dim: int, **divisors: int) -> None:
    """Raise :class:`ConfigError` unless ``hidden_dim`` is a multiple of every named divisor."""
    for name, divisor in divisors.items():
        if hidden_dim % divisor:
            raise ConfigError(
                f"expert.params.hidden_dim={hidden_dim} is not divisible by expert.params.{name}={divisor}"
            )


class ExpertNet(nn.Module):
    """Base class of expert networks.

    Args:
        n_dynamic: F, number of dynamic features.
        n_static: S, number of static features (may be 0).
        hidden_dim: width of the hidden representation.
        dropout: dropout probability.

    Subclasses implement :meth:`forward`; those with a native per-feature importance (attention, feature
    recalibration) also override :meth:`native_importance` and set ``has_native_importance = True``.
    """

    name: str = "expert"
    has_native_importance: bool = False

    def __init__(self, n_dynamic: int, n_static: int, hidden_dim: int = 64, dropout: float = 0.1):
        super().__init__()
        self.n_dynamic, self.n_static = n_dynamic, n_static
        self.hidden_dim, self.dropout = hidden_dim, dropout

    def forward(
        self, values: torch.Tensor, static: torch.Tensor, visit_mask: torch.Tensor, times: torch.Tensor
    ) -> torch.Tensor:
        """Logits (B,) for the outcome, predicted at the last real visit."""
        raise NotImplementedError

    def native_importance(
        self, values: torch.Tensor, static: torch.Tensor, visit_mask: torch.Tensor, times: torch.Tensor
    ) -> torch.Tensor:
        """Per-patient feature importance from the model's own mechanism: (B, S + F), non-negative."""
        raise NotImplementedError(f"{self.name} has no native importance; use integrated gradients")
