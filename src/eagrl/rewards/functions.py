"""The EAG-RL reward (METHOD §4) as pure functions.

    R_cls = log(y·ŷ + (1−y)(1−ŷ)) + Δ,   Δ = β(ŷ−0.5) if y=1 and ŷ>0.5;  β(0.5−ŷ) if y=0 and ŷ<0.5;  else 0
    R_att = |C ∩ C_exp| / |C ∪ C_exp|    (Jaccard of declared vs expert salient features; 0 when both empty)
    R     = w_cls · R_cls + w_att · R_att (the paper: w_cls = λ = 0.6, w_att = 1 − λ)

ŷ is clipped to ``[clip, 1 − clip]`` before the log. An answer with no readable probability gets
``parse_failure_reward`` (the lowest reward) instead of R. With ``margin_beta`` and the two weights, both the
paper's weighting and the one reported for the authors' code (log-lik 1.0, margin 0.5, IoU 0.1) are configs.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping
from dataclasses import dataclass

from eagrl.errors import ConfigError
from eagrl.policy.parsing import ParsedAnswer


@dataclass(frozen=True)
class RewardConfig:
    """Weights of the reward (the ``reward`` config group).

    Attributes:
        cls_weight: w_cls, the weight of R_cls (λ in the paper).
        att_weight: w_att, the weight of R_att (1 − λ in the paper; 0 = the w/o R_att ablation).
        margin_beta: β of the margin bonus Δ.
        clip: ŷ is clipped to [clip, 1 − clip] inside the log.
        parse_failure_reward: R of an answer with no readable probability.
    """

    cls_weight: float = 0.6
    att_weight: float = 0.4
    margin_beta: float = 0.5
    clip: float = 0.01
    parse_failure_reward: float = -5.0

    def __post_init__(self):
        if not 0.0 < self.clip < 0.5:
            raise ConfigError(f"reward.clip must be within (0, 0.5), got {self.clip}")
        for name in ("cls_weight", "att_weight", "margin_beta", "parse_failure_reward"):
            if not math.isfinite(getattr(self, name)):
                raise ConfigError(f"reward.{name} must be a finite number, got {getattr(self, name)}")

    @classmethod
    def from_config(cls, cfg: Mapping) -> RewardConfig:
        """Build from the ``reward`` group (keys beyond the dataclass fields are ignored)."""
        return cls(**{name: float(cfg[name]) for name in cls.__dataclass_fields__ if name in cfg})


@dataclass(frozen=True)
class RewardTerms:
    """One answer's reward and its parts (``cls`` and ``att`` are NaN for an unparseable answer)."""

    total: float
    cls: float
    att: float
    parsed: bool


def classification_reward(probability: float, label: int, beta: float, clip: float) -> float:
    """R_cls: the clipped log-likelihood of the label plus the margin bonus (nats)."""
    clipped = min(max(probability, clip), 1.0 - clip)
    likelihood = clipped if label == 1 else 1.0 - clipped
    if label == 1 and probability > 0.5:
        margin = beta * (clipped - 0.5)
    elif label == 0 and probability < 0.5:
        margin = beta * (0.5 - clipped)
    else:
        margin = 0.0
    return math.log(likelihood) + margin


def jaccard(declared: Collection[str], expert: Collection[str]) -> float:
    """|C ∩ C_exp| / |C ∪ C_exp| over canonical names; 0 when both sets are empty."""
    declared, expert = set(declared), set(expert)
    union = declared | expert
    return len(declared & expert) / len(union) if union else 0.0


def score_answer(parsed: ParsedAnswer, label: int, expert_features: Collection[str], cfg: RewardConfig) -> RewardTerms:
    """R of one parsed answer given the label and the expert's salient set C_exp."""
    if parsed.probability is None:
        return RewardTerms(total=cfg.parse_failure_reward, cls=math.nan, att=math.nan, parsed=False)
    cls_term = classification_reward(parsed.probability, label, cfg.margin_beta, cfg.clip)
    att_term = jaccard(parsed.features, expert_features)
    total = cfg.cls_weight * cls_term + cfg.att_weight * att_term
    return RewardTerms(total=total, cls=cls_term, att=att_term, parsed=True)
