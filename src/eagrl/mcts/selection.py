"""Which searched answers become SFT trajectories (METHOD §5): a quality filter (the label's side of 0.5, R_att,
every span closed by the policy), the top-k per patient, class balance.

    selected = select_paths(paths, SelectionConfig(top_k=2, min_att=0.1))
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from eagrl.errors import ConfigError
from eagrl.rewards import correct_side

#: how the classes are balanced
BALANCING = ("downsample", "upsample", "none")


@dataclass(frozen=True)
class SelectionConfig:
    """The ``mcts.selection`` config block; the defaults are the shipped ``mcts=cpu``'s (a test holds them equal).

    Attributes:
        top_k: complete answers kept per patient, highest reward first (METHOD §5: 1–2).
        correct_side: keep only answers on the label's side of 0.5 (ŷ > 0.5 for y = 1, ŷ < 0.5 for y = 0).
        min_att: keep only answers whose R_att is at least this.
        require_closed: keep only answers whose every span the policy closed itself (none cut by a token budget).
        balance: ``downsample`` (drop the lowest-reward answers of the larger class until both hold as many),
            ``upsample`` (repeat the smaller class's answers, best first, until both hold as many) or ``none``.
    """

    top_k: int = 2
    correct_side: bool = True
    min_att: float = 0.1
    require_closed: bool = True
    balance: str = "upsample"

    def __post_init__(self):
        if self.top_k < 1:
            raise ConfigError(f"mcts.selection.top_k must be >= 1, got {self.top_k}")
        if self.balance not in BALANCING:
            raise ConfigError(f"mcts.selection.balance={self.balance!r}: use one of {', '.join(BALANCING)}")


def select_paths(paths: pd.DataFrame, cfg: SelectionConfig) -> pd.DataFrame:
    """The selected rows of ``paths`` (one row per complete answer: ``patient_id``, ``label``, ``probability``,
    ``r_total``, ``r_att``, ``completion``), ordered by patient then reward."""
    keep = paths["probability"].notna()
    if cfg.correct_side:
        keep &= correct_side(paths["label"], paths["probability"])
    keep &= paths["r_att"].fillna(-1.0) >= cfg.min_att
    if cfg.require_closed:
        keep &= paths["closed"]
    ranked = (
        paths[keep]
        .sort_values(["patient_id", "r_total", "node"], ascending=[True, False, True])
        .drop_duplicates(["patient_id", "completion"])
    )
    selected = ranked.groupby("patient_id", sort=False).head(cfg.top_k)
    if cfg.balance != "none" and selected["label"].nunique() == 2:
        counts = selected["label"].value_counts()
        best_first = selected.sort_values(["r_total", "patient_id", "node"], ascending=[False, True, True])
        if cfg.balance == "downsample":
            selected = best_first.groupby("label", sort=False).head(counts.min())
        else:
            smaller = best_first[best_first["label"] == counts.idxmin()]
            repeats = [smaller.iloc[[index % len(smaller)]] for index in range(counts.max() - counts.min())]
            selected = pd.concat([selected, *repeats])
    return selected.sort_values(["patient_id", "r_total"], ascending=[True, False], kind="stable").reset_index(
        drop=True
    )
