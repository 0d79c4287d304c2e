"""RNG states travel with checkpoints: restoring one replays the same draws; it loads with weights_only=True."""

from __future__ import annotations

import random

import numpy as np
import torch

from eagrl.utils.rng import RNGState


def _draws():
    return random.random(), float(np.random.rand()), torch.rand(3).tolist()


def test_restored_state_replays_the_same_draws(tmp_path):
    random.seed(1)
    np.random.seed(1)
    torch.manual_seed(1)
    callback = RNGState()
    torch.save({"callbacks": {"RNGState": callback.state_dict()}}, tmp_path / "last.ckpt")
    expected = _draws()
    assert _draws() != expected
    callback.load_state_dict(torch.load(tmp_path / "last.ckpt", weights_only=True)["callbacks"]["RNGState"])
    assert _draws() == expected
