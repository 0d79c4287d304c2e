"""Continuous scores: how a patient's probability ŷ is read from the policy (``score.method`` of eagrl-evaluate).

Greedy answers give a handful of distinct probabilities (a policy that always answers ``0.3`` scores 50.0 AUROC
whatever it learned), so AUROC cannot see what it learned. Three scores:

- ``greedy``: the probability parsed from the answer's ``<Final answer>`` (the fallback when none parses);
- ``sample_mean``: the mean of ``samples`` answers sampled at ``temperature`` and parsed; answers that do not parse
  are left out of the mean, and a patient none of whose answers parse gets the fallback (both counted);
- ``token_expectation``: the expected value of the ``0.dd`` answer under the policy's next-token distribution.
  The answer is cut just after its first ``<Final answer>`` tag; an answer without one gets ``\\n<Final answer>``
  after its ``</Important Features>`` tag (what follows that tag is dropped: the format puts the answer next), or
  else after its whole text (:func:`answer_context`, the three cases counted). `` 0.`` is teacher-forced and

      E = Σ_d p₁(d)·d/10 + Σ_d p₂(d)·d/100,

  p₁ the next-token distribution renormalised over the digit tokens 0–9, p₂ the same one token later after the
  most likely first digit. p₂ is an approximation: the exact second term averages over every first digit (ten
  continuations instead of one). It takes one forward pass per batch of patients (:func:`digit_distributions`)
  and one more token on its key/value cache. The tokenizer must spell each digit as its own token after ``0.``
  (SmolLM2, Qwen2.5 and the test byte tokenizer do; Llama-3 groups digits and is refused by
  :func:`digit_token_ids`). An answer generated with ``watch=digit_token_ids(tokenizer)`` that already wrote
  ``<Final answer> 0.`` and then p₁'s most likely digit, in the tokens the pass would feed, carries p₁ and p₂ in
  its own decoding steps (:func:`generated_digits`): those patients skip the pass (the same numbers up to float
  rounding; a greedy answer of a trained policy nearly always qualifies). The others go through the pass
  (:func:`pass_digits`), which encodes only the answer and `` 0.`` when the engine's prefix cache still holds the
  prompt (``generate(keep_prompts=True, on_batch=DigitsPerBatch(...))``: the base model, whose answers
  never write the tag, pays the answers instead of a second prefill of every prompt).

    probabilities, details = score_answers(engine, prompt_ids, answers, **cfg.score, sampling=sampling)

eagrl-evaluate scores its greedy answers so; RL and SFT score validation patients the same way. The model must be in
eval mode (no dropout; under gradient checkpointing a training-mode model keeps no cache).
"""

from __future__ import annotations

import re
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import NamedTuple

import numpy as np
import torch
from tqdm.auto import tqdm
from transformers import PreTrainedTokenizerBase
from transformers.cache_utils import DynamicCache

from eagrl.errors import ConfigError
from eagrl.policy.engine import Generation, GenerationEngine, SamplingConfig
from eagrl.policy.parsing import FINAL_ANSWER, parse_answer

#: the score names (``score.method``)
METHODS = ("greedy", "sample_mean", "token_expectation")
#: the answer tag whose number is scored
FINAL_TAG = "<Final answer>"
#: the start of the number, teacher-forced after the tag (the format's ``<Final answer> 0.xx``)
FORCED = " 0."
#: the closing tag of the feature list, after which a missing ``<Final answer>`` tag is added
FEATURES_CLOSE = re.compile(r"<\s*/\s*important\s*features?\s*>", re.I)


@dataclass
class ScoreDetails:
    """What a score did.

    Attributes:
        method: the score used.
        columns: per-answer values (column name -> one entry per answer), for ``predictions.parquet``.
        counts: totals for ``metrics.json`` (``fallbacks``: answers scored with the fallback; the method's own counts).
    """

    method: str
    columns: dict[str, list]
    counts: dict[str, float]


