"""The generation engine: same tokens as ``model.generate``, stop strings, seeded sampling, shared prefill."""

from __future__ import annotations

import pytest
import torch
from transformers.cache_utils import Cache

from eagrl.policy.engine import GenerationEngine, PrefixCache, SamplingConfig
from tests.policy.conftest import SCRIPTED_ANSWER, tiny

LENGTHS = (5, 40, 17, 3, 60, 26)


def _encode(engine: GenerationEngine, lengths=LENGTHS) -> list[list[int]]:
    return engine.encode_chat([[{"role": "user", "content": "x" * n}] for n in lengths])


@pytest.mark.parametrize("batch_size", [1, 4, 16])
def test_greedy_matches_model_generate(tiny_backbone, batch_size):
    model, tokenizer = tiny_backbone
    engine = GenerationEngine(model, tokenizer, batch_size=batch_size, progress=False)
    prompts = _encode(engine)
    answers = engine.generate(prompts, SamplingConfig(max_new_tokens=24))
    for ids, (answer,) in zip(prompts, answers, strict=True):
        reference = model.generate(
            torch.tensor([ids]), max_new_tokens=24, do_sample=False, pad_token_id=tokenizer.pad_token_id
        )[0, len(ids) :].tolist()
        assert answer.token_ids == [t for t in reference if t != tokenizer.eos_token_id][: len(answer.token_ids)]
        assert answer.prompt_tokens == len(ids)
    assert engine.stats.generated_tokens == sum(len(a[0].token_ids) for a in answers)


def test_packed_attention_matches_plain_sdpa():
    """eagrl_sdpa (packed grouped-query decode) gives the logits of transformers' sdpa."""
    outputs = []
    for implementation in ("sdpa", "eagrl_sdpa"):
        model, tokenizer = tiny(implementation)
        engine = GenerationEngine(model, tokenizer, batch_size=4, progress=False)
        outputs.append(engine.generate(_encode(engine), SamplingConfig(max_new_tokens=16)))
    assert [[a.token_ids for a in row] for row in outputs[0]] == [[a.token_ids for a in row] for row in outputs[1]]


def test_sampling_is_seeded_per_sequence_not_per_batch(tiny_backbone):
    model, tokenizer = tiny_backbone
    sampling = SamplingConfig(max_new_tokens=12, temperature=1.0, top_p=0.9, top_k=40, seed=3)
    keys = [f"patient-{n}" for n in LENGTHS]
    runs = []
    for batch_size in (1, 8):
        engine = GenerationEngine(model, tokenizer, batch_size=batch_size, progress=False)
        runs.append(engine.generate(_encode(engine), sampling, num_samples=2, keys=keys))
    assert [[a.token_ids for a in row] for row in runs[0]] == [[a.token_ids for a in row] for row in runs[1]]
    # the two samples of a prompt differ (different generators), and another seed changes the draw
    assert any(row[0].token_ids != row[1].token_ids for row in runs[0])
    engine = GenerationEngine(model, tokenizer, batch_size=8, progress=False)
    other = engine.generate(_encode(engine), SamplingConfig(**{**sampling.__dict__, "seed": 4}), 2, keys)
    assert [[a.token_ids for a in row] for row in other] != [[a.token_ids for a in row] for row in runs[0]]


def test_samples_share_one_prefill(tiny_backbone):
    model, tokenizer = tiny_backbone
    engine = GenerationEngine(model, tokenizer, batch_size=8, progress=False)
    prompts = _encode(engine)
    calls = []
    handle = model.register_forward_pre_hook(lambda module, args, kwargs: calls.append(kwargs["input_ids"].shape),
                                             with_kwargs=True)  # fmt: skip
    try:
        answers = engine.generate(prompts, SamplingConfig(max_new_tokens=4, temperature=1.0), num_samples=4)
    finally:
        handle.remove()
    prefill_calls = [shape for shape in calls if shape[1] > 1]
    assert len(prefill_calls) == len(prompts)
    assert all(len(row) == 4 for row in answers)
    assert engine.stats.prompt_tokens == sum(map(len, prompts))


