"""Read an LLM answer: the probability in ``<Final answer>`` and the list in ``<Important Features>``.

Parsing never raises. Every answer gets a :class:`ParsedAnswer` whose ``status`` says how it was read (``ok``
or the fallback taken); callers count statuses (:class:`ParseCounter`) and score a missing probability with
the configured fallback (METHOD §1: 0.5). Declared features are canonicalised to the dataset's vocabulary
(case, punctuation, white space, a unit in brackets, a trailing value, aliases, near-misses).
"""

from __future__ import annotations

import difflib
import math
import re
from collections import Counter
from dataclasses import dataclass, field

from eagrl.data.features import FeatureTable, normalise_name

FINAL_ANSWER = re.compile(r"<\s*final\s*answer\s*>(?P<body>.*?)(?:<\s*/\s*final\s*answer\s*>|$)", re.I | re.S)
FEATURES = re.compile(
    r"<\s*important\s*features?\s*>(?P<body>.*?)(?:<\s*/\s*important\s*features?\s*>|<\s*final|$)", re.I | re.S
)
#: a number not glued to letters: the template's ``0.xx`` (or ``0.7x``) is no number, not the probability 0.0
#: (the value is atomic, so the regex cannot back off ``0.xx`` to read ``0``)
NUMBER = re.compile(r"(?<![\w.])(?P<value>(?>\d+(?:\.\d*)?|\.\d+))(?!\.?[A-Za-z_])\s*(?P<percent>%|percent)?", re.I)
#: separators between declared features
SEPARATORS = re.compile(r"[;\n,|]+")
#: leading list markers ("1.", "-", "*", "•") and surrounding quotes/brackets
DECORATION = re.compile(r"^\s*(?:\d+[.)]\s+|[-*•]+\s*)|[\"'`\[\]{}]")
#: a unit or note in brackets, or a value after a colon / equals sign / "is"
TRAILER = re.compile(r"\s*(?:\(.*?\)|\(.*$|[:=].*$|\s(?:is|was|of)\s.*$|\s[<>]?\s*[-+]?\d[\d.,]*\s*\S*$)")
#: similarity above which a misspelt name is accepted as a known feature (difflib ratio)
FUZZY_CUTOFF = 0.88
#: statuses that produced a probability
READ_STATUSES = ("ok", "percent", "unclosed")


@dataclass(frozen=True)
class ParsedAnswer:
    """What was read from one answer.

    Attributes:
        probability: ŷ in [0, 1], or None when none could be read.
        status: ``ok``, ``percent`` (``73%`` read as 0.73), ``unclosed`` (``<Final answer>`` never closed),
            ``no_final_answer``, ``no_number`` or ``out_of_range``.
        features: declared features mapped to canonical names, in order, without duplicates.
        unknown_features: declared items that match no feature of the dataset.
        fuzzy_matches: declared items accepted as a known feature only by near-match.
        has_features_tag: whether an ``<Important Features>`` block was present.
    """

    probability: float | None
    status: str
    features: tuple[str, ...] = ()
    unknown_features: tuple[str, ...] = ()
    fuzzy_matches: int = 0
    has_features_tag: bool = False

    @property
    def parsed(self) -> bool:
        return self.probability is not None

    @property
    def pqd_format(self) -> bool:
        """Whether the answer closes in the PQD format: an ``<Important Features>`` block and a readable
        ``<Final answer>`` probability."""
        return self.parsed and self.has_features_tag