class AnswerDigits(NamedTuple):
    """The token-expectation inputs of one answer (a JSON list when saved with it).

    Attributes:
        first: p₁, the 10 digit probabilities after ``<Final answer> 0.`` (renormalised over the digits).
        second: p₂, the same one token later, after p₁'s most likely digit.
        mass: the probability p₁'s digits had before renormalising.
        source: where they come from: ``generation`` (read off the answer's own decoding) or ``pass``.
    """

    first: list[float]
    second: list[float]
    mass: float
    source: str = "generation"


def check_score(method: str, samples: int, temperature: float) -> None:
    """Refuse an unknown method or sampling settings that cannot give a mean (one-line ConfigError)."""
    if method not in METHODS:
        raise ConfigError(f"score.method: unknown score {method!r}; use one of {', '.join(METHODS)}")
    if method == "sample_mean" and (samples < 1 or temperature <= 0):
        raise ConfigError(
            f"score: sample_mean needs samples >= 1 and temperature > 0 (got {samples} and {temperature})"
        )


def score_answers(
    engine: GenerationEngine,
    prompt_ids: Sequence[Sequence[int]],
    answers: Sequence[str],
    method: str = "greedy",
    samples: int = 8,
    temperature: float = 1.0,
    sampling: SamplingConfig | None = None,
    keys: Sequence[str] | None = None,
    fallback: float = 0.5,
    grammars: Sequence[str | None] | None = None,
    generated: Sequence[AnswerDigits | None] | None = None,
) -> tuple[np.ndarray, ScoreDetails]:
    """ŷ per patient by ``method``.

    Args:
        engine: the policy's generation engine (its model, tokenizer and batch size are used).
        prompt_ids: token ids of each patient's chat prompt, ready for the assistant's turn.
        answers: each patient's answer text (greedy for evaluation; unused by ``sample_mean``).
        method: ``greedy``, ``sample_mean`` or ``token_expectation``.
        samples, temperature: answers sampled per patient by ``sample_mean``, and their temperature.
        sampling: decoding settings ``sample_mean`` starts from (token budget, stop strings, seed).
        keys: a stable name per patient that seeds its samples (e.g. the patient id).
        fallback: ŷ of a patient whose score cannot be read (METHOD §1: 0.5).
        grammars: a grammar per patient that ``sample_mean``'s answers follow, as the answers did
            (:mod:`eagrl.policy.guided`; None = free).
        generated: per answer, ``token_expectation``'s p₁ and p₂ read off its generation (:func:`generated_digits`;
            None = computed by the pass).

    Returns:
        ``(probabilities (patients,) float64 in [0, 1], details)``.
    """
    check_score(method, samples, temperature)
    if len(prompt_ids) != len(answers):
        raise ValueError(f"{len(prompt_ids)} prompts but {len(answers)} answers")
    started = time.perf_counter()
    if method == "greedy":
        read = [parse_answer(text).probability for text in answers]
        probabilities = [fallback if value is None else value for value in read]
        details = ScoreDetails(method, {}, {"fallbacks": sum(value is None for value in read)})
    elif method == "sample_mean":
        sampled = replace(sampling or SamplingConfig(), temperature=temperature)
        probabilities, details = _sample_mean(engine, prompt_ids, sampled, samples, keys, fallback, grammars)
    else:
        probabilities, details = _token_expectation(engine, prompt_ids, answers, generated)
    details.counts["seconds"] = time.perf_counter() - started
    return np.asarray(probabilities, dtype=np.float64), details


def _sample_mean(
    engine: GenerationEngine,
    prompt_ids: Sequence[Sequence[int]],
    sampling: SamplingConfig,
    samples: int,
    keys: Sequence[str] | None,
    fallback: float,
    grammars: Sequence[str | None] | None,
) -> tuple[list[float], ScoreDetails]:
    """Mean parsed probability of ``samples`` sampled answers per patient (failed parses left out)."""
    generations = engine.generate(prompt_ids, sampling, num_samples=samples, keys=keys, grammars=grammars)
    read = [[parse_answer(generation.text).probability for generation in group] for group in generations]
    parsed = [[value for value in group if value is not None] for group in read]
    probabilities = [float(np.mean(values)) if values else fallback for values in parsed]
    columns = {
        "sample_probabilities": [[np.nan if value is None else value for value in group] for group in read],
        "samples_parsed": [len(values) for values in parsed],
    }
    counts = {
        "fallbacks": sum(not values for values in parsed),
        "samples": samples * len(read),
        "samples_failed": sum(len(group) - len(values) for group, values in zip(read, parsed, strict=True)),
        "temperature": sampling.temperature,
        "generated_tokens": engine.stats.generated_tokens,
    }
    return probabilities, ScoreDetails("sample_mean", columns, counts)