def test_stops_on_stop_string_and_cuts_text(scripted_backbone):
    model, tokenizer, prompt_ids = scripted_backbone
    engine = GenerationEngine(model, tokenizer, batch_size=4, progress=False)
    budget = 200
    sampling = SamplingConfig(max_new_tokens=budget, stop_strings=("</Final answer>",))
    [[free]] = engine.generate([prompt_ids], SamplingConfig(max_new_tokens=len(SCRIPTED_ANSWER) + 8))
    [[answer]] = engine.generate([prompt_ids], sampling)
    stop_at = SCRIPTED_ANSWER.index("</Final answer>") + len("</Final answer>")
    assert free.text.startswith(SCRIPTED_ANSWER[:stop_at]), "the tiny model did not learn its script"
    assert answer.finish_reason == "stop"
    assert answer.text == SCRIPTED_ANSWER[:stop_at]
    assert len(answer.token_ids) < budget
    assert engine.stats.finish_reasons == {"stop": 1}


def test_rows_finishing_early_do_not_change_the_others(scripted_backbone, tiny_backbone):
    """A batch where one row stops at once decodes the other rows exactly as alone."""
    model, tokenizer, prompt_ids = scripted_backbone
    engine = GenerationEngine(model, tokenizer, batch_size=8, progress=False)
    others = _encode(engine, (9, 31))
    sampling = SamplingConfig(max_new_tokens=30, stop_strings=("<Important",))
    together = engine.generate([prompt_ids, *others], sampling)
    alone = [engine.generate([ids], sampling)[0] for ids in others]
    assert together[0][0].finish_reason == "stop"
    assert [row[0].token_ids for row in together[1:]] == [row[0].token_ids for row in alone]


def test_empty_prompt_is_refused(tiny_backbone):
    engine = GenerationEngine(*tiny_backbone, progress=False)
    with pytest.raises(ValueError, match="empty prompt"):
        engine.generate([[]], SamplingConfig(max_new_tokens=2))


def test_prefix_cache_gives_the_same_answers_and_encodes_only_suffixes(tiny_backbone):
    model, tokenizer = tiny_backbone
    plain = GenerationEngine(model, tokenizer, batch_size=8, progress=False)
    # the search's engine: registered records, no shared start of its own (tested below)
    cached = GenerationEngine(
        model, tokenizer, batch_size=8, progress=False, prefix_cache=PrefixCache(), share_prefix=False
    )
    prefixes = _encode(plain, (30, 50))
    extended = [prefix + tokenizer("<Subquestion> more", add_special_tokens=False)["input_ids"] for prefix in prefixes]
    sampling = SamplingConfig(max_new_tokens=10)
    cached.add_prefixes(prefixes)
    assert cached.stats.prompts == 2 and len(cached.prefix_cache.entries) == 2
    widths = []
    handle = model.register_forward_pre_hook(lambda m, a, kw: widths.append(kw["input_ids"].shape[1]), with_kwargs=True)
    try:
        with_cache = cached.generate(extended + prefixes, sampling)
    finally:
        handle.remove()
    without = plain.generate(extended + prefixes, sampling)
    assert [[a.token_ids for a in row] for row in with_cache] == [[a.token_ids for a in row] for row in without]
    suffix = len(extended[0]) - len(prefixes[0])
    # prefills: each extended prompt encodes its suffix only, each registered prompt its last token only
    assert sorted(w for w in widths if w > 1)[-2:] == [suffix, suffix]
    assert cached.stats.reused_prompt_tokens == sum(map(len, prefixes)) * 2 - 2


