"""PhysioNet/CinC Challenge 2012, sets A and B: 8,000 adult ICU stays, in-hospital mortality.

The long file holds ``set,RecordID,Time,Parameter,Value`` rows (``Time`` is ``HH:MM`` since ICU admission,
-1 means missing). Each stay starts with six descriptors at 00:00 (RecordID, Age, Gender, Height, ICUType,
Weight): Age, Gender, Height and ICUType become static features, the admission Weight counts as the first
Weight observation. The first ``window_hours`` are binned into steps of ``step_hours`` (mean per bin).
Stays with no time series at all (a known quirk of the challenge data) are dropped with a logged count.

    eagrl-data dataset=physionet2012
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import pandas as pd

from eagrl.data.cohort import RawCohort, numeric_columns, read_csv, require_columns
from eagrl.data.features import FeatureTable
from eagrl.errors import DataError

log = logging.getLogger(__name__)

LONG_COLUMNS = ["RecordID", "Time", "Parameter", "Value"]
OUTCOME_COLUMNS = ["RecordID", "In-hospital_death"]
DESCRIPTORS = ("RecordID", "Age", "Gender", "Height", "ICUType", "Weight")


def _minutes(times: pd.Series, path: Path) -> pd.Series:
    """``HH:MM`` strings -> minutes since ICU admission (int)."""
    parts = times.astype(str).str.extract(r"^(\d+):(\d{2})$")
    bad = parts[0].isna()
    if bad.any():
        raise DataError(f"{path}: column 'Time' has value {times[bad].iloc[0]!r}, expected HH:MM")
    return parts[0].astype(int) * 60 + parts[1].astype(int)


def load_physionet2012(
    files: dict[str, Path], features: FeatureTable, step_hours: float = 1.0, window_hours: float = 48.0
) -> RawCohort:
    """Bin the challenge's long table into per-step visits; descriptors as static features.

    Args:
        files: ``timeseries`` (long CSV, may be gzipped), ``outcomes_a`` and ``outcomes_b``.
        features: the PhysioNet 2012 feature table.
        step_hours: bin width in hours (visits are bins with at least one measurement).
        window_hours: hours since admission kept; a value at exactly the window end joins the last bin.

    Returns:
        Visits with ``time`` = bin start in hours since ICU admission; label ``mortality``.
    """
    path = files["timeseries"]
    long = read_csv(path, dtype={"RecordID": str, "Time": str, "Parameter": str, "Value": str})
    require_columns(long, LONG_COLUMNS, path)
    long["Value"] = numeric_columns(long, ["Value"], path)["Value"]
    long["minutes"] = _minutes(long["Time"], path)

    first_seen = long.groupby(["RecordID", "Parameter"]).cumcount() == 0
    descriptor = first_seen & (long["minutes"] == 0) & long["Parameter"].isin(DESCRIPTORS)
    with_series = long.loc[~descriptor, "RecordID"].unique()
    all_records = long["RecordID"].unique()
    no_series = len(all_records) - len(with_series)
    if no_series:
        log.warning("%s: %d stays have no time series at all and are dropped", path.name, no_series)

    static = long[descriptor].pivot(index="RecordID", columns="Parameter", values="Value")
    series = long[~descriptor | (long["Parameter"] == "Weight")]
    series = series[series["RecordID"].isin(with_series)]
    known = {spec.column: spec.name for spec in features.dynamic}
    unknown = sorted(set(series["Parameter"]) - set(known))
    if unknown:
        log.warning(
            "%s: ignoring %d rows of parameters not in the feature table: %s",
            path.name,
            int(series["Parameter"].isin(unknown).sum()),
            ", ".join(unknown),
        )
    series = series[series["Parameter"].isin(known)]
    n_bins = math.ceil(window_hours / step_hours)
    series = series[series["minutes"] <= window_hours * 60]
    step = (series["minutes"] // (step_hours * 60)).clip(upper=n_bins - 1)
    series = series.assign(step=step.astype(int))
    visits = series.pivot_table(index=["RecordID", "step"], columns="Parameter", values="Value", aggfunc="mean")
    visits = visits.reindex(columns=list(known)).rename(columns=known).reset_index()
    visits = visits.rename(columns={"RecordID": "patient_id"})
    visits.insert(1, "time", visits.pop("step") * step_hours)
    visits.insert(2, "time_label", visits["time"].map(lambda hours: f"{hours:g}"))
    visits.columns.name = None

    outcomes = pd.concat(
        [read_csv(files[key], dtype={"RecordID": str}) for key in ("outcomes_a", "outcomes_b")], ignore_index=True
    )
    require_columns(outcomes, OUTCOME_COLUMNS, files["outcomes_a"])
    patients = pd.DataFrame({"patient_id": sorted(with_series)})
    for spec in features.static:
        if spec.column not in static.columns:
            raise DataError(f"{path}: descriptor {spec.column!r} (a static feature) never appears")
        patients[spec.name] = patients["patient_id"].map(static[spec.column]).to_numpy()
    label = outcomes.set_index("RecordID")["In-hospital_death"]
    patients["mortality"] = patients["patient_id"].map(label)
    unlabelled = int(patients["mortality"].isna().sum())
    patients = patients[patients["mortality"].notna()].astype({"mortality": int}).reset_index(drop=True)
    dropped = {"no time series": no_series, "no outcome": unlabelled}
    return RawCohort(visits=visits, patients=patients, dropped=dropped)
