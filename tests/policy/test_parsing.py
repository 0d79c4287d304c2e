"""The answer parser: never raises, reads probabilities and canonicalises declared features."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from eagrl.data.features import FeatureTable
from eagrl.policy.parsing import FeatureVocabulary, ParseCounter, parse_answer

VOCABULARY = FeatureVocabulary(FeatureTable.load("tjh_features.csv"))
TAGS = ["<Final answer>", "</Final answer>", "<Important Features>", "</Important Features>", "<Answer>", "%", ";"]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(st.text(max_size=30), st.sampled_from(TAGS), st.floats().map(str)), max_size=12))
def test_arbitrary_text_never_raises(pieces):
    parsed = parse_answer("".join(pieces), VOCABULARY)
    assert parsed.probability is None or 0.0 <= parsed.probability <= 1.0
    assert set(parsed.features) <= set(VOCABULARY.index.values())


@settings(max_examples=100, deadline=None)
@given(st.one_of(st.none(), st.integers(), st.binary(max_size=20), st.lists(st.text(max_size=5), max_size=3)))
def test_non_text_never_raises(value):
    assert parse_answer(value, VOCABULARY).status == "no_final_answer"


@pytest.mark.parametrize(
    ("text", "probability", "status"),
    [
        ("<Final answer> 0.82 </Final answer>", 0.82, "ok"),
        ("<final  ANSWER>.4</final answer>", 0.4, "ok"),
        ("<Final answer> 73% </Final answer>", 0.73, "percent"),
        ("<Final answer> 0.3", 0.3, "unclosed"),
        ("<Final answer> 1.7 </Final answer>", None, "out_of_range"),
        ("<Final answer> 250 % </Final answer>", None, "out_of_range"),
        ("<Final answer> high risk </Final answer>", None, "no_number"),
        # the template's placeholder copied is no answer (it used to read as a confident 0.0)
        ("<Final answer> 0.xx </Final answer>", None, "no_number"),
        ("<Final answer> 0.7x </Final answer>", None, "no_number"),
        ("<Final answer> 0.85. </Final answer>", 0.85, "ok"),
        ("The probability is 0.9", None, "no_final_answer"),
        ("", None, "no_final_answer"),
    ],
)
def test_probability_statuses(text, probability, status):
    parsed = parse_answer(text, VOCABULARY)
    assert parsed.status == status
    assert parsed.probability == (pytest.approx(probability) if probability is not None else None)


@pytest.mark.parametrize(
    ("mention", "canonical"),
    [
        ("hs-cTnI", "Hypersensitive cardiac troponin I"),
        ("  HEMOGLOBIN ", "Hemoglobin"),
        ("Hemoglobin (g/L)", "Hemoglobin"),
        ("Hemoglobin: 120 g/L", "Hemoglobin"),
        ("1. Lymphocyte count", "Lymphocyte count"),
        ("- LDH", "Lactate dehydrogenase"),
        ("neutrophils(%)", "Neutrophil (%)"),
        ("Interleukin 6", "Interleukin-6"),
        ('"D-dimer"', "D-dimer"),
        ("Lactate dehydrogenas", "Lactate dehydrogenase"),
    ],
)
def test_aliases_units_and_values_canonicalise(mention, canonical):
    assert VOCABULARY.canonical(mention)[0] == canonical


def test_feature_list_is_ordered_deduplicated_and_counts_unknowns():
    text = "<Important Features> LDH; lactate dehydrogenase; hs-CRP, foo bar; ... </Important Features>"
    parsed = parse_answer(text + "<Final answer>0.5</Final answer>", VOCABULARY)
    assert parsed.features == ("Lactate dehydrogenase", "High-sensitivity C-reactive protein")
    assert parsed.unknown_features == ("foo bar",)
    assert parsed.has_features_tag


def test_counter_failure_rate():
    counter = ParseCounter()
    for text in ["<Final answer>0.2</Final answer>", "<Final answer>50%</Final answer>", "nothing", "<Final answer>x"]:
        counter.add(parse_answer(text, VOCABULARY))
    summary = counter.summary()
    assert summary["answers"] == 4
    assert math.isclose(summary["parse_failure_rate"], 0.5)
    assert summary["missing_features_tag"] == 4
    assert summary["pqd_format_rate"] == 0.0


def test_pqd_format_needs_the_features_block_and_a_probability():
    closing = "<Important Features> LDH </Important Features>\n<Final answer> 0.3 </Final answer>"
    assert parse_answer(closing, VOCABULARY).pqd_format
    assert not parse_answer("<Important Features> LDH </Important Features> no answer", VOCABULARY).pqd_format
    assert not parse_answer("<Final answer> 0.3 </Final answer>", VOCABULARY).pqd_format
