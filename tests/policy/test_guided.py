"""Guided decoding on the tiny random model (byte tokenizer): a constrained span only ever names features of the
prompt and gives a readable ``0.dd``, where the same model unconstrained writes bytes that parse as nothing."""

from __future__ import annotations

import re

import pytest

from eagrl.policy.engine import GenerationEngine, SamplingConfig
from eagrl.policy.guided import Guide, answer_grammar, feature_list_grammar, probability_grammar
from eagrl.policy.parsing import parse_answer

NAMES = ("LDH", "Albumin", "D-dimer", "Lymphocyte (%)")
FEATURES = "<Important Features>", "</Important Features>"
FINAL = "<Final answer>", "</Final answer>"
SAMPLES = 6


def _listed(text: str) -> list[str]:
    """The names of a feature-list span written after ``<Important Features>``."""
    return [item.strip() for item in text.removesuffix(FEATURES[1]).split(";")]


def _spans(tiny_backbone, opening: str, close: str, grammar: str | None, budget: int, batch_size: int = 16):
    """SAMPLES sampled continuations of a chat prompt ending in ``opening``, beside a free prompt in the batch."""
    model, tokenizer = tiny_backbone
    engine = GenerationEngine(model, tokenizer, batch_size=batch_size, progress=False)
    prompts = engine.encode_chat([[{"role": "user", "content": f"patient {n}"}] for n in range(2)], [opening] * 2)
    sampling = SamplingConfig(max_new_tokens=budget, temperature=1.0, stop_strings=(close,), seed=1)
    guided, free = engine.generate(prompts, sampling, num_samples=SAMPLES, grammars=[grammar, None])
    return guided, free, engine


@pytest.mark.parametrize("batch_size", [16, 4])
def test_feature_list_names_only_prompt_features(tiny_backbone, batch_size):
    grammar = feature_list_grammar(NAMES, 3)
    guided, free, engine = _spans(tiny_backbone, FEATURES[0], FEATURES[1], grammar, 80, batch_size)
    for answer in guided:
        names = _listed(answer.text)
        assert answer.finish_reason == "stop" and answer.text.endswith(FEATURES[1])
        assert 1 <= len(names) <= 3 and set(names) <= set(NAMES) and len(set(names)) == len(names)
    assert len({answer.text for answer in guided}) > 1  # still sampled, not one forced answer
    # the free row beside them (and the model itself) writes no feature list
    assert not any(set(_listed(answer.text)) <= set(NAMES) for answer in free)
    assert engine.stats.guide_seconds > 0


def test_probability_is_read_as_two_decimals(tiny_backbone):
    guided, free, _ = _spans(tiny_backbone, FINAL[0], FINAL[1], probability_grammar(), 24)
    for answer in guided:
        parsed = parse_answer(FINAL[0] + answer.text)
        assert answer.finish_reason == "stop" and re.fullmatch(r" 0\.\d\d </Final answer>", answer.text)
        assert parsed.status == "ok" and parsed.probability == float(answer.text.split()[0])
    assert not any(parse_answer(FINAL[0] + answer.text).parsed for answer in free)


def test_whole_answer_guides_from_the_models_own_tag(scripted_backbone):
    """RL / evaluation: free text until the model writes ``<Important Features>`` itself, then both spans."""
    model, tokenizer, prompt_ids = scripted_backbone
    engine = GenerationEngine(model, tokenizer, progress=False)
    sampling = SamplingConfig(max_new_tokens=120, stop_strings=(FINAL[1],))
    (free,), (guided,) = engine.generate([prompt_ids] * 2, sampling, grammars=[None, answer_grammar(["Albumin"], 2)])
    assert free.text == "<Important Features> LDH </Important Features>\n<Final answer> 0.7 </Final answer>"
    assert re.fullmatch(r"<Important Features> Albumin </Important Features>\n<Final answer> 0\.7\d </Final answer>",
                        guided.text)  # fmt: skip
    assert guided.finish_reason == "stop" and parse_answer(guided.text).status == "ok"


def test_distinct_names_beyond_the_parameter_bits_may_repeat(tiny_backbone):
    """Names past the 64th have no bit: the grammar still accepts them (repeated), never an unknown name."""
    _, tokenizer = tiny_backbone
    guide = Guide(tokenizer)
    names = [f"f{n}" for n in range(70)]
    grammar = feature_list_grammar(names, 3)

    def accepts(text: str) -> bool:
        matcher = guide.matcher(grammar)
        return matcher.consume_tokens(tokenizer(text, add_special_tokens=False)["input_ids"]) and matcher.is_stopped()

    assert accepts(" f1; f65 </Important Features>") and accepts(" f69; f69 </Important Features>")
    assert not accepts(" f1; f1 </Important Features>")
    assert not accepts(" f1; f2; f3; f4 </Important Features>")
    assert not accepts(" f70 </Important Features>")


def test_a_list_shorter_than_min_features_is_refused(tiny_backbone):
    _, tokenizer = tiny_backbone
    guide = Guide(tokenizer)

    def accepts(grammar: str, text: str) -> bool:
        matcher = guide.matcher(grammar)
        return matcher.consume_tokens(tokenizer(text, add_special_tokens=False)["input_ids"]) and matcher.is_stopped()

    at_least_two = feature_list_grammar(NAMES, 3, min_features=2)
    assert not accepts(at_least_two, f" {NAMES[0]} </Important Features>")
    assert accepts(at_least_two, f" {NAMES[0]}; {NAMES[1]} </Important Features>")
    # capped at the names there are: a one-name prompt still closes
    assert accepts(feature_list_grammar(NAMES[:1], 5, min_features=3), f" {NAMES[0]} </Important Features>")


def test_a_grammar_needs_a_name_and_a_valid_size():
    with pytest.raises(ValueError, match="at least one feature name"):
        feature_list_grammar([], 3)
    with pytest.raises(ValueError, match="max_features"):
        feature_list_grammar(NAMES, 0)
