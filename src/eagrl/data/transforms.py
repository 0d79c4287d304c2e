"""Pure array transforms for expert inputs: padding, LOCF, train-only statistics, imputation.

Shapes: ``n`` patients, ``T`` visits (padded), ``F`` features. Missing values are NaN throughout.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd


def pad_visits(
    visits: pd.DataFrame, patient_ids: list[str], columns: list[str]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Stack each patient's visits into a right-padded array.

    Args:
        visits: one row per visit, sorted by ``patient_id`` then ``time``, holding ``columns``.
        patient_ids: patients in output order.
        columns: feature columns, in output order.

    Returns:
        ``values`` (n, T, F) float32, NaN where missing or padded; ``times`` (n, T) float32, 0 where padded;
        ``lengths`` (n,) int64 number of real visits.
    """
    groups = visits.groupby("patient_id", sort=False)
    index = {pid: rows for pid, rows in groups.indices.items()}
    lengths = np.array([len(index[pid]) for pid in patient_ids], dtype=np.int64)
    width = int(lengths.max()) if len(lengths) else 0
    matrix = visits[columns].to_numpy(dtype=np.float32)
    all_times = visits["time"].to_numpy(dtype=np.float32)
    values = np.full((len(patient_ids), width, len(columns)), np.nan, dtype=np.float32)
    times = np.zeros((len(patient_ids), width), dtype=np.float32)
    for row, pid in enumerate(patient_ids):
        rows = index[pid]
        values[row, : len(rows)] = matrix[rows]
        times[row, : len(rows)] = all_times[rows]
    return values, times, lengths


def locf(values: np.ndarray) -> np.ndarray:
    """Last observation carried forward along the visit axis, within each patient.

    Args:
        values: (n, T, F) with NaN for missing.

    Returns:
        (n, T, F): each NaN replaced by the latest earlier observation of the same patient and feature;
        NaN stays where nothing was observed yet (no value is ever taken from a later visit).
    """
    steps = values.shape[1]
    observed = ~np.isnan(values)
    last_seen = np.where(observed, np.arange(steps)[None, :, None], -1)
    np.maximum.accumulate(last_seen, axis=1, out=last_seen)
    filled = np.take_along_axis(values, np.clip(last_seen, 0, None), axis=1)
    return np.where(last_seen >= 0, filled, np.nan).astype(values.dtype)


@dataclass(frozen=True)
class FeatureStats:
    """Per-feature statistics fit on the train split only (observed values, before imputation).

    Attributes: ``mean``, ``std`` (1 where a feature is constant or unseen), ``median`` (0 where unseen); each (F,).
    """

    mean: np.ndarray
    std: np.ndarray
    median: np.ndarray

    @classmethod
    def fit(cls, values: np.ndarray) -> FeatureStats:
        """Fit on (..., F) train values; NaN entries are ignored."""
        flat = values.reshape(-1, values.shape[-1]).astype(np.float64)
        with warnings.catch_warnings():  # an all-NaN feature warns "empty slice" and yields NaN
            warnings.simplefilter("ignore", RuntimeWarning)
            mean, std, median = (np.nanmean(flat, 0), np.nanstd(flat, 0), np.nanmedian(flat, 0))
        mean, median = np.nan_to_num(mean, nan=0.0), np.nan_to_num(median, nan=0.0)
        std = np.where(np.isnan(std) | (std < 1e-8), 1.0, std)
        return cls(mean.astype(np.float32), std.astype(np.float32), median.astype(np.float32))


def impute_and_normalise(values: np.ndarray, stats: FeatureStats) -> np.ndarray:
    """LOCF, then the train median where nothing was observed yet, then z-normalisation.

    Args:
        values: (..., T, F) or (..., F) raw values with NaN for missing.
        stats: train-split statistics.

    Returns:
        Same shape, finite float32.
    """
    filled = locf(values) if values.ndim == 3 else values
    filled = np.where(np.isnan(filled), stats.median, filled)
    return ((filled - stats.mean) / stats.std).astype(np.float32)
