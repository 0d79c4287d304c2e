"""Feature metadata: canonical names, units, reference ranges and aliases, shipped as CSVs in the package.

Each dataset names its metadata file in ``dataset.features_file``; the file's rows map raw columns to
canonical names, which every later stage uses (tensors, prompts, expert importances, parsed LLM answers).
"""

from __future__ import annotations

import difflib
import math
import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import pandas as pd

from eagrl.errors import ConfigError, DataError

RESOURCE_PACKAGE = "eagrl.data.resources"
REQUIRED_COLUMNS = ("column", "name", "kind", "unit", "ref_low", "ref_high", "aliases", "value_labels", "source")
#: optional columns: physiologically possible bounds; values outside them are outliers (see ``dataset.outliers``)
BOUND_COLUMNS = ("valid_low", "valid_high")


def normalise_name(text: str) -> str:
    """Lower-case, drop punctuation and collapse white space: the key used to match feature names."""
    return re.sub(r"[^0-9a-zα-ωµ]+", " ", text.lower()).strip()


@dataclass(frozen=True)
class FeatureSpec:
    """One feature's metadata.

    Attributes:
        column: column / parameter name in the raw data.
        name: canonical display name, used everywhere downstream.
        kind: ``static`` (one value per patient) or ``dynamic`` (one value per visit).
        unit: unit string, empty when unitless.
        ref_low, ref_high: reference interval bounds; NaN when open on that side.
        aliases: other names the feature goes by (abbreviations, the raw column name).
        value_labels: code -> text for coded categorical values (e.g. ``{1: "male"}``).
        source: where the unit and range come from.
        valid_low, valid_high: physiologically possible bounds (NaN = unbounded on that side); a value outside
            them is a recording error, dropped or clipped by :func:`eagrl.data.cohort.apply_bounds`.
    """

    column: str
    name: str
    kind: str
    unit: str = ""
    ref_low: float = math.nan
    ref_high: float = math.nan
    aliases: tuple[str, ...] = ()
    value_labels: dict[int, str] = field(default_factory=dict)
    source: str = ""
    valid_low: float = math.nan
    valid_high: float = math.nan

    def value_text(self, value: float) -> str | None:
        """The label of a coded value (``None`` when the feature is not coded or the code has no label)."""
        return self.value_labels.get(round(value)) if self.value_labels and not math.isnan(value) else None

    def flag(self, value: float) -> str | None:
        """``high`` / ``low`` for a value outside the reference interval, None inside it, for NaN or a coded
        feature (whose range is a label, not a bound)."""
        if self.value_labels or math.isnan(value):
            return None
        if value > self.ref_high:
            return "high"
        if value < self.ref_low:
            return "low"
        return None

    def reference_range(self) -> str:
        """Human-readable reference range: ``lo-hi``, ``<hi``, ``>lo``, a coded feature's label(s), or ``unknown``."""
        low, high = (None if math.isnan(x) else self.value_text(x) or f"{x:g}" for x in (self.ref_low, self.ref_high))
        if low and low == high:
            return low
        if low and high:
            return f"{low}-{high}"
        if high:
            return f"<{high}"
        if low:
            return f">{low}"
        return "unknown"


def _number(row, column: str, path: Path) -> float:
    """A numeric metadata cell (NaN when blank); :class:`DataError` naming the file, column and feature."""
    text = getattr(row, column)
    try:
        return float(text) if text else math.nan
    except ValueError:
        raise DataError(f"{path}: column {column!r} of feature {row.name!r} is {text!r}, expected a number") from None


def _parse_labels(text: str) -> dict[int, str]:
    labels = {}
    for item in filter(None, (part.strip() for part in text.split(";"))):
        code, _, label = item.partition("=")
        labels[int(float(code))] = label.strip()
    return labels


def features_path(file_name: str) -> Path:
    """Path of a metadata CSV: a user's file path, else a file shipped in ``eagrl/data/resources``."""
    path = Path(file_name)
    if path.is_file():
        return path
    candidate = resources.files(RESOURCE_PACKAGE) / file_name
    if not candidate.is_file():
        raise ConfigError(f"feature metadata file {file_name!r} not found (dataset.features_file)")
    return Path(str(candidate))


@dataclass(frozen=True)
class FeatureTable:
    """Ordered static and dynamic features of one dataset."""

    static: tuple[FeatureSpec, ...]
    dynamic: tuple[FeatureSpec, ...]

    @property
    def all(self) -> tuple[FeatureSpec, ...]:
        """Static then dynamic features (the order of expert importance vectors)."""
        return self.static + self.dynamic

    @property
    def static_names(self) -> list[str]:
        return [spec.name for spec in self.static]

    @property
    def dynamic_names(self) -> list[str]:
        return [spec.name for spec in self.dynamic]

    def by_name(self, name: str) -> FeatureSpec:
        """The feature called ``name`` (canonical); raises :class:`ConfigError` naming close matches."""
        for spec in self.all:
            if spec.name == name:
                return spec
        close = difflib.get_close_matches(name, [spec.name for spec in self.all], n=3)
        hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        raise ConfigError(f"unknown feature {name!r}{hint}")

    def alias_index(self) -> dict[str, str]:
        """Normalised name / alias / raw column -> canonical name (for parsing LLM output)."""
        index: dict[str, str] = {}
        for spec in self.all:
            for text in (spec.name, spec.column, *spec.aliases):
                index.setdefault(normalise_name(text), spec.name)
        return index

    @classmethod
    def load(cls, file_name: str) -> FeatureTable:
        """Load a metadata CSV from the package resources (or a path to a user's own CSV)."""
        path = features_path(file_name)
        try:
            frame = pd.read_csv(path, dtype=str, keep_default_na=False)
        except (OSError, ValueError, pd.errors.ParserError) as error:
            raise DataError(f"{path}: cannot read feature metadata as CSV ({type(error).__name__}: {error})") from None
        missing = [column for column in REQUIRED_COLUMNS if column not in frame.columns]
        if missing:
            raise DataError(f"{path}: missing column {missing[0]!r} in feature metadata")
        for column in BOUND_COLUMNS:
            if column not in frame.columns:
                frame[column] = ""
        specs = []
        for row in frame.itertuples(index=False):
            if row.kind not in ("static", "dynamic"):
                raise DataError(f"{path}: feature {row.name!r} has kind {row.kind!r}, expected static or dynamic")
            specs.append(
                FeatureSpec(
                    column=row.column,
                    name=row.name,
                    kind=row.kind,
                    unit=row.unit,
                    ref_low=_number(row, "ref_low", path),
                    ref_high=_number(row, "ref_high", path),
                    aliases=tuple(alias.strip() for alias in row.aliases.split(";") if alias.strip()),
                    value_labels=_parse_labels(row.value_labels),
                    source=row.source,
                    valid_low=_number(row, "valid_low", path),
                    valid_high=_number(row, "valid_high", path),
                )
            )
        return cls(
            static=tuple(spec for spec in specs if spec.kind == "static"),
            dynamic=tuple(spec for spec in specs if spec.kind == "dynamic"),
        )
