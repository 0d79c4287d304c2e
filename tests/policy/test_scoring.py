"""Continuous scores: greedy parse, the mean of sampled answers, and the expected ``0.dd`` under the policy's digit
probabilities (controlled logits, padding invariance, tokenizer checks); all three through eagrl-evaluate."""

from __future__ import annotations

import json
import math
import re
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
import torch

from eagrl.errors import ConfigError
from eagrl.policy.engine import EngineStats, Generation, GenerationEngine, PrefixCache, SamplingConfig
from eagrl.policy.scoring import (
    answer_context,
    check_score,
    digit_token_ids,
    generated_digits,
    pass_digits,
    score_answers,
)
from tests.conftest import compose_config
from tests.policy.conftest import tiny

ANSWERS = [
    "<Important Features> LDH </Important Features>\n<Final answer> 0.7 </Final answer>",
    "no answer at all",
    "<Final answer> 30% </Final answer>",
]


def _engine(model, tokenizer, batch_size=4):
    return GenerationEngine(model, tokenizer, batch_size=batch_size, progress=False)


def _prompts(engine, count):
    """Chat prompts of different lengths (so a batch is left-padded)."""
    return engine.encode_chat([[{"role": "user", "content": "patient " + "x" * 7 * index}] for index in range(count)])


@pytest.mark.parametrize(
    ("text", "context", "how"),
    [
        ("<Subquestion> a </Subquestion>\n<Final answer> 0.7 </Final answer>",
         "<Subquestion> a </Subquestion>\n<Final answer>", "tag"),
        ("x <final answer>0.3", "x <final answer>", "tag"),
        ("<Important Features> LDH </Important Features> then more", "<Important Features> LDH </Important Features>\n"
         "<Final answer>", "after_features"),
        ("I think it is bad.  \n", "I think it is bad.\n<Final answer>", "appended"),
        ("", "<Final answer>", "appended"),
    ],
)  # fmt: skip
def test_answer_context(text, context, how):
    assert answer_context(text) == (context, how)


def test_digit_tokens_of_the_byte_tokenizer_and_a_tokenizer_that_groups_digits(tiny_backbone):
    _, tokenizer = tiny_backbone
    assert [tokenizer.decode([token]) for token in digit_token_ids(tokenizer)] == [str(d) for d in range(10)]

    class GroupsDigits:
        """Spells two digits as one token, as Llama-3 does."""

        def __call__(self, text, add_special_tokens=False):
            pieces = re.findall(r"\d\d|.", text, re.S)
            return {"input_ids": [1000 + int(p) if len(p) == 2 else ord(p) for p in pieces]}

        def convert_ids_to_tokens(self, ids):
            return [str(token) for token in ids]

    with pytest.raises(ConfigError, match="spells each digit as one token"):
        digit_token_ids(GroupsDigits())


def test_check_score_refuses_unknown_methods_and_greedy_sampling():
    with pytest.raises(ConfigError, match="unknown score 'mean'"):
        check_score("mean", 8, 1.0)
    with pytest.raises(ConfigError, match="temperature > 0"):
        check_score("sample_mean", 8, 0.0)
    check_score("token_expectation", 0, 0.0)  # sampling settings matter to sample_mean only


def test_greedy_parses_and_counts_fallbacks(tiny_backbone):
    engine = _engine(*tiny_backbone)
    probabilities, details = score_answers(engine, _prompts(engine, 3), ANSWERS, method="greedy", fallback=0.5)
    np.testing.assert_allclose(probabilities, [0.7, 0.5, 0.3])
    assert details.method == "greedy" and details.counts["fallbacks"] == 1


class SampledTexts:
    """An engine stub that returns fixed samples and records how it was asked."""

    def __init__(self, texts):
        self.texts, self.calls, self.stats = texts, [], EngineStats(generated_tokens=12)

    def generate(self, prompt_ids, sampling, num_samples=1, keys=None, grammars=None):
        self.calls.append((sampling, num_samples, keys, grammars))
        return [[Generation(text, [], 0, "stop") for text in group] for group in self.texts]


