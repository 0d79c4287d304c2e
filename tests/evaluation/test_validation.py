"""The best-on-validation adapter: ties keep the earlier policy, NaN never wins, the state survives a checkpoint,
the metric is a choice."""

from __future__ import annotations

import math

import torch

from eagrl.evaluation.validation import BestAdapter


def _model() -> torch.nn.Module:
    model = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.Linear(2, 1))
    model[1].weight.requires_grad_(False)  # a frozen weight is never copied
    return model


def test_the_earliest_of_the_best_aurocs_is_restored_and_nan_never_wins():
    model, best = _model(), BestAdapter()
    assert best.restore(model) is None  # nothing validated: the model keeps its weights
    kept = []
    for step, auroc in enumerate([0.6, 0.7, 0.7, math.nan, 0.5]):
        with torch.no_grad():
            model[0].weight.fill_(float(step))
        kept.append(best.offer(model, {"step": float(step), "auroc": auroc}))
    assert kept == [True, True, False, False, False]
    assert "1.weight" not in best.weights
    row = best.restore(model)
    assert row["step"] == 1.0
    assert torch.equal(model[0].weight, torch.full((2, 3), 1.0))

    resumed = BestAdapter()
    resumed.load_state_dict(best.state_dict())
    assert not resumed.offer(model, {"step": 5.0, "auroc": 0.7})  # a tie after the resume still keeps step 1
    with torch.no_grad():
        model[0].weight.zero_()
    assert resumed.restore(model)["step"] == 1.0 and torch.equal(model[0].weight, torch.full((2, 3), 1.0))


def test_selecting_on_the_validation_reward_ignores_auroc():
    model, best = _model(), BestAdapter(metric="reward")
    rows = [(0.9, -0.4), (0.7, -0.1), (0.95, -0.3)]  # (AUROC, mean reward): the reward's best is step 1
    for step, (auroc, reward) in enumerate(rows):
        with torch.no_grad():
            model[0].weight.fill_(float(step))
        best.offer(model, {"step": float(step), "auroc": auroc, "reward": reward})
    assert best.restore(model)["step"] == 1.0 and torch.equal(model[0].weight, torch.full((2, 3), 1.0))
