"""Stage configs built in code for unit tests on toy models: the shipped defaults (the dataclasses' defaults equal
conf/, tests/stages/test_defaults.py) with the settings these tests were written against pinned, so that a change
of a shipped default does not silently change what a unit test checks."""

from __future__ import annotations

from eagrl.mcts.search import SearchConfig
from eagrl.mcts.selection import SelectionConfig
from eagrl.rl.module import RLConfig

#: RL on a toy policy: no KL reference pass, one pass per update, no early stop on flat groups
TOY_RL = {"lr": 2e-5, "kl_coef": 0.0, "ppo_epochs": 1, "stop_after_flat_steps": 0}
#: a search on a scripted or random engine: unconstrained sampling, one answer per node, short budgets
TOY_SEARCH = {
    "rollouts": 12, "answer_children": 1, "max_depth": 5, "top_p": 1.0, "subquestion_tokens": 48,
    "answer_tokens": 96, "final_tokens": 8, "guided": False, "guided_min_features": 1,
}  # fmt: skip
#: selection that keeps answers naming no expert feature and balances by dropping answers
TOY_SELECTION = {"min_att": 0.0, "balance": "downsample"}


def toy_rl(**settings) -> RLConfig:
    """:class:`RLConfig` of :data:`TOY_RL` and ``settings``."""
    return RLConfig(**{**TOY_RL, **settings})


def toy_search(**settings) -> SearchConfig:
    """:class:`SearchConfig` of :data:`TOY_SEARCH` and ``settings``."""
    return SearchConfig(**{**TOY_SEARCH, **settings})


def toy_selection(**settings) -> SelectionConfig:
    """:class:`SelectionConfig` of :data:`TOY_SELECTION` and ``settings``."""
    return SelectionConfig(**{**TOY_SELECTION, **settings})
