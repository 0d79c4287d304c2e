"""Data-parallel RL (``trainer=ddp``): each process samples its share of a step's patients; gradients are summed
across processes before every optimiser step, and the logged values are merged."""

from __future__ import annotations

import math

import numpy as np
import torch
from lightning.pytorch.overrides.distributed import _sync_module_states
from lightning.pytorch.strategies import DDPStrategy


class RolloutParallel(DDPStrategy):
    """Data-parallel RL without the DDP wrapper: generation, scoring and several backward passes per optimiser step
    do not fit DDP's one-forward-one-backward reducer, so the module sums gradients itself
    (:func:`sum_gradients`) and the weights are only synchronised at the start. ``trainer=ddp`` selects it for
    eagrl-rl."""

    def configure_ddp(self) -> None:
        _sync_module_states(self.model)


def sum_gradients(model: torch.nn.Module, finite: bool) -> bool:
    """Sum the trainable parameters' gradients over the processes (their loss weights are normalised over the
    whole minibatch; an idle process adds zeros). Returns whether every process's loss was finite (all skip
    together otherwise)."""
    flag = torch.tensor([float(finite)])
    torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MIN)
    if not flag.item():
        return False
    for parameter in model.parameters():
        if parameter.requires_grad:
            if parameter.grad is None:
                parameter.grad = torch.zeros_like(parameter)
            torch.distributed.all_reduce(parameter.grad)
    return True


#: logged values summed over processes (each holds its part of the loss); the rest are averaged ignoring NaN, and
#: times take the slowest process
SUMMED_STATS = ("groups_sampled", "groups_kept", "groups_flat", "nonfinite", "loss")
#: logged values that are the largest over the processes (an average of maxima is no maximum)
MAXIMUM_STATS = ("ratio_max", "eps_high_max")


def merge_stats(stats: dict[str, float]) -> dict[str, float]:
    """One step's logged values merged over the processes."""
    gathered: list[dict[str, float]] = [{} for _ in range(torch.distributed.get_world_size())]
    torch.distributed.all_gather_object(gathered, stats)
    merged = {}
    for key in sorted({key for part in gathered for key in part}):
        values = np.array([part.get(key, math.nan) for part in gathered], dtype=np.float64)
        if key in SUMMED_STATS:
            merged[key] = float(np.nansum(values))
        elif key.startswith("seconds") or key in MAXIMUM_STATS:
            merged[key] = float(np.nanmax(values))
        else:
            merged[key] = float(np.nanmean(values)) if np.isfinite(values).any() else math.nan
    return merged
