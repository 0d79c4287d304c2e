"""EHR as text (METHOD §2): one line per feature with unit, reference range and values over the visits.

    - Hemoglobin (Unit: g/L; Reference range: 130-175): [120, 118, NaN]

Coded features (``value_labels`` in the metadata, e.g. GCS) show their labels: ``[To Speech, Spontaneously]``.
Visit times come first, demographics are stated, then the task and the style's answer format
(``vanilla``, ``think_answer``, ``pqd``). The token budget is config: keep the last ``max_visits``, a
feature subset, ``significant_digits``, and ``omit_unobserved`` (never-measured features listed once by
name instead of a line of NaNs). ``shuffle_fraction`` permutes that fraction of the feature lines (the
paper's robustness test), seeded per patient. Readable prompts for small models: ``flags`` marks each value
outside its reference range ``(high)`` / ``(low)``, ``layout: latest`` shows each feature's last value alone, and
``abnormal_summary`` closes the record with one line naming the features out of range at the last visit:

    - Lactate dehydrogenase: 612 U/L (high)
    Outside the reference range at the last visit: Lactate dehydrogenase (high); Albumin (low).
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from eagrl.data.features import FeatureSpec, FeatureTable
from eagrl.errors import ConfigError

#: ``prompt.layout``: every shown visit's values per feature (the paper's) or the last visit's value alone
LAYOUTS = ("series", "latest")
#: what the latest layout's header says of the visit times: every one, or the last alone
VISIT_TIMES = ("all", "last")
#: start of the ``prompt.abnormal_summary`` line
ABNORMAL_SUMMARY = "Outside the reference range at the last visit"


@dataclass(frozen=True)
class PatientRecord:
    """One patient as the LLM sees it: raw units, LOCF-only (no imputation beyond carrying forward).

    Attributes:
        patient_id: cohort id.
        label: outcome (0/1) for the configured task.
        static: canonical name -> value (NaN when unknown).
        times: visit time labels (dates for TJH, hours for ICU data), length T.
        values: (T, F) dynamic values in feature-table order, NaN where nothing was observed yet.
    """

    patient_id: str
    label: int
    static: Mapping[str, float]
    times: tuple[str, ...]
    values: np.ndarray


@dataclass(frozen=True)
class ChatPrompt:
    """A system + user message pair, the dynamic features in the order their lines appear, and those lines
    (to find a feature's tokens in the prompt, e.g. for the policy's attention over it). ``observed_features``: the
    features the prompt shows with a value (static ones known, dynamic ones measured at a shown visit): the only
    ones the policy can be asked to name (C_exp is restricted to them)."""

    system: str
    user: str
    feature_order: tuple[str, ...]
    feature_lines: tuple[str, ...] = ()
    observed_features: tuple[str, ...] = ()

    def messages(self) -> list[dict[str, str]]:
        """Chat-template messages."""
        return [{"role": "system", "content": self.system}, {"role": "user", "content": self.user}]


def format_number(value: float, significant_digits: int, missing: str) -> str:
    """``value`` with at most ``significant_digits`` significant digits; ``missing`` for NaN."""
    if value is None or math.isnan(value):
        return missing
    return f"{value:.{significant_digits}g}"


def shuffle_lines(lines: list[str], fraction: float, rng: np.random.Generator) -> list[str]:
    """Move ``round(fraction * len(lines))`` lines: the chosen lines trade places in one cycle.

    Every chosen line lands on another chosen line's position, so exactly that many lines move (one line
    alone cannot move: a count of 1 moves nothing). Unchosen lines keep their positions.
    """
    if not 0.0 <= fraction <= 1.0:
        raise ConfigError(f"prompt.shuffle_fraction must be within [0, 1], got {fraction}")
    count = round(fraction * len(lines))
    if count < 2:
        return list(lines)
    chosen = rng.choice(len(lines), size=count, replace=False)
    shuffled = list(lines)
    for source, target in zip(chosen, np.roll(chosen, 1), strict=True):
        shuffled[target] = lines[source]
    return shuffled


def patient_rng(seed: int, patient_id: str) -> np.random.Generator:
    """A generator that depends only on ``seed`` and the patient (not on batch order)."""
    return np.random.default_rng([seed, zlib.crc32(patient_id.encode())])


def _static_text(spec: FeatureSpec, value: float, prompt_cfg: Mapping) -> str:
    if math.isnan(value):
        return f"{spec.name}: unknown"
    if spec.value_labels:
        return f"{spec.name}: {spec.value_text(value) or format_number(value, 4, '')}"
    unit = f" {spec.unit}" if spec.unit else ""
    return f"{spec.name}: {format_number(value, prompt_cfg['significant_digits'], '')}{unit}"


def value_text(spec: FeatureSpec, value: float, prompt_cfg: Mapping, unit: bool = False) -> str:
    """One value as the prompt shows it: a coded value's label, or the number rounded to ``significant_digits``
    (with its unit when ``unit``), then `` (high)`` / `` (low)`` outside the reference range when ``flags``."""
    label = spec.value_text(value)
    text = label or format_number(value, prompt_cfg["significant_digits"], prompt_cfg["missing_token"])
    if unit and spec.unit and not label and not math.isnan(value):
        text = f"{text} {spec.unit}"
    flag = spec.flag(value) if prompt_cfg.get("flags") else None
    return f"{text} ({flag})" if flag else text


def _feature_line(spec: FeatureSpec, column: np.ndarray, prompt_cfg: Mapping) -> str:
    """One feature line. ``series`` (the paper's): unit, reference range and every shown visit's value;
    ``latest``: the last shown visit's value and unit only (``- Lactate dehydrogenase: 612 U/L (high)``)."""
    if prompt_cfg.get("layout", "series") == "latest":
        return f"- {spec.name}: {value_text(spec, column[-1], prompt_cfg, unit=True)}"
    values = ", ".join(value_text(spec, v, prompt_cfg) for v in column)
    unit = spec.unit or "none"
    return f"- {spec.name} (Unit: {unit}; Reference range: {spec.reference_range()}): [{values}]"


def selected_features(features: FeatureTable, names: list[str] | None) -> list[int]:
    """Indices of the dynamic features to show (all when ``names`` is empty)."""
    if not names:
        return list(range(len(features.dynamic)))
    index = {name: position for position, name in enumerate(features.dynamic_names)}
    for name in names:
        if name not in index:
            features.by_name(name)  # raises with close matches when the name is unknown
            raise ConfigError(f"prompt.features: {name!r} is a static feature; list dynamic features only")
    return [index[name] for name in names]


def build_prompt(
    record: PatientRecord, features: FeatureTable, dataset_cfg: Mapping, task_cfg: Mapping, prompt_cfg: Mapping
) -> ChatPrompt:
    """Serialise one patient into a chat prompt.

    Args:
        record: the patient.
        features: the dataset's feature table.
        dataset_cfg: needs ``context`` (one sentence on the cohort) and ``time_description``.
        task_cfg: needs ``question`` (what to predict).
        prompt_cfg: the ``prompt`` group (style text and token budget, see conf/prompt/_base.yaml).
    """
    layout = prompt_cfg.get("layout", "series")
    if layout not in LAYOUTS:
        raise ConfigError(f"prompt.layout={layout!r}: use one of {', '.join(LAYOUTS)}")
    visit_times = prompt_cfg.get("visit_times", "all")
    if visit_times not in VISIT_TIMES:
        raise ConfigError(f"prompt.visit_times={visit_times!r}: use one of {', '.join(VISIT_TIMES)}")
    keep = prompt_cfg["max_visits"]
    times = record.times[-keep:] if keep else record.times
    values = record.values[-keep:] if keep else record.values
    columns = selected_features(features, prompt_cfg["features"])

    lines, order, unobserved, abnormal = [], [], [], {}
    observed = [spec.name for spec in features.static if not math.isnan(record.static[spec.name])]
    for column in columns:
        spec = features.dynamic[column]
        series = values[:, column]
        if np.isnan(series).all():
            unobserved.append(spec.name)
            if prompt_cfg["omit_unobserved"]:
                continue
        else:
            observed.append(spec.name)
        lines.append(_feature_line(spec, series, prompt_cfg))
        order.append(spec.name)
        if flag := spec.flag(series[-1]):
            abnormal[spec.name] = f"{spec.name} ({flag})"
    if prompt_cfg["shuffle_fraction"]:
        rng = patient_rng(prompt_cfg["shuffle_seed"], record.patient_id)
        permuted = shuffle_lines(list(range(len(lines))), prompt_cfg["shuffle_fraction"], rng)
        lines, order = [lines[i] for i in permuted], [order[i] for i in permuted]

    demographics = "; ".join(_static_text(spec, record.static[spec.name], prompt_cfg) for spec in features.static)
    legend = f"{prompt_cfg['missing_token']} = not measured yet" + (
        "; (high) / (low) = outside the reference range" if prompt_cfg.get("flags") else ""
    )
    if layout == "latest":
        when = f"[{', '.join(record.times)}]" if visit_times == "all" else f"the last at {record.times[-1]}"
        header = [
            f"The record has {len(record.times)} visits ({dataset_cfg['time_description']}: {when}). Each line "
            f"below is one feature's latest value at the last visit ({legend}):"
        ]
    else:
        header = [
            f"The record has {len(times)} visits. Visit times ({dataset_cfg['time_description']}): "
            f"[{', '.join(times)}]",
            f"Each line below is one feature with its unit, reference range and values at those visits in order "
            f"({legend}):",
        ]
    parts = [dataset_cfg["context"], f"Demographics: {demographics}.", *header, *lines]
    if unobserved and prompt_cfg["omit_unobserved"]:
        parts.append(f"Not measured at any visit: {'; '.join(unobserved)}.")
    if prompt_cfg.get("abnormal_summary"):
        named = "; ".join(abnormal[name] for name in order if name in abnormal) or "none"
        parts.append(f"{ABNORMAL_SUMMARY}: {named}.")
    parts += ["", f"Task: {task_cfg['question']}", prompt_cfg["instructions"].strip()]
    return ChatPrompt(
        system=prompt_cfg["system"].strip(),
        user="\n".join(parts),
        feature_order=tuple(order),
        feature_lines=tuple(lines),
        observed_features=tuple(observed),
    )
