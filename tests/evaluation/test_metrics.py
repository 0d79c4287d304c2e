"""Bootstrap metrics: seeded, exact on separable data, and honest about single-class resamples."""

from __future__ import annotations

import numpy as np
import pytest

from eagrl.evaluation.metrics import bootstrap_metrics, point_metrics


def test_perfect_separation_scores_one():
    labels = np.array([0, 0, 1, 1, 0, 1])
    summary = bootstrap_metrics(labels, labels * 0.8 + 0.1, resamples=50, seed=0)
    assert summary["auroc"] == {"mean": 1.0, "std": 0.0} and summary["auprc"]["mean"] == 1.0


def test_seeded_and_matches_point_estimate():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 300)
    scores = labels * 0.3 + rng.random(300)
    first, again = bootstrap_metrics(labels, scores, 100, 42), bootstrap_metrics(labels, scores, 100, 42)
    assert first == again
    assert first["auroc"]["mean"] == pytest.approx(first["point"]["auroc"], abs=0.02)
    assert 0 < first["auroc"]["std"] < 0.05 and first["n"] == 300


def test_single_class_resamples_are_redrawn():
    labels = np.array([0] * 9 + [1])
    summary = bootstrap_metrics(labels, np.linspace(0, 1, 10), resamples=30, seed=1)
    assert summary["redrawn"] > 0 and summary["auroc"]["mean"] == pytest.approx(1.0)
    assert np.isnan(point_metrics(np.zeros(4), np.ones(4))["auroc"])