def test_sample_mean_averages_parsed_samples_and_falls_back_when_none_parse():
    engine = SampledTexts(
        [["<Final answer> 0.2 </Final answer>", "<Final answer> 0.4 </Final answer>", "garbage"], ["x", "y", "z"]]
    )
    base = SamplingConfig(max_new_tokens=64, stop_strings=("</Final answer>",), seed=3)
    probabilities, details = score_answers(
        engine, [[1], [2]], ["", ""], method="sample_mean", samples=3, temperature=0.7, sampling=base,
        keys=["a", "b"], fallback=0.5, grammars=["g", None],
    )  # fmt: skip
    np.testing.assert_allclose(probabilities, [0.3, 0.5])
    ((sampling, num_samples, keys, grammars),) = engine.calls
    assert sampling == SamplingConfig(max_new_tokens=64, temperature=0.7, stop_strings=("</Final answer>",), seed=3)
    assert num_samples == 3 and keys == ["a", "b"] and grammars == ["g", None]
    assert details.counts.pop("seconds") >= 0
    assert details.counts == {
        "fallbacks": 1,
        "samples": 6,
        "samples_failed": 4,
        "temperature": 0.7,
        "generated_tokens": 12,
    }
    assert details.columns["samples_parsed"] == [2, 0]
    assert details.columns["sample_probabilities"][0][:2] == [0.2, 0.4] and math.isnan(
        details.columns["sample_probabilities"][0][2]
    )


def test_token_expectation_reads_the_controlled_digit_distribution():
    """Logits set by hand: after ``0.`` the digits 2 and 6 (p = 0.25, 0.75) and a non-digit token; after the first
    digit, 4. E = 0.25·0.2 + 0.75·0.6 + 4/100 = 0.54 whatever the answer, and a third of the mass was off digits."""
    model, tokenizer = tiny(seed=3)
    digits = digit_token_ids(tokenizer)
    after_dot = torch.full((model.config.vocab_size,), -1e4)
    after_dot[[digits[2], digits[6], tokenizer("a")["input_ids"][0]]] = torch.tensor([0.25, 0.75, 0.5]).log()
    after_digit = torch.full((model.config.vocab_size,), -1e4)
    after_digit[digits[4]] = 0.0

    def control(module, args, kwargs, output):
        output.logits[:] = after_dot if kwargs["input_ids"].shape[1] > 1 else after_digit  # the answer, or a digit
        return output

    model.register_forward_hook(control, with_kwargs=True)
    engine = _engine(model, tokenizer, batch_size=2)
    probabilities, details = score_answers(engine, _prompts(engine, 3), ANSWERS, method="token_expectation")
    np.testing.assert_allclose(probabilities, 0.54, atol=1e-6)
    np.testing.assert_allclose(details.columns["digit_mass"], 2 / 3, atol=1e-6)
    np.testing.assert_allclose(details.columns["expected_second_digit"], 4.0, atol=1e-6)
    assert details.columns["answer_context"] == ["tag", "appended", "tag"]
    assert details.counts["tag"] == 2 and details.counts["appended"] == 1 and details.counts["fallbacks"] == 0


def test_token_expectation_is_continuous_and_does_not_depend_on_the_batch(tiny_backbone):
    model, tokenizer = tiny_backbone
    answers = [*ANSWERS, "<Important Features> Glucose </Important Features>", "<Final answer>", "0.4"]
    batched = _engine(model, tokenizer, batch_size=4)
    prompt_ids = _prompts(batched, len(answers))
    together, _ = score_answers(batched, prompt_ids, answers, method="token_expectation")
    alone, _ = score_answers(_engine(model, tokenizer, batch_size=1), prompt_ids, answers, method="token_expectation")
    np.testing.assert_allclose(together, alone, atol=1e-5)
    assert ((together >= 0) & (together <= 0.99)).all() and len(set(together.round(6))) == len(answers)


def test_the_pass_on_cached_prompts_encodes_only_the_answers_and_agrees_with_the_full_pass(tiny_backbone):
    """While ``generate(keep_prompts=True)`` runs, a batch's prompts are in the prefix cache: the pass called from
    ``on_batch`` encodes each answer on its cached prompt (counted as reused prompt tokens) and gives the full
    pass's p₁, p₂ and mass."""
    model, tokenizer = tiny_backbone
    digits = digit_token_ids(tokenizer)
    cached = GenerationEngine(model, tokenizer, batch_size=4, progress=False, prefix_cache=PrefixCache(5))
    prompt_ids = _prompts(cached, 3)
    seen = {}

    def on_batch(batch, results):
        before = cached.stats.reused_prompt_tokens
        texts = [result[0].text for result in results]
        seen["digits"] = pass_digits(cached, [prompt_ids[index] for index in batch], texts, digits)
        seen.update(reused=cached.stats.reused_prompt_tokens - before, batch=batch, texts=texts)

    cached.generate(prompt_ids, SamplingConfig(max_new_tokens=12), keep_prompts=True, on_batch=on_batch)
    prompts = [prompt_ids[index] for index in seen["batch"]]
    assert len(prompts) == 3 and seen["reused"] == sum(map(len, prompts))
    full = pass_digits(_engine(model, tokenizer), prompts, seen["texts"], digits)
    for fast, slow in zip(seen["digits"], full, strict=True):
        assert fast.source == slow.source == "pass"
        np.testing.assert_allclose(fast.first, slow.first, atol=1e-5)
        np.testing.assert_allclose(fast.second, slow.second, atol=1e-5)
        assert fast.mass == pytest.approx(slow.mass, abs=1e-5)


