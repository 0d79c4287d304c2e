"""Bring your own cohort: three CSVs and a feature-metadata file in one folder, no code.

- ``events.csv``: the time series, either ``wide`` (``patient_id``, ``time``, optional ``time_label``, one column
  per dynamic feature) or ``long`` (``patient_id``, ``time``, optional ``time_label``, ``feature``, ``value``);
  ``time`` is a number in the dataset's ``time_unit``; rows of a patient at the same time are averaged;
  ``time_label`` (what prompts show) defaults to the time itself; a feature column the file lacks (or a feature the
  long layout never names) is a feature never measured, logged;
- ``static.csv``: ``patient_id`` and one column per static feature (e.g. age, sex coded as in ``value_labels``; a
  missing column: never measured);
- ``labels.csv``: ``patient_id`` and one 0/1 column per label in ``dataset.labels``: it defines the cohort;
- ``features.csv``: the metadata, same columns as ``eagrl/data/resources/*_features.csv`` (``column`` is the name
  in the CSVs, ``name`` the canonical one; optional ``valid_low`` / ``valid_high`` bounds).

    eagrl-data dataset=csv dataset.cohort_dir=/path/to/my_cohort dataset.labels=[mortality]

:func:`export_csv_cohort` writes a processed cohort in this format (TJH round-trips to identical tensors).
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import pandas as pd

from eagrl.data.cohort import Cohort, RawCohort, add_absent_columns, numeric_columns, read_csv, require_columns
from eagrl.data.features import FeatureTable, features_path
from eagrl.errors import ConfigError, DataError

log = logging.getLogger(__name__)

LAYOUTS = ("wide", "long")
PATIENT, TIME, TIME_LABEL = "patient_id", "time", "time_label"
#: file names of the format (the keys of ``dataset.raw_files``)
FILE_NAMES = {"events": "events.csv", "static": "static.csv", "labels": "labels.csv", "features": "features.csv"}


def _require_unique_ids(frame: pd.DataFrame, path: Path) -> None:
    repeated = frame[PATIENT].duplicated()
    if repeated.any():
        raise DataError(f"{path}: column {PATIENT!r} repeats patient {frame.loc[repeated, PATIENT].iloc[0]}")


def _events_frame(frame: pd.DataFrame, values: pd.DataFrame, path: Path) -> pd.DataFrame:
    """``patient_id``, ``time``, optional ``time_label`` of ``frame`` beside the feature ``values``."""
    for column in (PATIENT, TIME):
        empty = frame[column].isna()
        if empty.any():
            raise DataError(f"{path}: column {column!r} is empty in data row {empty.to_numpy().argmax() + 1}")
    keys = frame[[PATIENT, *([TIME_LABEL] if TIME_LABEL in frame else [])]].copy()
    keys.insert(1, TIME, numeric_columns(frame, [TIME], path, negative_missing=False)[TIME])
    return pd.concat([keys, values], axis=1)


def _wide_events(path: Path, features: FeatureTable, negative_missing: bool) -> pd.DataFrame:
    """One row per events row, one float column per dynamic feature (canonical names)."""
    frame = read_csv(path, dtype={PATIENT: str, TIME_LABEL: str})
    columns = [spec.column for spec in features.dynamic]
    require_columns(frame, [PATIENT, TIME], path)
    extra = sorted(set(frame.columns) - {PATIENT, TIME, TIME_LABEL, *columns})
    if extra:
        log.warning("%s: ignoring columns not in the feature metadata: %s", path.name, ", ".join(extra))
    add_absent_columns(frame, features.dynamic, path)
    values = numeric_columns(frame, columns, path, negative_missing)
    values.columns = features.dynamic_names
    return _events_frame(frame, values, path)


def _long_events(path: Path, features: FeatureTable, negative_missing: bool) -> pd.DataFrame:
    """Like :func:`_wide_events`: each ``feature``/``value`` row becomes a row with one value."""
    frame = read_csv(path, dtype={PATIENT: str, TIME_LABEL: str, "feature": str})
    require_columns(frame, [PATIENT, TIME, "feature", "value"], path)
    names = {spec.column: spec.name for spec in features.dynamic}
    unknown = ~frame["feature"].isin(list(names))
    if unknown.any():
        raise DataError(
            f"{path}: column 'feature' has {frame.loc[unknown, 'feature'].iloc[0]!r}, which is not the column "
            "of a dynamic feature in the feature metadata"
        )
    frame["value"] = numeric_columns(frame, ["value"], path, negative_missing)["value"]
    values = frame.pivot(columns="feature", values="value").reindex(columns=list(names)).rename(columns=names)
    values.columns.name = None
    return _events_frame(frame, values, path)


def load_csv_cohort(
    files: dict[str, Path],
    features: FeatureTable,
    labels: list[str],
    layout: str = "wide",
    negative_missing: bool = False,
) -> RawCohort:
    """Read a cohort folder in the generic format (module docstring).

    Args:
        files: ``events``, ``static``, ``labels`` (verified copies or links of the user's files).
        features: the cohort's feature table (``dataset.features_file``).
        labels: label columns to read (``dataset.labels``); each must be 0 or 1 for every patient.
        layout: ``wide`` or ``long`` events.
        negative_missing: treat negative values as missing (as TJH and PhysioNet 2012 code them).

    Returns:
        Visits with ``time`` as given (rows at the same time averaged) and patients sorted by id.
    """
    if layout not in LAYOUTS:
        raise ConfigError(f"dataset.loader.layout must be one of {', '.join(LAYOUTS)}, got {layout!r}")
    events_path = files["events"]
    read_events = _wide_events if layout == "wide" else _long_events
    events = read_events(events_path, features, negative_missing)
    if TIME_LABEL not in events:
        events[TIME_LABEL] = events[TIME].map(lambda value: f"{value:g}")
    visits = events.groupby([PATIENT, TIME], sort=True).agg(
        {TIME_LABEL: "first", **{name: "mean" for name in features.dynamic_names}}
    )
    visits = visits.reset_index()[[PATIENT, TIME, TIME_LABEL, *features.dynamic_names]]

    label_path = files["labels"]
    outcomes = read_csv(label_path, dtype={PATIENT: str})
    require_columns(outcomes, [PATIENT, *labels], label_path)
    patients = pd.concat([outcomes[[PATIENT]], numeric_columns(outcomes, labels, label_path, False)], axis=1)
    for label in labels:
        invalid = ~patients[label].isin([0.0, 1.0])
        if invalid.any():
            raise DataError(
                f"{label_path}: column {label!r} must be 0 or 1 (patient {patients.loc[invalid, PATIENT].iloc[0]})"
            )
    patients = patients.astype({label: int for label in labels})
    _require_unique_ids(patients, label_path)

    static_path = files["static"]
    static = read_csv(static_path, dtype={PATIENT: str})
    columns = [spec.column for spec in features.static]
    require_columns(static, [PATIENT], static_path)
    absent = add_absent_columns(static, features.static, static_path)
    _require_unique_ids(static, static_path)
    static_values = numeric_columns(static, columns, static_path, negative_missing)
    static_values.columns = features.static_names
    static_values.index = static[PATIENT]
    for name in features.static_names:
        patients.insert(patients.columns.get_loc(labels[0]), name, patients[PATIENT].map(static_values[name]))
    matched = patients[PATIENT].isin(static_values.index)
    if features.static and not matched.any():
        raise DataError(
            f"{static_path}: none of its {len(static)} patient_id values is in {label_path.name} "
            "(a damaged file, or ids written differently)"
        )
    if not matched.all():
        log.warning("%s: %d patients of %s have no row; their static features are never measured",
                    static_path.name, int((~matched).sum()), label_path.name)  # fmt: skip

    unlabelled = int((~visits[PATIENT].drop_duplicates().isin(patients[PATIENT])).sum())
    if unlabelled:
        log.warning(
            "%s: %d patients have events but no row in %s; left out", events_path.name, unlabelled, label_path.name
        )
    patients = patients.sort_values(PATIENT, kind="stable").reset_index(drop=True)
    never = [name for name in features.dynamic_names if visits[name].isna().all()]
    if layout == "long" and never:  # the wide layout logged its absent columns
        log.warning("%s: %d dynamic features never appear, treated as never measured: %s",
                    events_path.name, len(never), ", ".join(never))  # fmt: skip
    absent += never
    return RawCohort(visits=visits, patients=patients, dropped={"events but no label": unlabelled}, absent=absent)


def export_csv_cohort(cohort: Cohort, directory: Path, layout: str = "wide") -> dict[str, Path]:
    """Write a processed cohort in the generic format (raw column names, all its labels); return the paths.

    Reading the folder back with ``dataset=csv`` and the same split settings gives the same cohort.
    """
    if layout not in LAYOUTS:
        raise ConfigError(f"layout must be one of {', '.join(LAYOUTS)}, got {layout!r}")
    directory.mkdir(parents=True, exist_ok=True)
    paths = {key: directory / name for key, name in FILE_NAMES.items()}
    features = cohort.features
    dynamic = {spec.name: spec.column for spec in features.dynamic}
    visits = cohort.visits[[PATIENT, TIME, TIME_LABEL, *dynamic]].rename(columns=dynamic)
    if layout == "long":
        visits = visits.melt(id_vars=[PATIENT, TIME, TIME_LABEL], var_name="feature", value_name="value")
        visits = visits[visits["value"].notna()]
    visits.to_csv(paths["events"], index=False)
    static = {spec.name: spec.column for spec in features.static}
    cohort.patients[[PATIENT, *static]].rename(columns=static).to_csv(paths["static"], index=False)
    cohort.patients[[PATIENT, *cohort.manifest["labels"]]].to_csv(paths["labels"], index=False)
    shutil.copyfile(features_path(cohort.manifest["features_file"]), paths["features"])
    return paths
