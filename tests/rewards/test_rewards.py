"""The reward (METHOD §4) against hand-computed values."""

from __future__ import annotations

import math

import pytest

from eagrl.errors import ConfigError
from eagrl.policy.parsing import ParsedAnswer
from eagrl.rewards import (
    RewardConfig,
    attention_agreement,
    classification_reward,
    jaccard,
    score_answer,
    unit_reward,
)


@pytest.mark.parametrize(
    ("probability", "label", "expected"),
    [
        (0.8, 1, math.log(0.8) + 0.5 * 0.3),  # positive called positive: margin β(ŷ − 0.5)
        (0.8, 0, math.log(0.2)),  # positive call of a negative: no margin
        (0.3, 0, math.log(0.7) + 0.5 * 0.2),  # negative called negative: margin β(0.5 − ŷ)
        (0.3, 1, math.log(0.3)),
        (0.5, 1, math.log(0.5)),  # on the boundary: no margin either way
        (0.5, 0, math.log(0.5)),
        (1.0, 1, math.log(0.99) + 0.5 * 0.49),  # clipped to 0.99 in the log and the margin
        (1.0, 0, math.log(0.01)),  # a confident mistake costs log(0.01), not -inf
        (0.0, 0, math.log(0.99) + 0.5 * 0.49),
    ],
)
def test_classification_reward(probability, label, expected):
    assert classification_reward(probability, label, beta=0.5, clip=0.01) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("declared", "expert", "expected"),
    [
        ([], [], 0.0),  # both empty: 0, not a division by zero
        (["LDH"], [], 0.0),
        ([], ["LDH"], 0.0),
        (["LDH", "CRP"], ["CRP", "LDH"], 1.0),
        (["LDH", "CRP", "Albumin"], ["CRP", "D-dimer"], 1 / 4),
        (["LDH", "LDH"], ["LDH"], 1.0),  # a repeated feature counts once
    ],
)
def test_jaccard(declared, expert, expected):
    assert jaccard(declared, expert) == pytest.approx(expected)


def test_total_is_the_weighted_sum_and_both_paper_weightings_are_configs():
    parsed = ParsedAnswer(probability=0.8, status="ok", features=("LDH", "CRP"))
    expert = ["LDH", "Albumin"]
    r_cls = math.log(0.8) + 0.5 * 0.3
    r_att = 1 / 3
    paper = score_answer(parsed, 1, expert, RewardConfig())
    assert (paper.cls, paper.att, paper.parsed) == (pytest.approx(r_cls), pytest.approx(r_att), True)
    assert paper.total == pytest.approx(0.6 * r_cls + 0.4 * r_att)
    # the authors' code: log-lik 1.0, margin 0.5, IoU 0.1
    authors = score_answer(parsed, 1, expert, RewardConfig(cls_weight=1.0, att_weight=0.1, margin_beta=0.5))
    assert authors.total == pytest.approx(math.log(0.8) + 0.5 * 0.3 + 0.1 * r_att)
    # w/o R_att (λ = 1)
    assert score_answer(parsed, 1, expert, RewardConfig(cls_weight=1.0, att_weight=0.0)).total == pytest.approx(r_cls)


@pytest.mark.parametrize("cfg", [RewardConfig(), RewardConfig(cls_weight=1.0, att_weight=0.1)])
def test_unit_reward_maps_the_attainable_range_onto_zero_one(cfg):
    """The MCTS scale: the most wrong answer naming nothing -> 0, the most right naming C_exp -> 1, monotone."""
    expert = ["LDH", "CRP"]
    worst = score_answer(ParsedAnswer(probability=1.0, status="ok"), 0, expert, cfg)
    best = score_answer(ParsedAnswer(probability=1.0, status="ok", features=("LDH", "CRP")), 1, expert, cfg)
    middle = score_answer(ParsedAnswer(probability=0.7, status="ok", features=("LDH",)), 1, expert, cfg)
    failed = score_answer(ParsedAnswer(probability=None, status="no_number"), 1, expert, cfg)
    assert unit_reward(worst, cfg) == pytest.approx(0.0) and unit_reward(best, cfg) == pytest.approx(1.0)
    assert 0.0 < unit_reward(middle, cfg) < 1.0 and unit_reward(failed, cfg) == 0.0


def test_unparseable_answer_gets_the_lowest_reward():
    terms = score_answer(ParsedAnswer(probability=None, status="no_final_answer"), 1, ["LDH"], RewardConfig())
    assert terms.total == -5.0 and not terms.parsed and math.isnan(terms.cls) and math.isnan(terms.att)


@pytest.mark.parametrize("settings", [{"clip": 0.0}, {"clip": 0.5}, {"cls_weight": math.nan}])
def test_impossible_settings_are_config_errors(settings):
    with pytest.raises(ConfigError, match="reward"):
        RewardConfig(**settings)


def test_attention_agreement():
    assert attention_agreement([2.0, 2.0], [0.5, 0.5]) == pytest.approx(1.0)  # same distribution
    assert attention_agreement([1.0, 0.0], [0.0, 1.0]) == pytest.approx(0.0)  # disjoint: JS = 1 bit
    # p = (0.5, 0.5), q = (1, 0): m = (0.75, 0.25); JS = ½·KL(p‖m) + ½·KL(q‖m)
    js = 0.5 * (0.5 * math.log2(0.5 / 0.75) + 0.5 * math.log2(0.5 / 0.25)) + 0.5 * math.log2(1 / 0.75)
    assert attention_agreement([1.0, 1.0], [1.0, 0.0]) == pytest.approx(1 - js)
    assert attention_agreement([0.0, 0.0], [0.5, 0.5]) == 0.0


@pytest.mark.parametrize(
    ("attention", "expected_att"), [("declared", 1 / 3), ("internal", 0.8), ("both", (1 / 3 + 0.8) / 2), ("none", 0.0)]
)
def test_attention_modes(attention, expected_att):
    parsed = ParsedAnswer(probability=0.8, status="ok", features=("LDH", "CRP"))
    terms = score_answer(parsed, 1, ["LDH", "Albumin"], RewardConfig(attention=attention), internal=0.8)
    assert terms.att == pytest.approx(expected_att)
    assert terms.total == pytest.approx(0.6 * terms.cls + 0.4 * expected_att)


def test_internal_attention_must_be_given_and_modes_are_checked():
    parsed = ParsedAnswer(probability=0.8, status="ok")
    with pytest.raises(ValueError, match="internal"):
        score_answer(parsed, 1, [], RewardConfig(attention="internal"))
    with pytest.raises(ConfigError, match=r"reward\.attention"):
        RewardConfig(attention="eyes")
