"""Processed cohorts: visit and patient tables, the split, and their versioned on-disk cache.

A dataset loader turns verified raw files into a :class:`RawCohort` (canonical feature names, raw units,
NaN for missing). :func:`prepare_cohort` filters it, assigns the one split every stage uses, and writes
``visits.parquet``, ``patients.parquet`` and ``manifest.json`` under
``<paths.data_dir>/processed/<dataset>/<version>/`` where ``version`` hashes the raw checksums, the
dataset config and :data:`PROCESSING_VERSION`; a rerun with unchanged inputs only reads the manifest.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from sklearn.model_selection import train_test_split

from eagrl.data.features import FeatureSpec, FeatureTable, features_path
from eagrl.data.sources import RawFile, obtain, sha256_of
from eagrl.errors import ConfigError, DataError
from eagrl.utils.artifacts import publish_folder, staging_folder

log = logging.getLogger(__name__)

#: Bump when processing code changes its output, so old caches are not reused.
PROCESSING_VERSION = 1
SPLITS = ("train", "val", "test")
#: ``dataset.split`` value of an external cohort: no train / val, every patient is in ``test``
NO_SPLIT = "none"
MANIFEST = "manifest.json"
#: ``dataset.outliers``: what happens to values outside a feature's ``valid_low`` / ``valid_high``
OUTLIER_MODES = ("drop", "clip")
#: dataset config keys that only shape prompts or later stages, not the processed cohort
NOT_PROCESSING_KEYS = ("context", "time_description", "salient_top_k")


@dataclass
class RawCohort:
    """What a dataset loader returns.

    Attributes:
        visits: one row per visit: ``patient_id`` (str), ``time`` (float, in the dataset's time unit),
            ``time_label`` (str shown in prompts) and one float column per dynamic feature (canonical name).
        patients: one row per patient: ``patient_id``, one column per static feature, one per label (0/1).
        dropped: reason -> number of patients the loader dropped for it (logged and put in the manifest).
        outliers: canonical name -> values outside the feature's valid range that the loader already handled
            (a loader that aggregates raw events bounds them before averaging; see :func:`bound_values`).
        absent: canonical names of features the input files do not hold at all: never measured (all NaN), as in a
            cohort that measured only some labs (see :func:`add_absent_columns`).
        ignored_rows: reason -> raw rows the loader left out and kept going (logged and put in the manifest).
    """

    visits: pd.DataFrame
    patients: pd.DataFrame
    dropped: dict[str, int] = field(default_factory=dict)
    outliers: dict[str, int] = field(default_factory=dict)
    absent: list[str] = field(default_factory=list)
    ignored_rows: dict[str, int] = field(default_factory=dict)


@dataclass
class Cohort:
    """A processed, split cohort as read back from the cache."""

    name: str
    directory: Path
    visits: pd.DataFrame
    patients: pd.DataFrame
    features: FeatureTable
    manifest: dict

    @classmethod
    def load(cls, directory: Path) -> Cohort:
        """Read a cache folder written by :func:`prepare_cohort`."""
        manifest_path = directory / MANIFEST
        try:
            manifest = json.loads(manifest_path.read_text())
            visits = pd.read_parquet(directory / "visits.parquet")
            patients = pd.read_parquet(directory / "patients.parquet")
        except (OSError, ValueError) as error:
            raise DataError(
                f"processed cohort at {directory} is unreadable ({error}); delete it and rerun eagrl-data"
            ) from None
        return cls(
            name=manifest["dataset"],
            directory=directory,
            visits=visits,
            patients=patients,
            features=FeatureTable.load(manifest["features_file"]),
            manifest=manifest,
        )

    def split_ids(self, split: str) -> list[str]:
        """Patient ids of ``split`` in cache order."""
        if split not in SPLITS:
            raise ConfigError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")
        return self.patients.loc[self.patients["split"] == split, "patient_id"].tolist()


def require_columns(frame: pd.DataFrame, columns: list[str], path: Path) -> None:
    """Raise :class:`DataError` naming the first of ``columns`` missing from ``frame`` read from ``path``."""
    for column in columns:
        if column not in frame.columns:
            raise DataError(f"{path}: missing column {column!r}")


def add_absent_columns(frame: pd.DataFrame, specs: tuple[FeatureSpec, ...], path: Path) -> list[str]:
    """Add an all-NaN column for every feature of ``specs`` whose raw ``column`` is not in ``frame`` (read from
    ``path``), in place: a cohort that did not measure a feature holds no value of it, as in real-world deployment.

    Returns:
        The canonical names of the absent features (logged with the file name).
    """
    absent = [spec for spec in specs if spec.column not in frame.columns]
    for spec in absent:
        frame[spec.column] = np.nan
    if absent:
        log.warning(
            "%s: %d of %d feature columns absent, treated as never measured: %s",
            path.name,
            len(absent),
            len(specs),
            ", ".join(spec.name for spec in absent),
        )
    return [spec.name for spec in absent]


def read_csv(path: Path, **kwargs) -> pd.DataFrame:
    """``pd.read_csv`` whose failures (missing, corrupt, unparseable file) end in :class:`DataError`."""
    try:
        return pd.read_csv(path, **kwargs)
    except (OSError, ValueError, pd.errors.ParserError, EOFError) as error:
        raise DataError(f"{path}: cannot read as CSV ({type(error).__name__}: {error})") from None


def numeric_columns(frame: pd.DataFrame, columns: list[str], path: Path, negative_missing: bool = True) -> pd.DataFrame:
    """Columns as float, NaN for blanks; raise :class:`DataError` naming the first non-numeric cell.

    With ``negative_missing`` (TJH, PhysioNet 2012: negative values are missing-value markers) they become NaN.
    """
    result = {}
    for column in columns:
        converted = pd.to_numeric(frame[column], errors="coerce")
        bad = converted.isna() & frame[column].notna() & (frame[column].astype(str).str.strip() != "")
        if bad.any():
            row = bad.to_numpy().nonzero()[0][0]
            raise DataError(
                f"{path}: column {column!r} has non-numeric value {frame[column].iloc[row]!r} (data row {row + 1})"
            )
        result[column] = converted.astype(float).where(converted >= 0) if negative_missing else converted.astype(float)
    return pd.DataFrame(result, index=frame.index)


def assign_splits(patients: pd.DataFrame, split_cfg: Mapping | str | None) -> pd.Series:
    """Split patients into train / val / test (the paper's protocol, seeded).

    Args:
        patients: one row per patient with the stratification label column.
        split_cfg: ``"none"`` (:data:`NO_SPLIT`, an external cohort: every patient is ``test``), or ``seed``;
            ``test_size`` (int count or float fraction of all patients); ``val_size`` (int count or float fraction
            of the non-test patients); ``stratify_test`` / ``stratify_val``; ``label`` (column used for
            stratification); optional ``group`` (a column, e.g. ``subject_id`` when rows are hospital admissions:
            a group's rows share one split, sizes count groups, a group is positive when any of its rows is);
            optional ``train_val_size`` (sample this many non-test units for train + val, the rest get no split:
            MIMIC-IV's 10,000).

    Returns:
        Series of split names aligned with ``patients`` (NaN for rows left out by ``train_val_size``).
    """
    if is_unsplit(split_cfg):
        return pd.Series("test", index=patients.index, dtype=object)
    if not isinstance(split_cfg, Mapping):
        raise ConfigError(
            f"dataset.split must be {NO_SPLIT!r} or a split protocol (seed, test_size, ...), got {split_cfg!r}"
        )
    label, group = split_cfg["label"], split_cfg.get("group") or "patient_id"
    if group not in patients.columns:
        raise ConfigError(f"dataset.split.group: column {group!r} is not in the cohort's patient table")
    units = patients.groupby(group, sort=False)[label].max()
    ids, labels = units.index.to_numpy(), units.to_numpy()
    train_val_size = split_cfg.get("train_val_size")
    try:
        rest, test, rest_y, _ = train_test_split(
            ids,
            labels,
            test_size=split_cfg["test_size"],
            random_state=split_cfg["seed"],
            stratify=labels if split_cfg["stratify_test"] else None,
        )
        if train_val_size and train_val_size < len(rest):
            rest, _, rest_y, _ = train_test_split(
                rest,
                rest_y,
                train_size=train_val_size,
                random_state=split_cfg["seed"],
                stratify=rest_y if split_cfg["stratify_val"] else None,
            )
        train, val = train_test_split(
            rest,
            test_size=split_cfg["val_size"],
            random_state=split_cfg["seed"],
            stratify=rest_y if split_cfg["stratify_val"] else None,
        )
    except ValueError as error:
        raise ConfigError(
            f"cannot split {len(ids)} {'patients' if group == 'patient_id' else group + ' groups'} with dataset.split "
            f"(test_size={split_cfg['test_size']}, val_size={split_cfg['val_size']}): {error}"
        ) from None
    names = {key: "train" for key in train} | {key: "val" for key in val} | {key: "test" for key in test}
    return patients[group].map(names)


def is_unsplit(split_cfg) -> bool:
    """Whether ``dataset.split`` is :data:`NO_SPLIT` (an external cohort, all of it ``test``)."""
    return isinstance(split_cfg, str) and split_cfg.strip().lower() == NO_SPLIT


def bound_values(values: pd.Series, spec: FeatureSpec, mode: str) -> tuple[pd.Series, int]:
    """One feature's values with those outside its ``valid_low`` / ``valid_high`` handled, and their count.

    Args:
        values: the feature's values (NaN = missing).
        spec: the feature (no bounds = nothing to do).
        mode: ``drop`` (outliers become NaN, i.e. missing) or ``clip`` (set to the nearest bound).
    """
    if mode not in OUTLIER_MODES:
        raise ConfigError(f"dataset.outliers must be one of {', '.join(OUTLIER_MODES)}, got {mode!r}")
    low = -np.inf if np.isnan(spec.valid_low) else spec.valid_low
    high = np.inf if np.isnan(spec.valid_high) else spec.valid_high
    outside = (values < low) | (values > high)
    clipped = values.clip(low, high)
    return (clipped.where(~outside) if mode == "drop" else clipped), int(outside.sum())


def apply_bounds(frame: pd.DataFrame, specs: tuple[FeatureSpec, ...], mode: str) -> tuple[pd.DataFrame, dict[str, int]]:
    """:func:`bound_values` for every feature column of a wide table (one float column per canonical name).

    Returns:
        The table (a copy) and canonical name -> number of outliers, for features that had any.
    """
    frame, counts = frame.copy(), {}
    for spec in specs:
        frame[spec.name], count = bound_values(frame[spec.name], spec, mode)
        if count:
            counts[spec.name] = count
    return frame, counts


def cohort_table(patients: pd.DataFrame, visits: pd.DataFrame, labels: list[str]) -> pd.DataFrame:
    """Patients, positives per label and visits per split (plus an ``all`` row)."""
    visit_counts = visits.groupby("patient_id").size()
    rows = {}
    for split in (*SPLITS, "all"):
        members = patients if split == "all" else patients[patients["split"] == split]
        counts = visit_counts.reindex(members["patient_id"]).fillna(0)
        row = {"patients": len(members)}
        row |= {f"{label}=1": int(members[label].sum()) for label in labels}
        row |= {"visits": int(counts.sum()), "visits/patient": round(float(counts.mean()), 2) if len(members) else 0}
        rows[split] = row
    return pd.DataFrame.from_dict(rows, orient="index")


def never_measured(patients: pd.DataFrame, visits: pd.DataFrame, features: FeatureTable) -> dict[str, int]:
    """Feature -> number of ``patients`` with no value of it at all (static: the patient row; dynamic: any visit),
    for features missing for at least one patient."""
    counts = {spec.name: int(patients[spec.name].isna().sum()) for spec in features.static}
    seen = visits.groupby("patient_id")[features.dynamic_names].count().reindex(patients["patient_id"]).fillna(0)
    counts |= {name: int((seen[name] == 0).sum()) for name in features.dynamic_names}
    return {name: count for name, count in counts.items() if count}


def _version_key(dataset_cfg: DictConfig, checksums: dict[str, str], features_text: str) -> str:
    dataset = OmegaConf.to_container(dataset_cfg, resolve=True)
    for key in NOT_PROCESSING_KEYS:
        dataset.pop(key, None)
    payload = json.dumps(
        {
            "processing_version": PROCESSING_VERSION,
            "dataset": dataset,
            "raw": checksums,
            "features": hashlib.sha256(features_text.encode()).hexdigest(),
        },
        sort_keys=True,
    )
    return hashlib.sha256(payload.encode()).hexdigest()[:12]


def filter_cohort(raw: RawCohort, features: FeatureTable, min_visits: int, drop_empty_visits: bool) -> RawCohort:
    """Drop visits without any measurement (optional) and patients with fewer than ``min_visits`` visits."""
    visits, dropped = raw.visits, dict(raw.dropped)
    if drop_empty_visits:
        visits = visits[visits[features.dynamic_names].notna().any(axis=1)]
    counts = visits.groupby("patient_id").size().reindex(raw.patients["patient_id"]).fillna(0)
    keep = counts[counts >= min_visits].index
    dropped[f"fewer than {min_visits} visits"] = int(len(counts) - len(keep))
    patients = raw.patients[raw.patients["patient_id"].isin(keep)].reset_index(drop=True)
    if patients.empty:
        raise DataError(
            f"empty cohort after filtering: 0 of {len(counts)} patients have >= {min_visits} visits "
            "(dataset.min_visits)"
        )
    visits = visits[visits["patient_id"].isin(keep)]
    return RawCohort(visits=visits, patients=patients, dropped=dropped)


def prepare_cohort(dataset_cfg: DictConfig, raw_source: str, data_dir: str | Path) -> Path:
    """Obtain, verify, process and split a dataset; return its cache folder (reused when up to date).

    Args:
        dataset_cfg: the ``dataset`` config group (raw files, loader, filters, split, features file); a file's
            own ``source`` overrides ``raw_source``; ``raw_files: null`` when the loader reads its input in place.
        raw_source: folder holding the raw files, or ``"upstream"`` to download them.
        data_dir: root of the local data cache (``paths.data_dir``).
    """
    data_dir = Path(data_dir).expanduser().resolve()
    name = dataset_cfg.name
    # an entry set to null is not read (e.g. dataset.raw_files.outcomes_b=null: one PhysioNet set, one outcome file)
    raw_files = [
        RawFile(key=key, path=entry.path, sha256=entry.sha256, url=entry.get("url"))
        for key, entry in (dataset_cfg.raw_files or {}).items()
        if entry is not None
    ]
    paths = {
        raw.key: obtain(
            raw,
            _raw_file_source(dataset_cfg, raw.key, raw_source),
            data_dir / "raw",
            f"dataset.raw_files.{raw.key}",
            link=dataset_cfg.link_raw,
        )
        for raw in raw_files
    }
    # an unverified file (a user's own cohort) still keys the cache by its content
    checksums = {raw.key: raw.sha256 or sha256_of(paths[raw.key]) for raw in raw_files}
    features_text = features_path(dataset_cfg.features_file).read_text()
    version = _version_key(dataset_cfg, checksums, features_text)
    directory = data_dir / "processed" / name / version
    if (directory / MANIFEST).is_file():
        log.info("cohort %s is up to date: %s", name, directory)
        return directory

    features = FeatureTable.load(dataset_cfg.features_file)
    load: Callable[..., RawCohort] = instantiate(dataset_cfg.loader, _partial_=True)
    log.info("processing %s from %s", name, ", ".join(str(p) for p in paths.values()))
    raw = load(files=paths, features=features)
    outlier_mode = dataset_cfg.get("outliers", "drop")
    raw.visits, dynamic_outliers = apply_bounds(raw.visits, features.dynamic, outlier_mode)
    raw.patients, static_outliers = apply_bounds(raw.patients, features.static, outlier_mode)
    outliers = dict(Counter(raw.outliers) + Counter(dynamic_outliers) + Counter(static_outliers))
    for feature, count in outliers.items():
        log.info("%s: %d values of %s outside its valid range (%s)", name, count, feature, outlier_mode)
    for reason, count in raw.ignored_rows.items():
        log.warning("%s: ignored %d raw rows (%s)", name, count, reason)
    cohort = filter_cohort(raw, features, dataset_cfg.min_visits, dataset_cfg.drop_empty_visits)
    patients = cohort.patients.copy()
    patients["split"] = assign_splits(patients, dataset_cfg.split)
    if patients["split"].isna().any():
        cohort.dropped["not sampled for train/val (dataset.split.train_val_size)"] = int(patients["split"].isna().sum())
        patients = patients[patients["split"].notna()].reset_index(drop=True)
    visits = cohort.visits[cohort.visits["patient_id"].isin(patients["patient_id"])]
    visits = visits.sort_values(["patient_id", "time"], kind="stable").reset_index(drop=True)
    visits.insert(1, "visit", visits.groupby("patient_id").cumcount())
    for reason, count in cohort.dropped.items():
        log.info("%s: dropped %d patients (%s)", name, count, reason)

    labels = list(dataset_cfg.labels)
    table = cohort_table(patients, visits, labels)
    manifest = {
        "dataset": name,
        "version": version,
        "processing_version": PROCESSING_VERSION,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "raw_files": {raw.key: {"path": raw.path, "sha256": checksums[raw.key]} for raw in raw_files},
        "features_file": dataset_cfg.features_file,
        "features": {"static": features.static_names, "dynamic": features.dynamic_names},
        "labels": labels,
        "time_unit": dataset_cfg.time_unit,
        "dropped": cohort.dropped,
        "outliers": {"mode": outlier_mode, "counts": outliers},
        "absent_features": raw.absent,
        "ignored_rows": raw.ignored_rows,
        "never_measured": never_measured(patients, visits, features),
        "cohort": table.to_dict(orient="index"),
        "splits": {split: patients.loc[patients["split"] == split, "patient_id"].tolist() for split in SPLITS},
        "config": OmegaConf.to_container(dataset_cfg, resolve=True),
    }
    staging = staging_folder(directory)
    staging.mkdir(parents=True)
    visits.to_parquet(staging / "visits.parquet", index=False)
    patients.to_parquet(staging / "patients.parquet", index=False)
    (staging / MANIFEST).write_text(json.dumps(manifest, indent=1, default=_json_default))
    if publish_folder(staging, directory, lambda folder: (folder / MANIFEST).is_file()):
        log.info("wrote %s", directory)
    return directory


def _raw_file_source(dataset_cfg: DictConfig, key: str, raw_source: str) -> str:
    """Where raw file ``key`` comes from: its own ``source`` entry when it has one, else ``paths.raw_source``."""
    entry = dataset_cfg.raw_files[key]
    if "source" not in entry:
        return raw_source
    if not entry.source:
        raise ConfigError(
            f"dataset.raw_files.{key}.source is not set: point it at the folder holding {entry.path}"
            + (" (dataset.cohort_dir)" if "cohort_dir" in dataset_cfg else "")
        )
    return str(entry.source)


def _json_default(value):
    if isinstance(value, np.integer | np.floating):
        return value.item()
    raise TypeError(f"not JSON serialisable: {type(value)}")
