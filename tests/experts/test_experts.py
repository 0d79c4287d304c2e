"""Every registered expert: shapes, padding, learning a toy task, and importance that finds the driver."""

from __future__ import annotations

import functools

import pytest
import torch

from eagrl.errors import ConfigError
from eagrl.experts import EXPERTS
from eagrl.experts.base import net_inputs
from eagrl.experts.importance import feature_importance
from eagrl.experts.module import ExpertModule, build_expert
from tests.experts.synthetic import DRIVER, N_DYNAMIC, N_STATIC, synthetic_batch

ALL_EXPERTS = ["concare", "adacare", "retain", "stagenet", "gru", "lstm", "transformer"]


def test_all_paper_experts_are_registered():
    assert sorted(EXPERTS) == sorted(ALL_EXPERTS)


@pytest.mark.parametrize("name", ALL_EXPERTS)
def test_shapes_and_padding_invariance(name):
    torch.manual_seed(0)
    net = build_expert(name, N_DYNAMIC, N_STATIC, hidden_dim=16, dropout=0.0).eval()
    batch = synthetic_batch(patients=8, steps=6)
    logits = net(*net_inputs(batch))
    assert logits.shape == (8,) and logits.isfinite().all()
    noisy = dict(batch, values=batch["values"] + 100 * (~batch["visit_mask"]).unsqueeze(-1))
    torch.testing.assert_close(net(*net_inputs(noisy)), logits)


@functools.cache
def toy_model(name: str) -> ExpertModule:
    """The expert after 150 full-batch AdamW steps on the synthetic cohort (trained once per session)."""
    torch.manual_seed(0)
    module = ExpertModule(name, N_DYNAMIC, N_STATIC, {"hidden_dim": 32, "dropout": 0.0}, lr=0.01, weight_decay=0.0)
    train, held_out = synthetic_batch(512, seed=0), synthetic_batch(200, seed=1)
    optimizer = module.configure_optimizers()
    for _ in range(150):
        optimizer.zero_grad()
        module.loss(module(train), train["label"]).backward()
        optimizer.step()
    module.eval()
    with torch.no_grad():
        accuracy = ((module(held_out) > 0).float() == held_out["label"]).float().mean().item()
    assert accuracy > 0.85, f"{name} did not learn the toy task (accuracy {accuracy:.2f})"
    return module


#: (expert, importance method) pairs that must rank the label driver first per patient. Native importance of
#: ConCare is excluded: its final attention ranks the driver first for only ~55-100 % of patients depending on
#: the seed (it also classifies; see the test below and the README), so C_exp for ConCare can use IG instead.
PER_PATIENT = [(name, "integrated_gradients") for name in ALL_EXPERTS] + [
    ("adacare", "native"),
    ("retain", "native"),
]


@pytest.mark.parametrize(("name", "method"), PER_PATIENT)
def test_importance_ranks_the_label_driver_first(name, method):
    """Synthetic cohort whose label depends on one feature: >= 90 % of patients rank it first."""
    module = toy_model(name)
    held_out = synthetic_batch(200, seed=1)
    importance = feature_importance(module.net, held_out, method)
    assert importance.shape == (200, N_STATIC + N_DYNAMIC)
    torch.testing.assert_close(importance.sum(dim=1), torch.ones(200))
    first = (importance.argmax(dim=1) == DRIVER).float().mean().item()
    assert first >= 0.9, f"{name} ({method}): driver ranked first for {first:.0%} of patients"


def test_concare_attention_ranks_the_driver_first_on_average():
    """ConCare's native feature attention points at the driver at cohort level."""
    module = toy_model("concare")
    importance = feature_importance(module.net, synthetic_batch(200, seed=1), "native")
    assert importance.mean(dim=0).argmax().item() == DRIVER


def test_native_importance_requires_a_native_mechanism():
    net = build_expert("gru", N_DYNAMIC, N_STATIC, hidden_dim=8)
    with pytest.raises(ConfigError, match="integrated_gradients"):
        feature_importance(net, synthetic_batch(4), "native")


@pytest.mark.parametrize(("name", "params"), [("concare", {"num_heads": 3}), ("stagenet", {"levels": 5})])
def test_impossible_shapes_are_config_errors(name, params):
    with pytest.raises(ConfigError, match=r"expert\.params\.hidden_dim=64 is not divisible"):
        build_expert(name, N_DYNAMIC, N_STATIC, hidden_dim=64, **params)
