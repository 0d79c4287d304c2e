"""EHR-as-text: every feature once, seeded shuffles that move exactly round(p * F) lines, the token budget."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from omegaconf import OmegaConf

from eagrl.data.prompt import ABNORMAL_SUMMARY, build_prompt, shuffle_lines
from eagrl.errors import ConfigError
from tests.conftest import compose_config


@pytest.fixture(scope="module")
def cfg(data_root):
    return compose_config("data", ["dataset=tjh"], data_root)


def prompt_cfg(cfg, **changes):
    return OmegaConf.merge(cfg.prompt, changes)


def feature_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("- ")]


@pytest.mark.parametrize("style", ["vanilla", "think_answer", "pqd"])
@pytest.mark.parametrize("omit_unobserved", [False, True])
def test_every_feature_appears_exactly_once(tjh, data_root, style, omit_unobserved):
    cfg = compose_config(
        "data", ["dataset=tjh", f"prompt={style}", f"prompt.omit_unobserved={omit_unobserved}"], data_root
    )
    for prompt in tjh.prompts("test", cfg.task, cfg.prompt):
        lines = feature_lines(prompt.user)
        for name in tjh.features.dynamic_names:
            in_lines = sum(line.startswith(f"- {name} (") for line in lines)
            in_summary = (
                prompt.user.count(f"; {name};")
                + prompt.user.count(f": {name};")
                + prompt.user.count(f"; {name}.")
                + prompt.user.count(f": {name}.")
            )
            assert in_lines + in_summary == 1, (prompt.feature_order, name)
        demographics = next(line for line in prompt.user.splitlines() if line.startswith("Demographics:"))
        for name in tjh.features.static_names:
            assert demographics.count(f"{name}: ") == 1
        assert "<Final answer>" in prompt.user


def test_feature_line_format(tjh, cfg):
    prompt = build_prompt(tjh.records("test")[0], tjh.features, tjh.dataset_cfg, cfg.task, cfg.prompt)
    line = next(line for line in feature_lines(prompt.user) if line.startswith("- Hemoglobin ("))
    assert line.startswith("- Hemoglobin (Unit: g/L; Reference range: 130-175): [")
    assert line.endswith("]") and line.count(",") == len(tjh.records("test")[0].times) - 1


def test_readable_layout_flags_every_value_outside_its_range(tjh, cfg):
    """layout=latest + flags: one line per feature with the last visit's value, unit and (high)/(low) exactly when
    the value lies outside the feature table's reference range; C_exp candidates are the observed features."""
    readable = prompt_cfg(cfg, layout="latest", flags=True, significant_digits=3)
    flagged = 0
    for record in tjh.records("test")[:20]:
        prompt = build_prompt(record, tjh.features, tjh.dataset_cfg, cfg.task, readable)
        assert "(high) / (low) = outside the reference range" in prompt.user
        for line, name in zip(feature_lines(prompt.user), prompt.feature_order, strict=True):
            spec, column = tjh.features.by_name(name), record.values[:, tjh.features.dynamic_names.index(name)]
            value = column[-1]
            assert line.startswith(f"- {name}: ")
            expected = spec.flag(value)
            assert line.endswith(f"({expected})") if expected else not line.endswith(("(high)", "(low)"))
            flagged += expected is not None
            assert (name in prompt.observed_features) == bool(np.isfinite(column).any())
    assert flagged > 0


def test_abnormal_summary_names_exactly_the_features_flagged_at_the_last_visit(tjh, cfg):
    """abnormal_summary: one closing line lists the features out of range at the last visit, in line order, with
    their flags ("none" when there is none); without it the prompt has no such line."""
    summarised = prompt_cfg(cfg, layout="latest", flags=True, abnormal_summary=True)
    named_total = 0
    for record in tjh.records("test")[:20]:
        prompt = build_prompt(record, tjh.features, tjh.dataset_cfg, cfg.task, summarised)
        summary = [line for line in prompt.user.splitlines() if line.startswith(ABNORMAL_SUMMARY)]
        assert len(summary) == 1
        expected = []
        for name in prompt.feature_order:
            column = record.values[:, tjh.features.dynamic_names.index(name)]
            if flag := tjh.features.by_name(name).flag(column[-1]):
                expected.append(f"{name} ({flag})")
        assert summary[0] == f"{ABNORMAL_SUMMARY}: {'; '.join(expected) or 'none'}."
        named_total += len(expected)
        plain = build_prompt(record, tjh.features, tjh.dataset_cfg, cfg.task, cfg.prompt)
        assert ABNORMAL_SUMMARY not in plain.user
    assert named_total > 0


