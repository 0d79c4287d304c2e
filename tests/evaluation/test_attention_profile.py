"""The attention-map measurement on the tiny model, and the agreement statistics."""

from __future__ import annotations

import numpy as np
import pytest

from eagrl.data.prompt import ChatPrompt
from eagrl.evaluation.attention import agreement, attention_profile
from tests.policy.conftest import tiny

LINES = ("- LDH (Unit: U/L): [300, 350]", "- Albumin (Unit: g/L): [30, 28]", "- Glucose (Unit: mmol/L): [6, 7]")


def test_profile_shape_and_normalisation():
    model, tokenizer = tiny()
    prompt = ChatPrompt("doctor", "Record:\n" + "\n".join(LINES) + "\nTask: ?", ("LDH", "Albumin", "Glucose"), LINES)
    profile = attention_profile(model, tokenizer, prompt, "<Important Features> LDH </Important Features>", [-1, 0])
    assert profile.layers == (0, 1) and profile.features == ("LDH", "Albumin", "Glucose")
    assert profile.mass.shape == (2, 4, 3)  # layers, heads (TINY has 4), features
    np.testing.assert_allclose(profile.mass.sum(-1), 1.0, rtol=1e-5)
    assert profile.distribution().sum() == pytest.approx(1.0)


def test_agreement():
    assert agreement([3, 2, 1], [1, 2, 3], k=1) == {"top_k": 0.0, "spearman": pytest.approx(-1.0)}
    assert agreement([0.5, 0.3, 0.2], [0.6, 0.3, 0.1], k=2) == {"top_k": 1.0, "spearman": pytest.approx(1.0)}
    assert np.isnan(agreement([1, 1, 1], [1, 2, 3])["spearman"])  # constant attention: no rank correlation
