"""The random number generators' state in every Lightning checkpoint, so a resumed run draws what an
uninterrupted one would have drawn (dropout masks, shuffles, sampled rollouts)."""

from __future__ import annotations

import random

import lightning as L
import numpy as np
import torch


class RNGState(L.Callback):
    """Saves the Python, NumPy and torch (CPU, and CUDA when present) RNG states with the checkpoint and restores
    them on resume. Plain types only, so the checkpoint stays loadable with ``weights_only=True``."""

    def state_dict(self) -> dict:
        """The current states: ``torch`` a uint8 tensor, ``numpy`` the MT19937 state with its key as a list."""
        name, key, position, has_gauss, cached = np.random.get_state()
        state = {"python": random.getstate(), "numpy": (name, key.tolist(), position, has_gauss, cached)}
        state["torch"] = torch.get_rng_state()
        if torch.cuda.is_available():
            state["cuda"] = torch.cuda.get_rng_state_all()
        return state

    def load_state_dict(self, state_dict: dict) -> None:
        """Restore the states saved by :meth:`state_dict`."""
        version, internal, gauss = state_dict["python"]
        random.setstate((version, tuple(internal), gauss))
        name, key, position, has_gauss, cached = state_dict["numpy"]
        np.random.set_state((name, np.asarray(key, dtype=np.uint32), position, has_gauss, cached))
        torch.set_rng_state(state_dict["torch"])
        if "cuda" in state_dict and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state_dict["cuda"])
