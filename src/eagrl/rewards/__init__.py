"""Rewards shared by Stage 1 (MCTS terminal reward) and Stage 2 (RL): pure functions of a parsed answer."""

from eagrl.rewards.functions import (
    ATTENTION_MODES,
    RewardConfig,
    RewardTerms,
    attention_agreement,
    classification_reward,
    correct_side,
    jaccard,
    score_answer,
    unit_reward,
)

__all__ = [
    "ATTENTION_MODES",
    "RewardConfig",
    "RewardTerms",
    "attention_agreement",
    "classification_reward",
    "correct_side",
    "jaccard",
    "score_answer",
    "unit_reward",
]