def answer_context(text: str) -> tuple[str, str]:
    """The answer cut to end with a ``<Final answer>`` tag, and how: ``tag`` (cut after its own first tag),
    ``after_features`` (tag added after ``</Important Features>``, the rest dropped) or ``appended`` (tag added
    after the whole text)."""
    final = FINAL_ANSWER.search(text)
    if final:
        return text[: final.start("body")], "tag"
    closing = FEATURES_CLOSE.search(text)
    if closing:
        return f"{text[: closing.end()]}\n{FINAL_TAG}", "after_features"
    stripped = text.rstrip()
    return (f"{stripped}\n{FINAL_TAG}" if stripped else FINAL_TAG), "appended"


def digit_token_ids(tokenizer: PreTrainedTokenizerBase) -> list[int]:
    """Token ids of the digits 0–9 as the tokenizer spells them after ``<Final answer> 0.``.

    Raises a ConfigError when a digit there is not its own token (merged with ``.`` or with the next digit).
    """

    def encode(text: str) -> list[int]:
        return tokenizer(text, add_special_tokens=False)["input_ids"]

    stem = encode(FINAL_TAG + FORCED)
    ids = []
    for digit in range(10):
        extended = encode(f"{FINAL_TAG}{FORCED}{digit}{digit}")
        if extended[: len(stem)] != stem or len(extended) != len(stem) + 2 or extended[-1] != extended[-2]:
            tokens = tokenizer.convert_ids_to_tokens(extended)
            raise ConfigError(
                f"score.method=token_expectation needs a tokenizer that spells each digit as one token after "
                f"'{FORCED.strip()}' ({FINAL_TAG}{FORCED}{digit}{digit} -> {tokens}); use score.method=greedy or "
                "sample_mean"
            )
        ids.append(extended[-1])
    return ids


def forced_context_ids(tokenizer: PreTrainedTokenizerBase, answer: str) -> tuple[list[int], str]:
    """Token ids the token-expectation pass feeds after the prompt (the answer cut by :func:`answer_context`, then
    `` 0.``), and how the answer was cut."""
    context, how = answer_context(answer)
    return tokenizer(context + FORCED, add_special_tokens=False)["input_ids"], how


def generated_digits(
    tokenizer: PreTrainedTokenizerBase, generation: Generation, digits: Sequence[int]
) -> AnswerDigits | None:
    """p₁ and p₂ read off a generation recorded with ``watch=digits``, when they are what the token-expectation pass
    would compute: the answer's tokens begin with exactly the ids the pass feeds (its own ``<Final answer> 0.``),
    go on with p₁'s most likely digit, and decoding ran one step further. None otherwise (the pass scores it)."""
    if generation.watched is None:
        return None
    forced, how = forced_context_ids(tokenizer, generation.text)
    at = len(forced)
    if how != "tag" or generation.token_ids[:at] != forced or len(generation.watched) < at + 2:
        return None
    first_row, second_row = generation.watched[at], generation.watched[at + 1]
    first = first_row[:-1].softmax(dim=-1)
    if generation.token_ids[at] != digits[int(first.argmax())]:
        return None
    mass = float((first_row[:-1] - first_row[-1]).exp().sum())
    return AnswerDigits(first.tolist(), second_row[:-1].softmax(dim=-1).tolist(), mass)


def batch_digits(
    engine: GenerationEngine,
    prompt_ids: Sequence[Sequence[int]],
    generations: Sequence[Generation],
    digits: Sequence[int],
) -> list[AnswerDigits]:
    """p₁ and p₂ of a batch of answers generated with ``watch=digits``: read off each answer where it can be
    (:func:`generated_digits`), else by :func:`pass_digits` (on the prompts' cached prefixes when the batch was
    generated with ``keep_prompts=True``: call it from ``on_batch``)."""
    read = [generated_digits(engine.tokenizer, generation, digits) for generation in generations]
    return _passed_where_missing(engine, prompt_ids, [generation.text for generation in generations], read, digits)


