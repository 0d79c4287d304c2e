"""TJH: Tongji Hospital COVID-19 cohort (Yan et al., Nat. Mach. Intell. 2020), the EAG-RL paper's TJH.

Protocol (ClinicRealm / EAG-RL, METHOD §1): one row per lab draw with ``PATIENT_ID`` only on a patient's
first row (forward-filled); rows without a record date dropped; negative values are missing; the
'2019-nCoV nucleic acid detection' column dropped (it is not in the feature table); rows merged per patient
per calendar day (mean of the day's draws); demographics age and sex (raw 1 = male, 2 = female -> 1 / 0);
label ``mortality`` = ``outcome`` (1 = died in hospital). A workbook in this format from elsewhere needs
``PATIENT_ID``, ``RE_DATE`` and ``outcome``; a feature column it lacks is a feature never measured (all missing,
logged), as for a hospital that measured only some of the labs.

    eagrl-data dataset=tjh
"""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd

from eagrl.data.cohort import RawCohort, add_absent_columns, numeric_columns, require_columns
from eagrl.data.features import FeatureTable
from eagrl.errors import DataError

log = logging.getLogger(__name__)

PATIENT = "PATIENT_ID"
RECORD_DATE = "RE_DATE"
OUTCOME = "outcome"
SEX = "gender"
#: raw ``gender`` code -> our ``Sex`` code (1 male, 0 female)
SEX_CODES = {1: 1.0, 2: 0.0}
#: workbook columns that are not features (kept by :func:`subset_workbook`)
RECORD_COLUMNS = (PATIENT, RECORD_DATE, "Admission time", "Discharge time", OUTCOME)


def read_workbook(path: Path) -> pd.DataFrame:
    """The first sheet of an Excel workbook; a corrupt file ends in :class:`DataError`."""
    try:
        return pd.read_excel(path)
    except Exception as error:  # openpyxl / zipfile raise many types for a corrupt workbook
        raise DataError(f"{path}: cannot read as an Excel workbook ({type(error).__name__}: {error})") from None


def load_tjh(files: dict[str, Path], features: FeatureTable) -> RawCohort:
    """Turn the TJH workbook into day-level visits and per-patient demographics and labels.

    Args:
        files: ``{"xlsx": path}`` of the verified raw workbook.
        features: the TJH feature table (raw column -> canonical name).

    Returns:
        Visits with ``time`` in days since the patient's first record day and ``time_label`` the date.
    """
    path = files["xlsx"]
    frame = read_workbook(path)
    static_columns = [spec.column for spec in features.static]
    dynamic_columns = [spec.column for spec in features.dynamic]
    require_columns(frame, [PATIENT, RECORD_DATE, OUTCOME], path)
    absent = add_absent_columns(frame, features.all, path)

    frame[PATIENT] = frame[PATIENT].ffill()
    if frame[PATIENT].isna().any():
        raise DataError(f"{path}: column {PATIENT!r} is empty on the first row(s); cannot assign them to a patient")
    dates = pd.to_datetime(frame[RECORD_DATE], errors="coerce")
    unparsed = dates.isna() & frame[RECORD_DATE].notna()
    if unparsed.any():
        row = unparsed.to_numpy().nonzero()[0][0]
        raise DataError(f"{path}: column {RECORD_DATE!r} has an unparseable date {frame[RECORD_DATE].iloc[row]!r}")
    all_patients = frame[PATIENT].unique()
    dated = dates.notna()
    frame, dates = frame[dated], dates[dated]

    ids = frame[PATIENT].map(lambda value: str(int(value)) if isinstance(value, float) else str(value))
    values = numeric_columns(frame, dynamic_columns, path)
    values.columns = features.dynamic_names
    values.insert(0, "patient_id", ids)
    values.insert(1, "day", dates.dt.normalize())
    visits = values.groupby(["patient_id", "day"], sort=True).mean().reset_index()
    first_day = visits.groupby("patient_id")["day"].transform("min")
    visits.insert(1, "time", (visits["day"] - first_day).dt.days.astype(float))
    visits.insert(2, "time_label", visits["day"].dt.strftime("%Y-%m-%d"))
    visits = visits.drop(columns="day")

    per_patient = pd.DataFrame({"patient_id": ids})
    statics = numeric_columns(frame, [*static_columns, OUTCOME], path)
    statics[SEX] = statics[SEX].map(SEX_CODES)
    for spec in features.static:
        per_patient[spec.name] = statics[spec.column].to_numpy()
    per_patient["mortality"] = statics[OUTCOME].to_numpy()
    patients = per_patient.groupby("patient_id", sort=True).first().reset_index()
    unlabelled = patients["mortality"].isna() | ~patients["mortality"].isin([0.0, 1.0])
    if unlabelled.any():
        raise DataError(
            f"{path}: column {OUTCOME!r} must be 0 or 1 for every patient "
            f"(patient {patients.loc[unlabelled, 'patient_id'].iloc[0]})"
        )
    patients["mortality"] = patients["mortality"].astype(int)
    dropped = {"no dated record": int(len(all_patients) - len(patients))}
    return RawCohort(visits=visits, patients=patients, dropped=dropped, absent=absent)


def subset_workbook(
    source: Path, target: Path, features: FeatureTable, keep: list[str], patients: list[str] | None = None
) -> Path:
    """Write a copy of the TJH-format workbook ``source`` to ``target`` that holds only the features ``keep``
    (canonical names; the other feature columns are left out, as in a hospital that did not measure them) and,
    when given, only the ``patients`` (ids as :func:`load_tjh` reads them); return ``target``."""
    frame = read_workbook(source)
    columns = [column for column in RECORD_COLUMNS if column in frame.columns]
    columns += [features.by_name(name).column for name in keep]
    require_columns(frame, columns, source)
    frame[PATIENT] = frame[PATIENT].ffill()
    if patients is not None:
        ids = frame[PATIENT].map(lambda value: str(int(value)) if isinstance(value, float) else str(value))
        frame = frame[ids.isin(set(patients))]
    target.parent.mkdir(parents=True, exist_ok=True)
    frame[columns].to_excel(target, index=False)
    return target
