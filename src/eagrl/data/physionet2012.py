"""PhysioNet/CinC Challenge 2012, sets A and B: 8,000 adult ICU stays, in-hospital mortality.

The long file holds ``set,RecordID,Time,Parameter,Value`` rows (``Time`` is ``HH:MM`` since ICU admission,
-1 means missing; ``set`` is optional unless ``sets`` picks some). Each stay starts with six descriptors at 00:00
(RecordID, Age, Gender, Height, ICUType, Weight): Age, Gender, Height and ICUType become static features, the
admission Weight counts as the first Weight observation. Values outside a feature's valid range (the feature
table's ``valid_low`` / ``valid_high``) are dropped or clipped before the first ``window_hours`` are binned into
steps of ``step_hours`` (mean per bin). Stays with no time series at all (a known quirk of the challenge data) are
dropped with a logged count.

Input from elsewhere in the same format is read as it is: a parameter that never appears is a feature never
measured (all missing, logged), rows with an empty ``Parameter`` are left out (counted), one outcome file is
enough (``dataset.raw_files.outcomes_b=null``) and a RecordID listed in two outcome files with the same label is
read once (conflicting labels stop the run with one line naming it).

    eagrl-data dataset=physionet2012
    eagrl-data dataset=physionet2012_a      # set A only, its own outcome file
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import pandas as pd

from eagrl.data.cohort import RawCohort, bound_values, numeric_columns, read_csv, require_columns
from eagrl.data.features import FeatureTable
from eagrl.errors import ConfigError, DataError

log = logging.getLogger(__name__)

LONG_COLUMNS = ["RecordID", "Time", "Parameter", "Value"]
OUTCOME_COLUMNS = ["RecordID", "In-hospital_death"]
DESCRIPTORS = ("RecordID", "Age", "Gender", "Height", "ICUType", "Weight")
#: ``files`` keys of outcome tables start with this (``outcomes_a``, ``outcomes_b``, or a single ``outcomes``)
OUTCOMES = "outcomes"


def _minutes(times: pd.Series, path: Path) -> pd.Series:
    """``HH:MM`` strings -> minutes since ICU admission (int)."""
    text = times.astype(str)
    bad = ~text.str.fullmatch(r"\d+:\d{2}")
    if bad.any():
        raise DataError(f"{path}: column 'Time' has value {times[bad].iloc[0]!r}, expected HH:MM")
    # HH is everything before the last three characters, MM the last two
    return text.str.slice(stop=-3).astype(int) * 60 + text.str.slice(start=-2).astype(int)


def read_outcomes(files: dict[str, Path]) -> pd.Series:
    """RecordID -> in-hospital death (0/1) from every outcome table in ``files`` (keys starting ``outcomes``).

    A RecordID found twice with the same label (the same stay listed in two tables, or twice in one) is read once,
    with a logged count; one found with two different labels raises :class:`DataError` naming it and its files.
    """
    keys = sorted(key for key in files if key.startswith(OUTCOMES))
    if not keys:
        raise ConfigError(
            "dataset.raw_files holds no outcome file (a key starting with 'outcomes', e.g. outcomes_a): "
            "the labels come from it"
        )
    tables = []
    for key in keys:
        table = read_csv(files[key], dtype={"RecordID": str})
        require_columns(table, OUTCOME_COLUMNS, files[key])
        label = numeric_columns(table, ["In-hospital_death"], files[key], negative_missing=False)["In-hospital_death"]
        invalid = label.notna() & ~label.isin([0.0, 1.0])
        if invalid.any():
            raise DataError(
                f"{files[key]}: column 'In-hospital_death' must be 0 or 1 "
                f"(RecordID {table.loc[invalid, 'RecordID'].iloc[0]} has {label[invalid].iloc[0]:g})"
            )
        ids = table["RecordID"].str.strip()
        tables.append(pd.DataFrame({"RecordID": ids, "label": label, "file": files[key].name}))
    outcomes = pd.concat(tables, ignore_index=True).dropna(subset=["RecordID", "label"])
    labels_per_record = outcomes.groupby("RecordID")["label"].nunique()
    conflicting = labels_per_record[labels_per_record > 1]
    if len(conflicting):
        record = conflicting.index[0]
        where = outcomes.loc[outcomes["RecordID"] == record, ["file", "label"]]
        listed = ", ".join(f"{row.file}: {row.label:g}" for row in where.itertuples())
        raise DataError(
            f"RecordID {record} has two different outcomes ({listed}); {len(conflicting)} record(s) conflict: "
            "fix the outcome files or leave one out (dataset.raw_files.<key>=null)"
        )
    repeated = outcomes["RecordID"].duplicated()
    if repeated.any():
        log.warning(
            "%s: %d outcome rows repeat a RecordID with the same label; each stay is read once",
            ", ".join(files[key].name for key in keys),
            int(repeated.sum()),
        )
    return outcomes[~repeated].set_index("RecordID")["label"]


def load_physionet2012(
    files: dict[str, Path],
    features: FeatureTable,
    step_hours: float = 1.0,
    window_hours: float = 48.0,
    sets: list[str] | None = None,
    outliers: str = "drop",
) -> RawCohort:
    """Bin the challenge's long table into per-step visits; descriptors as static features.

    Args:
        files: ``timeseries`` (long CSV, may be gzipped) and one or more outcome tables (keys starting with
            ``outcomes``: the challenge's ``outcomes_a`` and ``outcomes_b``, or any single one).
        features: the PhysioNet 2012 feature table.
        step_hours: bin width in hours (visits are bins with at least one measurement).
        window_hours: hours since admission kept; a value at exactly the window end joins the last bin.
        sets: keep only the stays whose ``set`` column is one of these (e.g. ``[a]``); ``None`` keeps all.
        outliers: ``drop`` or ``clip`` time-series values outside their feature's valid range (``dataset.outliers``),
            before binning; static descriptors are bounded by :func:`eagrl.data.cohort.prepare_cohort`.

    Returns:
        Visits with ``time`` = bin start in hours since ICU admission; label ``mortality``.
    """
    path = files["timeseries"]
    long = read_csv(path, dtype={"set": str, "RecordID": str, "Time": str, "Parameter": str, "Value": str})
    require_columns(long, LONG_COLUMNS, path)
    ignored = {}
    if sets is not None:
        require_columns(long, ["set"], path)
        chosen = long["set"].isin([str(name) for name in sets])
        if not chosen.any():
            raise ConfigError(
                f"dataset.loader.sets={list(sets)} matches no row of {path} (its sets: "
                f"{', '.join(sorted(long['set'].dropna().unique()))})"
            )
        long = long[chosen]
    empty = long["Parameter"].isna() | (long["Parameter"].str.strip() == "")
    if empty.any():
        ignored["empty Parameter"] = int(empty.sum())
        log.warning("%s: ignoring %d rows with an empty Parameter", path.name, ignored["empty Parameter"])
        long = long[~empty]
    long = long.assign(Parameter=long["Parameter"].str.strip())
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
    outlier_counts = {}
    for spec in features.dynamic:
        rows = series["Parameter"] == spec.column
        if rows.any():
            series.loc[rows, "Value"], count = bound_values(series.loc[rows, "Value"], spec, outliers)
            if count:
                outlier_counts[spec.name] = count
    present = set(series["Parameter"].unique()) | set(static.columns)
    absent = [spec for spec in features.all if spec.column not in present]
    if absent:
        log.warning(
            "%s: %d of %d features never appear, treated as never measured: %s",
            path.name,
            len(absent),
            len(features.all),
            ", ".join(spec.name for spec in absent),
        )
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

    label = read_outcomes(files)
    patients = pd.DataFrame({"patient_id": sorted(with_series)})
    for spec in features.static:
        column = static[spec.column] if spec.column in static.columns else pd.Series(dtype=float)
        patients[spec.name] = patients["patient_id"].map(column).astype(float).to_numpy()
    patients["mortality"] = patients["patient_id"].map(label)
    unlabelled = int(patients["mortality"].isna().sum())
    patients = patients[patients["mortality"].notna()].astype({"mortality": int}).reset_index(drop=True)
    dropped = {"no time series": no_series, "no outcome": unlabelled}
    return RawCohort(
        visits=visits,
        patients=patients,
        dropped=dropped,
        outliers=outlier_counts,
        absent=[spec.name for spec in absent],
        ignored_rows=ignored,
    )
