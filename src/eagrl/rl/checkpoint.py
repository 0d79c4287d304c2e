"""Checkpointing of an RL run: the module counts its own steps (optimiser steps per RL step vary), so the
checkpoint follows that count, not Lightning's."""

from __future__ import annotations

import os
from pathlib import Path

import lightning as L


class StepCheckpoint(L.Callback):
    """Save ``path`` (atomically) after every ``every``-th finished RL step, counted by the module itself: optimiser
    steps per RL step vary (dynamic sampling, skipped updates), so Lightning's step-based checkpointing drifts."""

    def __init__(self, path: Path, every: int):
        self.path, self.every = Path(path), max(1, every)
        self.saved_at: int | None = None

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args) -> None:
        done = pl_module.completed_steps
        if done and done % self.every == 0 and done != self.saved_at:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            staging = self.path.with_name(self.path.name + ".tmp")
            trainer.save_checkpoint(staging)  # written by rank 0 (collective under data-parallel training)
            if trainer.is_global_zero:
                os.replace(staging, self.path)
            self.saved_at = done
