"""The expert's per-patient salient features, as the LLM stages read them from an ``eagrl-expert`` artifact.

C_exp (METHOD §3) is the expert's top-k features; the LLM stages restrict it to the features their prompt shows with
a value (a feature the policy cannot see, or that was never measured, cannot be asked of it). The full importance
vector also gives the expert's attention *distribution* over the shown features (for reward.attention=internal).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from omegaconf import DictConfig

from eagrl.errors import DataError
from eagrl.utils.artifacts import find_artifact, stage_root


def expert_importance(cfg: DictConfig) -> tuple[Path, pd.DataFrame]:
    """The importance file of the expert named by ``cfg.salient`` and its rows, indexed by patient id
    (columns ``split``, ``importance``, ``ranking``)."""
    folder = find_artifact(
        cfg.salient.dir,
        stage_root(cfg, "expert", cfg.salient.expert),
        "importance.parquet",
        f"run `eagrl-expert expert={cfg.salient.expert} dataset={cfg.dataset.name} task={cfg.task.name} "
        f"seed={cfg.salient.seed}` first, or set salient.dir",
        pattern=f"seed{cfg.salient.seed}-*",
    )
    path = folder / "importance.parquet"
    try:
        frame = pd.read_parquet(path, columns=["patient_id", "split", "importance", "ranking"])
    except (OSError, ValueError, KeyError) as error:
        raise DataError(f"{path}: unreadable expert importance ({type(error).__name__}: {error})") from None
    return path, frame.set_index("patient_id")


def check_patients(importance: pd.DataFrame, patient_ids: Sequence[str], path: Path) -> None:
    """A one-line error when the importance file misses some of ``patient_ids``."""
    missing = [pid for pid in patient_ids if pid not in importance.index]
    if missing:
        raise DataError(
            f"{path}: no importance for {len(missing)} patient(s) (e.g. {missing[0]}); the expert was trained on "
            "another cohort version: rerun eagrl-expert"
        )


def salient_features(ranking: Sequence[str], observed: Sequence[str], top_k: int) -> list[str]:
    """C_exp: the expert's ``top_k`` highest-ranked features among those the prompt shows with a value
    (:attr:`~eagrl.data.prompt.ChatPrompt.observed_features`): a never-measured feature cannot be named for a
    reason, so it would only make R_att unreachable."""
    visible = set(observed)
    return [name for name in ranking if name in visible][:top_k]


def importance_distribution(importance: Sequence[float], names: Sequence[str], shown: Sequence[str]) -> np.ndarray:
    """The expert's importance over the ``shown`` features (in that order), normalised to sum to 1.

    ``importance`` is aligned with ``names`` (static then dynamic features); negative values count as 0. A patient
    whose shown features all have zero importance gets the uniform distribution.
    """
    index = {name: position for position, name in enumerate(names)}
    values = np.clip(np.array([importance[index[name]] for name in shown], dtype=np.float64), 0.0, None)
    total = values.sum()
    return values / total if total > 0 else np.full(len(shown), 1.0 / max(len(shown), 1))
