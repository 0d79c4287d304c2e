"""Patient-level AUROC / AUPRC with seeded bootstrap resampling of the test set (METHOD §1).

summary = bootstrap_metrics(labels, probabilities, resamples=100, seed=42)
summary["auroc"]["mean"], summary["auroc"]["std"]
paired_difference([eagrl_predictions], [base_predictions], metric_of("auroc"))  # {"difference", "ci_low", ...}
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from torchmetrics.functional.classification import binary_auroc, binary_average_precision

METRICS = {"auroc": binary_auroc, "auprc": binary_average_precision}


def point_metrics(labels: np.ndarray, probabilities: np.ndarray) -> dict[str, float]:
    """AUROC and AUPRC of (n,) 0/1 labels against (n,) probabilities; NaN when only one class is present."""
    if len(np.unique(labels)) < 2:
        return dict.fromkeys(METRICS, float("nan"))
    target = torch.tensor(np.asarray(labels), dtype=torch.long)
    preds = torch.tensor(np.asarray(probabilities), dtype=torch.float32)
    return {name: float(metric(preds, target)) for name, metric in METRICS.items()}


def bootstrap_metrics(
    labels: np.ndarray, probabilities: np.ndarray, resamples: int = 100, seed: int = 42
) -> dict[str, dict[str, float]]:
    """Mean and std of each metric over ``resamples`` resamples (with replacement) of the patients.

    A resample that draws a single class has no AUROC; it is redrawn (the count is returned as
    ``redrawn``) so exactly ``resamples`` values enter the mean.

    Args:
        labels: (n,) 0/1 outcomes.
        probabilities: (n,) predicted probabilities.
        resamples: number of bootstrap resamples.
        seed: seed of the resampling.

    Returns:
        ``{"auroc": {"mean", "std"}, "auprc": {...}, "point": {...}, "ci95": {"auroc": [low, high], ...},
        "redrawn": int, "n": int}``; ``ci95`` is the 2.5-97.5 percentile interval of the resamples.
    """
    labels, probabilities = np.asarray(labels), np.asarray(probabilities, dtype=np.float64)
    rng = np.random.default_rng(seed)
    values = {name: [] for name in METRICS}
    redrawn = 0
    if len(np.unique(labels)) < 2:
        raise ValueError("bootstrap metrics need both classes in the evaluated split")
    while len(values["auroc"]) < resamples:
        index = rng.integers(0, len(labels), len(labels))
        sample = point_metrics(labels[index], probabilities[index])
        if np.isnan(sample["auroc"]):
            redrawn += 1
            continue
        for name, value in sample.items():
            values[name].append(value)
    summary = {name: {"mean": float(np.mean(v)), "std": float(np.std(v))} for name, v in values.items()}
    interval = {name: [float(np.percentile(v, 2.5)), float(np.percentile(v, 97.5))] for name, v in values.items()}
    return summary | {
        "point": point_metrics(labels, probabilities),
        "ci95": interval,
        "redrawn": redrawn,
        "n": len(labels),
    }


def format_scores(scores: dict) -> str:
    """``AUROC m ± s, AUPRC m ± s`` (×100) of a :func:`bootstrap_metrics` summary, for run logs."""
    return ", ".join(
        f"{name.upper()} {100 * scores[name]['mean']:.1f} ± {100 * scores[name]['std']:.1f}" for name in METRICS
    )


def metric_of(name: str) -> Callable:
    """``statistic(frame, rows) -> float`` for :func:`paired_difference`: ``name`` (auroc or auprc) of a predictions
    frame's ``label`` and ``probability`` columns at ``rows``."""

    def statistic(frame, rows) -> float:
        return point_metrics(frame["label"].to_numpy()[rows], frame["probability"].to_numpy()[rows])[name]

    return statistic


def paired_difference(
    first: Sequence, second: Sequence, statistic: Callable, resamples: int = 1000, seed: int = 0
) -> dict[str, float]:
    """Mean over seeds of ``statistic(first) − statistic(second)``, with a paired bootstrap 95 % CI.

    Each resample draws the same patients for both methods and every seed, so patient-level variation common to
    both cancels out. A resample with one class only has no AUROC and is skipped (``resamples`` counts the kept).

    Args:
        first, second: one predictions frame per seed (pandas, a ``label`` column), rows in the same patient order.
        statistic: ``statistic(frame, rows) -> float`` (:func:`metric_of`, or any per-patient mean).
        resamples: bootstrap resamples drawn.
        seed: seed of the resampling.

    Returns:
        ``{"difference", "ci_low", "ci_high", "resamples"}`` (the statistic's units).
    """
    patients = len(first[0])
    labels = first[0]["label"].to_numpy()
    rng = np.random.default_rng(seed)
    pairs = list(zip(first, second, strict=True))
    point = float(np.mean([statistic(a, slice(None)) - statistic(b, slice(None)) for a, b in pairs]))
    draws = []
    for _ in range(resamples):
        rows = rng.integers(0, patients, patients)
        if labels[rows].min() == labels[rows].max():
            continue
        draws.append(np.mean([statistic(a, rows) - statistic(b, rows) for a, b in pairs]))
    low, high = np.percentile(draws, [2.5, 97.5])
    return {"difference": point, "ci_low": float(low), "ci_high": float(high), "resamples": len(draws)}