class DigitsPerBatch:
    """An ``on_batch`` for ``generate(prompt_ids, watch=digits, keep_prompts=True)``: :func:`batch_digits` of each
    batch, kept in prompt order in :attr:`reads` (for ``score_answers(..., generated=reads)``)."""

    def __init__(self, engine: GenerationEngine, prompt_ids: Sequence[Sequence[int]], digits: Sequence[int]):
        self.engine, self.prompt_ids, self.digits = engine, prompt_ids, digits
        self.reads: list[AnswerDigits | None] = [None] * len(prompt_ids)

    def __call__(self, batch: list[int], results: list[list[Generation]]) -> None:
        prompts = [self.prompt_ids[index] for index in batch]
        reads = batch_digits(self.engine, prompts, [result[0] for result in results], self.digits)
        for index, read in zip(batch, reads, strict=True):
            self.reads[index] = read


def _passed_where_missing(
    engine: GenerationEngine,
    prompt_ids: Sequence[Sequence[int]],
    answers: Sequence[str],
    reads: Sequence[AnswerDigits | None],
    digits: Sequence[int],
    progress: bool = False,
) -> list[AnswerDigits]:
    """``reads`` with every None replaced by :func:`pass_digits` of that answer."""
    reads = list(reads)
    pending = [index for index, read in enumerate(reads) if read is None]
    prompts, texts = [prompt_ids[index] for index in pending], [answers[index] for index in pending]
    for index, read in zip(pending, pass_digits(engine, prompts, texts, digits, progress), strict=True):
        reads[index] = read
    return reads


def pass_digits(
    engine: GenerationEngine,
    prompt_ids: Sequence[Sequence[int]],
    answers: Sequence[str],
    digits: Sequence[int],
    progress: bool = False,
) -> list[AnswerDigits]:
    """p₁ and p₂ of each answer by the token-expectation pass (``source`` ``pass``).

    An answer whose whole prompt is in the engine's prefix cache encodes only its cut answer and `` 0.`` on top of
    it (:meth:`GenerationEngine.encode`); the others run prompt and answer together, in length-sorted batches of
    ``engine.batch_size`` (:func:`digit_distributions`). The two agree to float rounding.
    """
    tokenizer = engine.tokenizer
    pairs = zip(prompt_ids, answers, strict=True)
    sequences = [list(prompt) + forced_context_ids(tokenizer, text)[0] for prompt, text in pairs]
    first, second = torch.zeros(len(sequences), 10), torch.zeros(len(sequences), 10)
    mass = torch.zeros(len(sequences))
    cache = engine.prefix_cache
    cached = [cache is not None and cache.longest(prompt)[0] == len(prompt) for prompt in prompt_ids]
    bar = tqdm(total=len(sequences), desc="token expectation", unit="patient", disable=not progress)
    for index in [index for index, hit in enumerate(cached) if hit]:
        first[index], second[index], mass[index] = _digits_on_prefix(engine, sequences[index], digits)
        bar.update(1)
    order = sorted((index for index, hit in enumerate(cached) if not hit), key=lambda index: -len(sequences[index]))
    for start in range(0, len(order), engine.batch_size):
        batch = order[start : start + engine.batch_size]
        first[batch], second[batch], mass[batch] = digit_distributions(
            engine.model, [sequences[index] for index in batch], digits, tokenizer.pad_token_id
        )
        bar.update(len(batch))
    bar.close()
    return [
        AnswerDigits(first[row].tolist(), second[row].tolist(), float(mass[row]), "pass")
        for row in range(len(sequences))
    ]


