"""One log line per training epoch (epoch, the logged metrics, wall seconds), so progress shows in log files and
CI output where Lightning's progress bar renders only its last frame; the epoch times survive a resume."""

from __future__ import annotations

import logging
import time

import lightning as L

log = logging.getLogger(__name__)


class EpochLog(L.Callback):
    """Wall time of every training epoch (seconds, kept in checkpoints) and a log line at each epoch's end.

    Args:
        name: what is training, at the start of each line (e.g. ``sft-trajectory``).
    """

    def __init__(self, name: str):
        self.name = name
        self.seconds: list[float] = []
        self._start = 0.0

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._start = time.perf_counter()

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self.seconds.append(time.perf_counter() - self._start)
        if trainer.is_global_zero:
            values = ", ".join(f"{key} {float(value):.4g}" for key, value in sorted(trainer.callback_metrics.items()))
            log.info(
                "%s epoch %d/%d: %s (%.0f s)",
                self.name, trainer.current_epoch + 1, trainer.max_epochs, values or "no metric yet", self.seconds[-1],
            )  # fmt: skip

    def state_dict(self) -> dict:
        return {"seconds": self.seconds}

    def load_state_dict(self, state_dict: dict) -> None:
        self.seconds = list(state_dict["seconds"])
