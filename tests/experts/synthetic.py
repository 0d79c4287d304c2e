"""A synthetic cohort whose label depends on one known dynamic feature (for expert tests)."""

from __future__ import annotations

import torch

N_STATIC, N_DYNAMIC = 2, 6
#: index of the label-driving feature in the static-then-dynamic order
DRIVER = N_STATIC + 3


def synthetic_batch(patients: int = 256, steps: int = 8, seed: int = 0) -> dict[str, torch.Tensor]:
    """EHRDataModule-shaped batch: label = 1 when dynamic feature 3 at the last real visit is above 0."""
    generator = torch.Generator().manual_seed(seed)
    lengths = torch.randint(3, steps + 1, (patients,), generator=generator)
    visit_mask = torch.arange(steps)[None, :] < lengths[:, None]
    values = torch.randn(patients, steps, N_DYNAMIC, generator=generator) * visit_mask.unsqueeze(-1)
    static = torch.randn(patients, N_STATIC, generator=generator)
    last = values[torch.arange(patients), lengths - 1]
    return {
        "values": values,
        "static": static,
        "visit_mask": visit_mask,
        "times": torch.arange(steps, dtype=torch.float32).expand(patients, steps) * visit_mask,
        "length": lengths,
        "label": (last[:, DRIVER - N_STATIC] > 0).float(),
        "index": torch.arange(patients),
    }