def test_a_call_encodes_the_shared_start_once_and_forgets_what_it_stored():
    """generate() encodes the tokens every prompt starts with once and, with keep_prompts, keeps each prompt for
    on_batch; it forgets both when it returns (a prefix the caller registered stays). So after the weights change,
    the same engine decodes what a fresh engine decodes: the same tokens and the same step logits."""
    model, tokenizer = tiny(seed=5)
    engine = GenerationEngine(model, tokenizer, batch_size=4, progress=False, prefix_cache=PrefixCache(5))
    prompts = _encode(engine, (20, 25, 30))
    engine.add_prefixes(prompts[:1])
    sampling, watch = SamplingConfig(max_new_tokens=6), list(range(40, 60))
    during = []
    engine.generate(
        prompts[1:], sampling, keep_prompts=True, on_batch=lambda *_: during.append(len(engine.prefix_cache.entries))
    )
    # the registered prompt, the two prompts' shared start, and the two prompts
    assert during == [4] and engine.stats.reused_prompt_tokens > 0
    assert list(engine.prefix_cache.entries) == [tuple(prompts[0])]
    engine.prefix_cache.discard(prompts[:1])
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.05 * torch.randn_like(parameter))
    again = engine.generate(prompts, sampling, watch=watch, keep_prompts=True)
    fresh = GenerationEngine(model, tokenizer, batch_size=4, progress=False).generate(prompts, sampling, watch=watch)
    for (ours,), (theirs,) in zip(again, fresh, strict=True):
        assert ours.token_ids == theirs.token_ids
        torch.testing.assert_close(ours.watched, theirs.watched, atol=1e-4, rtol=1e-4)


def test_prefix_cache_keeps_the_most_recent_entries():
    cache = PrefixCache(max_entries=2)
    layers = Cache(layers=[])
    for ids in ([1, 2], [3, 4], [5, 6]):
        cache.add(ids, layers)
    assert list(cache.entries) == [(3, 4), (5, 6)]
    assert cache.longest([3, 4, 9])[0] == 2 and cache.longest([1, 2, 9]) == (0, None)
    with pytest.raises(ValueError):
        PrefixCache(max_entries=0)


def test_next_token_probabilities_match_the_model(tiny_backbone):
    model, tokenizer = tiny_backbone
    engine = GenerationEngine(model, tokenizer, progress=False, prefix_cache=PrefixCache())
    prompts = _encode(engine, (7, 12))
    engine.add_prefixes(prompts[:1])
    tokens = [tokenizer.convert_tokens_to_ids(t) for t in ("Y", "N")]
    probabilities = engine.next_token_probabilities(prompts, tokens)
    for row, ids in zip(probabilities, prompts, strict=True):
        with torch.no_grad():
            expected = model(torch.tensor([ids])).logits[0, -1].float().softmax(-1)[tokens]
        torch.testing.assert_close(row, expected, atol=1e-5, rtol=1e-4)


def test_watched_logits_are_the_model_logits_at_each_step(tiny_backbone):
    """Every decoding step records the watched tokens' logits and the vocabulary's logsumexp, as a teacher-forced
    forward pass over the prompt and the answer so far computes them (left-padded batch, one EOS-free answer)."""
    model, tokenizer = tiny_backbone
    watch = [5, 17, 40]
    engine = GenerationEngine(model, tokenizer, batch_size=4, progress=False)
    prompts = _encode(engine, (5, 40, 17))
    answers = engine.generate(prompts, SamplingConfig(max_new_tokens=6), watch=watch)
    for ids, (answer,) in zip(prompts, answers, strict=True):
        assert answer.watched.shape == (len(answer.token_ids) + (answer.eos_id is not None), len(watch) + 1)
        for step, row in enumerate(answer.watched):
            with torch.no_grad():
                logits = model(input_ids=torch.tensor([ids + answer.token_ids[:step]])).logits[0, -1].float()
            torch.testing.assert_close(row[:-1], logits[watch], atol=1e-4, rtol=1e-4)
            torch.testing.assert_close(row[-1], logits.logsumexp(dim=-1), atol=1e-4, rtol=1e-4)
    assert all(answer.watched is None for (answer,) in engine.generate(prompts, SamplingConfig(max_new_tokens=2)))
