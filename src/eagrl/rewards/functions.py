"""The EAG-RL reward (METHOD §4) as pure functions.

    R_cls = log(y·ŷ + (1−y)(1−ŷ)) + Δ,   Δ = β(ŷ−0.5) if y=1 and ŷ>0.5;  β(0.5−ŷ) if y=0 and ŷ<0.5;  else 0
    R_att = |C ∩ C_exp| / |C ∪ C_exp|    (Jaccard of declared vs expert salient features; 0 when both empty)
    R     = w_cls · R_cls + w_att · R_att (the paper: w_cls = λ = 0.6, w_att = 1 − λ)

``attention`` chooses what R_att measures: ``declared`` (the paper), ``internal`` (our extension: agreement of
the policy's own attention over each feature's prompt tokens with the expert's importance distribution,
1 − Jensen–Shannon divergence in bits), ``both`` (their mean) or ``none`` (R_att = 0).

ŷ is clipped to ``[clip, 1 − clip]`` before the log. An answer with no readable probability gets
``parse_failure_reward`` (the lowest reward) instead of R. With ``margin_beta`` and the two weights, both the
paper's weighting and the one reported for the authors' code (log-lik 1.0, margin 0.5, IoU 0.1) are configs.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Sequence
from dataclasses import dataclass

import numpy as np

from eagrl.errors import ConfigError
from eagrl.policy.parsing import ParsedAnswer

#: what R_att can measure
ATTENTION_MODES = ("declared", "internal", "both", "none")


@dataclass(frozen=True)
class RewardConfig:
    """Weights of the reward (the ``reward`` config group).

    Attributes:
        cls_weight: w_cls, the weight of R_cls (λ in the paper).
        att_weight: w_att, the weight of R_att (1 − λ in the paper; 0 = the w/o R_att ablation).
        margin_beta: β of the margin bonus Δ.
        clip: ŷ is clipped to [clip, 1 − clip] inside the log.
        parse_failure_reward: R of an answer with no readable probability.
        attention: what R_att measures: declared, internal, both or none.
        attention_layers: layers whose attention the internal measure reads (negative counts from the last).
    """

    cls_weight: float = 0.6
    att_weight: float = 0.4
    margin_beta: float = 0.5
    clip: float = 0.01
    parse_failure_reward: float = -5.0
    attention: str = "declared"
    attention_layers: tuple[int, ...] = (-4, -3, -2, -1)

    def __post_init__(self):
        if self.attention not in ATTENTION_MODES:
            raise ConfigError(f"reward.attention={self.attention!r}: use one of {', '.join(ATTENTION_MODES)}")
        if not 0.0 < self.clip < 0.5:
            raise ConfigError(f"reward.clip must be within (0, 0.5), got {self.clip}")
        for name in ("cls_weight", "att_weight", "margin_beta", "parse_failure_reward"):
            if not math.isfinite(getattr(self, name)):
                raise ConfigError(f"reward.{name} must be a finite number, got {getattr(self, name)}")

    @property
    def needs_internal(self) -> bool:
        """Whether R_att needs the policy's internal attention."""
        return self.attention in ("internal", "both")


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


def correct_side(label, probability):
    """Whether an answer's probability lies on its label's side of 0.5 (0.5 itself, or NaN, is on neither): elementwise
    for arrays or pandas Series of labels (0 / 1) and probabilities, a bool for one answer."""
    return ((label == 1) & (probability > 0.5)) | ((label == 0) & (probability < 0.5))


def jaccard(declared: Collection[str], expert: Collection[str]) -> float:
    """|C ∩ C_exp| / |C ∪ C_exp| over canonical names; 0 when both sets are empty."""
    declared, expert = set(declared), set(expert)
    union = declared | expert
    return len(declared & expert) / len(union) if union else 0.0


def attention_agreement(feature_mass: Sequence[float], expert_distribution: Sequence[float]) -> float:
    """1 − JS(p ‖ q) in bits, in [0, 1]: p = the policy's attention mass per feature (normalised here), q = the
    expert's importance distribution over the same features. 0 when the policy gave the features no mass."""
    p = np.clip(np.asarray(feature_mass, dtype=np.float64), 0.0, None)
    q = np.clip(np.asarray(expert_distribution, dtype=np.float64), 0.0, None)
    if p.sum() <= 0 or q.sum() <= 0:
        return 0.0
    p, q = p / p.sum(), q / q.sum()
    middle = (p + q) / 2

    def kl(a: np.ndarray) -> float:
        support = a > 0
        return float(np.sum(a[support] * np.log2(a[support] / middle[support])))

    return 1.0 - (kl(p) + kl(q)) / 2


def score_answer(
    parsed: ParsedAnswer,
    label: int,
    expert_features: Collection[str],
    cfg: RewardConfig,
    internal: float | None = None,
) -> RewardTerms:
    """R of one parsed answer given the label, the expert's salient set C_exp and, for ``attention`` internal or
    both, the internal attention agreement (:func:`attention_agreement`)."""
    if parsed.probability is None:
        return RewardTerms(total=cfg.parse_failure_reward, cls=math.nan, att=math.nan, parsed=False)
    if cfg.needs_internal and internal is None:
        raise ValueError(f"reward.attention={cfg.attention} needs the internal attention agreement")
    cls_term = classification_reward(parsed.probability, label, cfg.margin_beta, cfg.clip)
    declared = jaccard(parsed.features, expert_features)
    att_term = {"declared": declared, "internal": internal, "both": (declared + (internal or 0.0)) / 2, "none": 0.0}[
        cfg.attention
    ]
    total = cfg.cls_weight * cls_term + cfg.att_weight * att_term
    return RewardTerms(total=total, cls=cls_term, att=att_term, parsed=True)


def unit_reward(terms: RewardTerms, cfg: RewardConfig) -> float:
    """R mapped onto [0, 1] by its attainable range, the scale of MCTS values (a step's usefulness is a probability):
    ``(R − R_min) / (R_max − R_min)`` with R_min, R_max the reward of the most wrong and the most right answer
    (R_cls from log(clip) to log(1 − clip) + β(0.5 − clip), R_att from 0 to 1); an unreadable answer scores 0."""
    if not terms.parsed:
        return 0.0
    cls_low, cls_high = math.log(cfg.clip), math.log(1.0 - cfg.clip) + cfg.margin_beta * (0.5 - cfg.clip)
    low = min(cfg.cls_weight * cls_low, cfg.cls_weight * cls_high) + min(0.0, cfg.att_weight)
    high = max(cfg.cls_weight * cls_low, cfg.cls_weight * cls_high) + max(0.0, cfg.att_weight)
    return min(max((terms.total - low) / (high - low), 0.0), 1.0) if high > low else 0.5