@torch.inference_mode()
def _digits_on_prefix(
    engine: GenerationEngine, sequence: Sequence[int], digits: Sequence[int]
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """p₁ (10,), p₂ (10,) and p₁'s digit mass () after one sequence, encoded on its cached prompt prefix."""
    cache, logits = engine.encode(sequence)
    digit_ids = torch.tensor(list(digits), dtype=torch.long)
    first = logits[digit_ids].softmax(dim=-1)
    output = engine.model(
        input_ids=digit_ids[first.argmax()].reshape(1, 1),
        position_ids=torch.tensor([[len(sequence)]]),
        past_key_values=cache,
        use_cache=True,
    )
    second = output.logits[0, -1].float()[digit_ids].softmax(dim=-1)
    return first, second, logits.softmax(dim=-1)[digit_ids].sum()


def _token_expectation(
    engine: GenerationEngine,
    prompt_ids: Sequence[Sequence[int]],
    answers: Sequence[str],
    generated: Sequence[AnswerDigits | None] | None,
) -> tuple[list[float], ScoreDetails]:
    """E[0.dd] per patient: p₁ and p₂ from ``generated`` where given, else by :func:`pass_digits`."""
    reads = list(generated) if generated is not None else [None] * len(answers)
    digits = digit_token_ids(engine.tokenizer)
    reads = _passed_where_missing(engine, prompt_ids, answers, reads, digits, progress=engine.progress)
    first = torch.tensor([read.first for read in reads]).reshape(-1, 10)
    second = torch.tensor([read.second for read in reads]).reshape(-1, 10)
    mass = torch.tensor([read.mass for read in reads])
    contexts = [answer_context(text)[1] for text in answers]
    values = torch.arange(10, dtype=torch.float32)
    expected = first @ values / 10 + second @ values / 100
    columns = {
        "answer_context": contexts,
        "digits_from": [read.source for read in reads],
        "first_digit_probabilities": first.tolist(),
        "expected_second_digit": (second @ values).tolist(),
        "digit_mass": mass.tolist(),
    }
    counts: dict[str, float] = {"fallbacks": 0, **Counter(contexts)}
    counts["digits_from_generation"] = sum(read.source == "generation" for read in reads)
    counts["mean_digit_mass"] = float(mass.mean()) if len(mass) else float("nan")
    return expected.tolist(), ScoreDetails("token_expectation", columns, counts)


@torch.inference_mode()
def digit_distributions(
    model: torch.nn.Module, sequences: Sequence[Sequence[int]], digits: Sequence[int], pad_id: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Digit distributions after each sequence, for one batch.

    The batch is right-padded and run without an attention mask: causal attention never lets a real token see the
    padding after it, and SDPA keeps its fast causal kernel (a left-padded batch needs a mask, which was 3× slower
    than encoding each sequence alone on this CPU, tiny model, 2.5–4k tokens). Only the second digit (one token)
    runs with a padding mask.

    Args:
        sequences: token ids, each ending where the first digit comes (``... <Final answer> 0.``).
        digits: the ten digit token ids, 0–9.

    Returns:
        p₁ (rows, 10) float32 over the digits (renormalised), p₂ (rows, 10) the same after the most likely first
        digit, and (rows,) the mass p₁ had on the digits before renormalising.
    """
    lengths = torch.tensor([len(ids) for ids in sequences])
    rows, width = len(sequences), int(lengths.max())
    input_ids = torch.full((rows, width), pad_id, dtype=torch.long)
    for row, ids in enumerate(sequences):
        input_ids[row, : len(ids)] = torch.tensor(list(ids), dtype=torch.long)
    last = lengths - 1
    kept = torch.unique(last)  # sorted positions whose logits are computed
    cache = DynamicCache()
    logits = model(input_ids=input_ids, past_key_values=cache, use_cache=True, logits_to_keep=kept).logits
    logits = logits[torch.arange(rows), torch.searchsorted(kept, last)].float()
    digit_ids = torch.tensor(list(digits), dtype=torch.long)
    mass = logits.softmax(dim=-1)[:, digit_ids].sum(dim=-1)
    first = logits[:, digit_ids].softmax(dim=-1)
    columns = torch.arange(width + 1)
    output = model(
        input_ids=digit_ids[first.argmax(dim=-1)][:, None],
        attention_mask=((columns < lengths[:, None]) | (columns == width)).long(),
        position_ids=lengths[:, None],
        past_key_values=cache,
        use_cache=True,
    )
    return first, output.logits[:, -1].float()[:, digit_ids].softmax(dim=-1), mass
