"""Synthetic canary cohort (issue 16): seeded, generated patients whose outcome depends only on planted features.

It proves that a stage learns: an expert must rank the planted features first, an LLM policy must name them.
Each patient has 1 to ``max_visits`` daily visits of the dynamic features of ``dataset.features_file``
(``synthetic_features.csv``: 16 labs with units and reference ranges) and the static Age and Sex. Per patient:

1. every dynamic feature is abnormal at the last visit with probability ``abnormal_rate``, independently and at the
   same rate whether it is planted or not (naming "anything abnormal" does not pay);
2. last-visit value: normal = inside the reference range, ``ref_low + (ref_high - ref_low) * Beta(2, 2)``;
   abnormal = beyond the bound on the feature's abnormal side (below ``ref_low`` for ``low_features``, above
   ``ref_high`` for the others) by ``U(margin) * scale``, scale = the range width (below the range at most half of
   ``ref_low``, so values stay positive);
3. earlier visits drift toward the last: visit j of n is ``last + (baseline - last) * (n - 1 - j) / n`` with a
   baseline drawn inside the range, so the last visit holds the decisive state;
4. each value is missing with probability ``missing_rate``;
5. outcome: ``risk = sigmoid(weight * (abnormal planted features at the last visit) + intercept)``, label ~
   Bernoulli(risk). ``risk`` stays in the patient table: it is the Bayes-optimal score, and its AUROC (the Bayes
   AUROC, the ceiling of any model) is logged.

    eagrl-data dataset=synthetic
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.special import expit
from sklearn.metrics import roc_auc_score

from eagrl.data.cohort import RawCohort
from eagrl.data.features import FeatureTable
from eagrl.errors import ConfigError, DataError

log = logging.getLogger(__name__)

#: patient-table column holding the generator's outcome probability (the Bayes-optimal score)
RISK = "risk"


def _dynamic_indices(features: FeatureTable, names: list[str], key: str) -> np.ndarray:
    """Positions of ``names`` among the dynamic features; :class:`ConfigError` naming ``key`` for any other name."""
    dynamic = features.dynamic_names
    for name in names:
        if name not in dynamic:
            features.by_name(name)  # an unknown name: an error suggesting close matches
            raise ConfigError(f"{key}: {name!r} is a static feature; only dynamic features can be used")
    return np.array([dynamic.index(name) for name in names], dtype=int)


def load_synthetic(
    files: dict[str, Path],
    features: FeatureTable,
    planted: list[str],
    label: str,
    low_features: list[str],
    n_patients: int = 600,
    seed: int = 0,
    max_visits: int = 3,
    max_gap_days: int = 3,
    age_range: tuple[int, int] = (18, 90),
    abnormal_rate: float = 0.2,
    margin: tuple[float, float] = (0.1, 1.0),
    weight: float = 4.5,
    intercept: float = -3.0,
    missing_rate: float = 0.1,
) -> RawCohort:
    """Generate the cohort (module docstring); every argument but ``files`` and ``features`` is ``dataset.loader``'s.

    Args:
        files: unused (``raw_files: null``: nothing is read).
        features: the feature table; every dynamic feature needs both ``ref_low`` and ``ref_high``.
        planted: the dynamic features the outcome depends on.
        label: name of the generated 0/1 outcome column.
        low_features: dynamic features whose abnormal values lie below the range (the others: above it).
        n_patients: patients generated.
        seed: seed of every random draw.
        max_visits: visits per patient, uniform in 1..max_visits.
        max_gap_days: days between consecutive visits, uniform in 1..max_gap_days.
        age_range: ages in years, uniform integers in [low, high]; sex is 0 or 1 with probability 1/2.
        abnormal_rate: probability that a feature is abnormal at the last visit.
        margin: distance of an abnormal value beyond its bound, uniform in [low, high] times the scale.
        weight: outcome logit per abnormal planted feature at the last visit.
        intercept: outcome logit of a patient with no abnormal planted feature.
        missing_rate: probability that a dynamic value is missing.

    Returns:
        Visits (``time`` in days since the first visit, ``time_label`` the same number) and patients (Age, Sex,
        ``label``, :data:`RISK`), ids ``0000``, ``0001``, ...
    """
    if sorted(features.static_names) != ["Age", "Sex"]:
        raise DataError(f"synthetic cohort: the static features must be Age and Sex, not {features.static_names}")
    planted_index = _dynamic_indices(features, list(planted), "dataset.planted")
    low_side = np.zeros(len(features.dynamic), dtype=bool)
    low_side[_dynamic_indices(features, list(low_features), "dataset.loader.low_features")] = True
    low = np.array([spec.ref_low for spec in features.dynamic])
    high = np.array([spec.ref_high for spec in features.dynamic])
    if np.isnan(low).any() or np.isnan(high).any():
        unbounded = features.dynamic_names[int(np.argmax(np.isnan(low) | np.isnan(high)))]
        raise DataError(f"synthetic cohort: feature {unbounded!r} needs both ref_low and ref_high")
    width = high - low
    scale = np.where(low_side, np.minimum(width, low / 2), width)

    rng = np.random.default_rng(seed)
    shape = (n_patients, len(features.dynamic))
    abnormal = rng.random(shape) < abnormal_rate
    offset = rng.uniform(*margin, shape) * scale
    last = np.where(abnormal, np.where(low_side, low - offset, high + offset), low + width * rng.beta(2, 2, shape))
    baseline = low + width * rng.beta(2, 2, shape)

    lengths = rng.integers(1, max_visits + 1, n_patients)
    patient = np.repeat(np.arange(n_patients), lengths)
    visit = np.arange(len(patient)) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    back = ((lengths[patient] - 1 - visit) / lengths[patient])[:, None]
    values = last[patient] + (baseline[patient] - last[patient]) * back
    values[rng.random(values.shape) < missing_rate] = np.nan
    gaps = np.where(visit == 0, 0, rng.integers(1, max_gap_days + 1, len(patient)))
    digits = max(4, len(str(n_patients - 1)))  # ids sort as strings in patient order
    ids = np.array([f"{index:0{digits}d}" for index in range(n_patients)])

    times = pd.Series(gaps, dtype=float).groupby(patient).cumsum().to_numpy()
    visits = pd.DataFrame({"patient_id": ids[patient], "time": times, "time_label": [f"{t:g}" for t in times]})
    visits = pd.concat([visits, pd.DataFrame(values, columns=features.dynamic_names)], axis=1)

    risk = expit(weight * abnormal[:, planted_index].sum(axis=1) + intercept)
    patients = pd.DataFrame(
        {
            "patient_id": ids,
            "Age": rng.integers(age_range[0], age_range[1] + 1, n_patients).astype(float),
            "Sex": rng.integers(0, 2, n_patients).astype(float),
        }
    )
    patients[label] = (rng.random(n_patients) < risk).astype(int)
    patients[RISK] = risk
    log.info(
        "synthetic: %d patients, %d visits, outcome rate %.3f, Bayes AUROC %.3f (all patients), planted %s",
        n_patients,
        len(visits),
        patients[label].mean(),
        roc_auc_score(patients[label], risk),
        ", ".join(planted),
    )
    return RawCohort(visits=visits, patients=patients)
