"""Non-finite losses: caught, counted and logged; the batch is skipped or the run stops (``on_nonfinite``)."""

from __future__ import annotations

import logging

import torch

from eagrl.errors import ConfigError, EAGRLError

log = logging.getLogger(__name__)

#: what a training stage does with a non-finite loss
NONFINITE_POLICIES = ("skip", "stop")


class NumericalError(EAGRLError):
    """A non-finite loss, reward or advantage with ``on_nonfinite=stop``."""


class NonFiniteGuard:
    """Checks losses of one training stage.

    Args:
        policy: ``skip`` (drop the batch: no backward, no optimiser step) or ``stop`` (end the run with one line).
        where: the config key of the policy, named in messages (e.g. ``sft.on_nonfinite``).
    """

    def __init__(self, policy: str, where: str):
        if policy not in NONFINITE_POLICIES:
            raise ConfigError(f"{where}={policy!r}: use one of {', '.join(NONFINITE_POLICIES)}")
        self.policy, self.where, self.count = policy, where, 0

    def check(self, value: torch.Tensor, step: int, what: str = "loss") -> bool:
        """Whether ``value`` is finite; counts, logs and (with ``stop``) raises when it is not."""
        if bool(torch.isfinite(value).all()):
            return True
        self.count += 1
        message = f"non-finite {what} at step {step}"
        if self.policy == "stop":
            raise NumericalError(f"{message} ({self.where}=stop); lower the learning rate or set {self.where}=skip")
        log.warning("%s: skipped (%d so far; %s=skip)", message, self.count, self.where)
        return False