class FeatureVocabulary:
    """Maps free-text feature mentions to a dataset's canonical feature names."""

    def __init__(self, features: FeatureTable):
        self.index = features.alias_index()
        self._keys = list(self.index)

    def canonical(self, mention: str) -> tuple[str | None, bool]:
        """``(canonical name or None, whether a near-match was needed)`` for one declared item."""
        cleaned = DECORATION.sub("", mention).strip()
        candidates = [cleaned, TRAILER.sub("", cleaned).strip()]
        for candidate in candidates:
            key = normalise_name(candidate)
            if key in self.index:
                return self.index[key], False
        key = normalise_name(candidates[-1])
        if not key:
            return None, False
        close = difflib.get_close_matches(key, self._keys, n=1, cutoff=FUZZY_CUTOFF)
        return (self.index[close[0]], True) if close else (None, False)

    def parse_list(self, body: str) -> tuple[tuple[str, ...], tuple[str, ...], int]:
        """Canonical features, unknown items and the number of near-matches in a separated list."""
        known: list[str] = []
        unknown: list[str] = []
        fuzzy = 0
        for item in SEPARATORS.split(body):
            if not item.strip() or item.strip() in ("...", "…"):
                continue
            name, near = self.canonical(item)
            if name is None:
                unknown.append(item.strip()[:80])
            elif name not in known:
                known.append(name)
                fuzzy += near
        return tuple(known), tuple(unknown), fuzzy


def read_probability(body: str) -> tuple[float | None, str]:
    """The first number of a ``<Final answer>`` body as a probability, and the status."""
    match = NUMBER.search(body)
    if match is None:
        return None, "no_number"
    try:
        value = float(match.group("value"))
    except ValueError:
        return None, "no_number"
    if match.group("percent"):
        return (value / 100, "percent") if 0 <= value <= 100 else (None, "out_of_range")
    if not 0 <= value <= 1 or math.isnan(value):
        return None, "out_of_range"
    return value, "ok"


def parse_answer(text: object, vocabulary: FeatureVocabulary | None = None) -> ParsedAnswer:
    """Parse one answer; never raises (a non-string is read as empty text)."""
    text = text if isinstance(text, str) else ""
    features: tuple[str, ...] = ()
    unknown: tuple[str, ...] = ()
    fuzzy = 0
    feature_match = FEATURES.search(text)
    if feature_match and vocabulary is not None:
        features, unknown, fuzzy = vocabulary.parse_list(feature_match.group("body"))
    answer = FINAL_ANSWER.search(text)
    if answer is None:
        probability, status = None, "no_final_answer"
    else:
        probability, status = read_probability(answer.group("body"))
        closed = re.search(r"<\s*/\s*final\s*answer\s*>", text[answer.start() :], re.I)
        if probability is not None and status == "ok" and not closed:
            status = "unclosed"
    return ParsedAnswer(
        probability=probability,
        status=status,
        features=features,
        unknown_features=unknown,
        fuzzy_matches=fuzzy,
        has_features_tag=feature_match is not None,
    )


@dataclass
class ParseCounter:
    """Counts of parse statuses over many answers (for logs and ``metrics.json``)."""

    statuses: Counter = field(default_factory=Counter)
    missing_features_tag: int = 0
    pqd_format: int = 0
    unknown_features: int = 0
    fuzzy_matches: int = 0

    def add(self, parsed: ParsedAnswer) -> None:
        self.statuses[parsed.status] += 1
        self.missing_features_tag += not parsed.has_features_tag
        self.pqd_format += parsed.pqd_format
        self.unknown_features += len(parsed.unknown_features)
        self.fuzzy_matches += parsed.fuzzy_matches

    @property
    def total(self) -> int:
        return sum(self.statuses.values())

    @property
    def failure_rate(self) -> float:
        """Fraction of answers with no readable probability."""
        failed = sum(count for status, count in self.statuses.items() if status not in READ_STATUSES)
        return failed / self.total if self.total else math.nan

    def summary(self) -> dict:
        return {
            "answers": self.total,
            "parse_failure_rate": self.failure_rate,
            "statuses": dict(self.statuses),
            "missing_features_tag": self.missing_features_tag,
            "pqd_format_rate": self.pqd_format / self.total if self.total else math.nan,
            "unknown_features": self.unknown_features,
            "fuzzy_matches": self.fuzzy_matches,
        }
