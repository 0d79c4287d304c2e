"""Rewards shared by Stage 1 (MCTS terminal reward) and Stage 2 (RL): pure functions of a parsed answer."""

from eagrl.rewards.functions import (
    RewardConfig,
    RewardTerms,
    classification_reward,
    jaccard,
    score_answer,
)

__all__ = ["RewardConfig", "RewardTerms", "classification_reward", "jaccard", "score_answer"]
