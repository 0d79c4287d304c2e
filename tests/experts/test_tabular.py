"""Reference models on the experts' last-visit inputs: the inputs are the experts' own, and both models fit and rank
TJH's test patients."""

from __future__ import annotations

import numpy as np
import pytest

from eagrl.errors import ConfigError
from eagrl.experts.tabular import MODELS, fit_tabular, last_visit_features


def test_last_visit_features_are_the_experts_inputs_at_the_last_visit(tjh):
    arrays = tjh.arrays["test"]
    features = last_visit_features(arrays)
    assert features.shape == (200, 75)
    row = 3
    np.testing.assert_array_equal(features[row, :2], arrays.static[row])
    np.testing.assert_array_equal(features[row, 2:], arrays.values[row, arrays.lengths[row] - 1])
    assert np.isfinite(features).all()


@pytest.mark.parametrize("name", sorted(MODELS))
def test_reference_models_fit_and_rank_tjh(tjh, name):
    first = fit_tabular(name, tjh.arrays, seed=0, resamples=20)
    again = fit_tabular(name, tjh.arrays, seed=0, resamples=20)
    assert first["test"]["n"] == 200 and first["test"]["auroc"]["mean"] > 0.9
    assert first["parameters"] > 0 and first["inputs"] == 75
    np.testing.assert_array_equal(first["probabilities"], again["probabilities"])  # seeded
    assert first[MODELS[name].setting_name] in MODELS[name].grid


def test_unknown_model(tjh):
    with pytest.raises(ConfigError, match="unknown reference model 'svm'"):
        fit_tabular("svm", tjh.arrays, seed=0)