#: tiny backbone, short answers, 6 TJH validation patients (a label-stratified sample), 2 samples per patient
TINY = ["backbone=tiny_random", "generation.max_new_tokens=6", "generation.batch_size=8", "split=val",
        "prompt.max_visits=1", "prompt.omit_unobserved=true", "max_patients=6", "score.samples=2"]  # fmt: skip


@pytest.fixture(scope="module")
def evaluate_dir(tmp_path_factory):
    """One folder for the three runs (TJH processed once); ``run/`` stands for the Hydra run directory."""
    folder = tmp_path_factory.mktemp("evaluate_scores")
    (folder / "run").mkdir()
    return folder


@pytest.mark.parametrize("method", ["greedy", "sample_mean", "token_expectation"])
def test_eagrl_evaluate_with_each_score(evaluate_dir, method):
    from eagrl.stages.evaluate import run

    overrides = [*TINY, f"paths.artifact_dir={evaluate_dir / 'artifacts'}", f"score.method={method}"]
    metrics = run(compose_config("evaluate", overrides, evaluate_dir))
    folder = next(path for path in (evaluate_dir / "artifacts").rglob("metrics.json")
                  if json.loads(path.read_text())["score"] == method).parent  # fmt: skip
    predictions = pd.read_parquet(folder / "predictions.parquet")
    assert metrics["score"] == method and (predictions["score"] == method).all() and len(predictions) == 6
    # a random model never answers in format: greedy and every sample fall back to 0.5, counted
    if method == "greedy":
        assert (predictions["probability"] == 0.5).all() and metrics["scoring"]["fallbacks"] == 6
    elif method == "sample_mean":
        assert (predictions["probability"] == 0.5).all() and (predictions["samples_parsed"] == 0).all()
        assert metrics["scoring"].items() >= {"samples": 12, "samples_failed": 12, "fallbacks": 6}.items()
    else:  # the digit probabilities still rank the patients
        assert predictions["probability"].nunique() == 6 and metrics["scoring"]["appended"] == 6
        # no answer wrote its own `<Final answer> 0.`: the pass scored each while its batch's prompts were cached,
        # and its digits were saved with the answer (a resumed run keeps them)
        saved = [json.loads(line) for line in (folder / "answers.jsonl").read_text().splitlines()]
        assert [row["answer_digits"][3] for row in saved] == ["pass"] * 6 and "answer_digits" not in predictions
        assert (predictions["digits_from"] == "pass").all() and metrics["scoring"]["digits_from_generation"] == 0
        assert metrics["val"]["auroc"]["mean"] != pytest.approx(0.5)
    assert metrics["parsing"]["parse_failure_rate"] == 1.0


def test_token_expectation_reads_a_greedy_answer_s_own_digits(scripted_backbone):
    """An answer that wrote ``<Final answer> 0.7`` carries p₁ and p₂ in its decoding steps: the score read off them
    equals the pass's; an answer whose tokens are not what the pass feeds (here: its text cut short) is left to the
    pass."""
    model, tokenizer, prompt_ids = scripted_backbone
    engine = _engine(model, tokenizer, batch_size=2)
    digits = digit_token_ids(tokenizer)
    sampling = SamplingConfig(max_new_tokens=80, stop_strings=("</Final answer>",))
    ((answer,),) = engine.generate([prompt_ids], sampling, watch=digits)
    assert "<Final answer> 0.7" in answer.text
    read = generated_digits(tokenizer, answer, digits)
    assert read is not None and max(range(10), key=read.first.__getitem__) == 7 and 0 < read.mass <= 1
    cut = replace(answer, text=answer.text[: answer.text.index("<Final answer>")])
    assert generated_digits(tokenizer, cut, digits) is None
    assert generated_digits(tokenizer, replace(answer, watched=None), digits) is None
    prompts, texts = [prompt_ids, prompt_ids], [answer.text, answer.text]
    passed, by_pass = score_answers(engine, prompts, texts, method="token_expectation")
    read_off, by_generation = score_answers(engine, prompts, texts, method="token_expectation", generated=[read, None])
    np.testing.assert_allclose(read_off, passed, atol=1e-5)
    np.testing.assert_allclose(by_generation.columns["digit_mass"], by_pass.columns["digit_mass"], atol=1e-5)
    assert by_generation.columns["digits_from"] == ["generation", "pass"]
    assert by_generation.counts["digits_from_generation"] == 1 and by_pass.counts["digits_from_generation"] == 0