def test_visit_times_last_names_the_last_visit_only(tjh, cfg):
    """visit_times=last: the latest layout's header keeps the visit count and names the last time instead of listing
    every one; the feature lines are unchanged; an unknown value is refused."""
    listed, last = prompt_cfg(cfg, layout="latest"), prompt_cfg(cfg, layout="latest", visit_times="last")
    record = next(r for r in tjh.records("test") if len(r.times) >= 3)
    full = build_prompt(record, tjh.features, tjh.dataset_cfg, cfg.task, listed)
    short = build_prompt(record, tjh.features, tjh.dataset_cfg, cfg.task, last)
    assert f"[{', '.join(record.times)}]" in full.user and "[" not in short.user.split("Each line")[0]
    assert f"The record has {len(record.times)} visits (" in short.user
    assert f": the last at {record.times[-1]})." in short.user
    assert feature_lines(full.user) == feature_lines(short.user) and len(short.user) < len(full.user)
    with pytest.raises(ConfigError, match="visit_times"):
        build_prompt(record, tjh.features, tjh.dataset_cfg, cfg.task, prompt_cfg(cfg, visit_times="first"))


@pytest.mark.parametrize("fraction", [0.2, 0.4, 0.6, 1.0])
def test_shuffle_moves_round_p_times_f_lines_reproducibly(tjh, cfg, fraction):
    records = tjh.records("test")[:20]
    base = [build_prompt(r, tjh.features, tjh.dataset_cfg, cfg.task, cfg.prompt) for r in records]
    shuffled_cfg = prompt_cfg(cfg, shuffle_fraction=fraction, shuffle_seed=3)
    for record, original in zip(records, base, strict=True):
        shuffled = build_prompt(record, tjh.features, tjh.dataset_cfg, cfg.task, shuffled_cfg)
        again = build_prompt(record, tjh.features, tjh.dataset_cfg, cfg.task, shuffled_cfg)
        assert shuffled.user == again.user
        before, after = feature_lines(original.user), feature_lines(shuffled.user)
        assert sorted(before) == sorted(after)
        moved = sum(a != b for a, b in zip(before, after, strict=True))
        assert moved == round(fraction * len(before))
    other_seed = prompt_cfg(cfg, shuffle_fraction=fraction, shuffle_seed=4)
    differs = [
        build_prompt(r, tjh.features, tjh.dataset_cfg, cfg.task, other_seed).user
        != build_prompt(r, tjh.features, tjh.dataset_cfg, cfg.task, shuffled_cfg).user
        for r in records
    ]
    assert any(differs)


@given(st.integers(0, 40), st.floats(0, 1), st.integers(0, 2**32 - 1))
def test_shuffle_lines_counts(count, fraction, seed):
    lines = [f"line {i}" for i in range(count)]
    result = shuffle_lines(lines, fraction, np.random.default_rng(seed))
    moved = sum(a != b for a, b in zip(lines, result, strict=True))
    expected = round(fraction * count)
    assert sorted(result) == sorted(lines) and moved == (expected if expected >= 2 else 0)


def test_token_budget(tjh, cfg):
    record = max(tjh.records("test"), key=lambda r: len(r.times))
    budget = prompt_cfg(cfg, max_visits=2, features=["Hemoglobin", "Lactate dehydrogenase"], significant_digits=2)
    prompt = build_prompt(record, tjh.features, tjh.dataset_cfg, cfg.task, budget)
    lines = feature_lines(prompt.user)
    assert [line.split(" (")[0] for line in lines] == ["- Hemoglobin", "- Lactate dehydrogenase"]
    assert all(line.count(",") == 1 for line in lines)
    full = build_prompt(record, tjh.features, tjh.dataset_cfg, cfg.task, cfg.prompt)
    assert len(prompt.user) < len(full.user) / 3


def test_unknown_feature_is_a_clear_error(tjh, cfg):
    with pytest.raises(ConfigError, match=r"unknown feature 'Hemoglobn'.*'Hemoglobin'"):
        build_prompt(
            tjh.records("test")[0], tjh.features, tjh.dataset_cfg, cfg.task, prompt_cfg(cfg, features=["Hemoglobn"])
        )


def test_alias_index_maps_raw_columns_and_abbreviations(tjh):
    index = tjh.features.alias_index()
    assert index["hb"] == "Hemoglobin"
    assert index["hypersensitive cardiac troponini"] == "Hypersensitive cardiac troponin I"
