"""Batched generation for evaluation, MCTS expansion and RL rollouts, tuned for CPUs.

What it does differently from ``model.generate`` (DESIGN "where the time goes"):

- **prefill once per prompt, without padding**: each prompt is encoded alone (causal attention, no mask, no
  pad tokens computed) and its key/value cache copied into a left-padded batch buffer, once per sample, so
  ``num_samples`` answers to one prompt (GRPO groups, MCTS children) share one prefill;
- **a preallocated cache** (:class:`SlotLayer`): decoding writes each new key/value in place instead of
  concatenating the whole cache at every step;
- **finished rows leave the batch** (EOS, a stop string or the token budget), so the tail of a batch does not
  keep paying for sequences that are done;
- **length-sorted batches**, so rows of a batch have similar prompt lengths (little padding in decoding);
- **a prefix cache** (:class:`PrefixCache`): a long prompt registered once (a patient's record) is never encoded
  again; a later prompt that extends it (an MCTS node: the record plus the steps so far) only encodes its suffix;
  the tokens every prompt of a call starts with (chat template, system message) are encoded once per call;
  ``generate(keep_prompts=True)`` registers every prompt it encodes, so a follow-up pass over a batch's answers
  (the token-expectation score) encodes only the answers;
- **seeded sampling per sequence**: each (prompt key, sample) pair has its own generator, so an answer does
  not depend on batch size or on which other prompts share its batch;
- **guided decoding per row** (:mod:`eagrl.policy.guided`): a prompt may come with a grammar; each of its rows
  then has its own grammar state that masks the logits before sampling, beside free rows in the same batch.

Shapes: a cache buffer is ``(batch, kv_heads, capacity, head_dim)``; rows are left-padded so every row's
newest token sits at the same column.
"""

from __future__ import annotations

import logging
import math
import time
import zlib
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from tqdm.auto import tqdm
from transformers import PreTrainedModel, PreTrainedTokenizerBase
from transformers.cache_utils import Cache, DynamicCache, DynamicLayer

from eagrl.errors import ConfigError
from eagrl.policy.guided import Guide

log = logging.getLogger(__name__)

#: the fewest tokens all prompts of a call must share for :meth:`GenerationEngine.generate` to encode them once
MIN_SHARED_PREFIX = 16


@dataclass(frozen=True)
class SamplingConfig:
    """How to decode.

    Attributes:
        max_new_tokens: token budget per answer.
        temperature: 0 = greedy; otherwise logits are divided by it before sampling.
        top_p: nucleus sampling mass (1.0 = off).
        top_k: keep the k most likely tokens (0 = off).
        stop_strings: generation stops once the answer contains one of these (kept in the text).
        seed: base seed of the per-sequence generators.
    """

    max_new_tokens: int = 256
    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 0
    stop_strings: tuple[str, ...] = ()
    seed: int = 0


@dataclass
class Generation:
    """One generated answer.

    Attributes:
        text: the decoded answer, cut after the first stop string.
        token_ids: generated token ids (without the prompt), up to the token that completed a stop string.
        prompt_tokens: length of the prompt in tokens.
        finish_reason: ``stop`` (a stop string), ``eos`` or ``length`` (token budget).
        eos_id: the end-of-sequence token that ended the answer (not in ``token_ids``), for ``finish_reason`` eos.
        watched: with ``generate(watch=...)``: ``(steps, len(watch) + 1)`` float32, one row per decoding step (the
            step that chose ``token_ids[j]`` is row ``j``; a step that chose EOS adds a last row): the logits of
            the watched tokens, then the log of the softmax normaliser over the vocabulary (logsumexp), both read
            before any guided-decoding mask. So ``exp(row[:-1] - row[-1])`` are the watched tokens' probabilities.
    """

    text: str
    token_ids: list[int]
    prompt_tokens: int
    finish_reason: str
    eos_id: int | None = None
    watched: torch.Tensor | None = None


@dataclass
class EngineStats:
    """Counters of the last :class:`GenerationEngine` call (seconds and tokens).

    ``reused_prompt_tokens`` counts prompt tokens served from the prefix cache instead of being encoded;
    ``guide_seconds`` is the part of ``decode_seconds`` spent on guided-decoding masks and grammar states.
    """

    prompts: int = 0
    sequences: int = 0
    prompt_tokens: int = 0
    reused_prompt_tokens: int = 0
    generated_tokens: int = 0
    prefill_seconds: float = 0.0
    decode_seconds: float = 0.0
    guide_seconds: float = 0.0
    finish_reasons: dict[str, int] = field(default_factory=dict)

    @property
    def seconds(self) -> float:
        return self.prefill_seconds + self.decode_seconds

    @property
    def tokens_per_second(self) -> float:
        """Generated tokens per second of wall time, prefill included."""
        return self.generated_tokens / self.seconds if self.seconds else math.nan

    def accumulate(self, other: EngineStats) -> None:
        """Add ``other``'s counters to these (totals over many calls)."""
        for name in ("prompts", "sequences", "prompt_tokens", "reused_prompt_tokens", "generated_tokens"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.prefill_seconds += other.prefill_seconds
        self.decode_seconds += other.decode_seconds
        self.guide_seconds += other.guide_seconds
        for reason, count in other.finish_reasons.items():
            self.finish_reasons[reason] = self.finish_reasons.get(reason, 0) + count


class SlotLayer(DynamicLayer):
    """A cache layer with a preallocated buffer: :meth:`update` writes in place and returns views."""

    def __init__(self, keys: torch.Tensor, values: torch.Tensor, length: int):
        super().__init__()
        self.keys_buffer, self.values_buffer, self.length = keys, values, length
        self.dtype, self.device = keys.dtype, keys.device
        self.is_initialized = True
        self._sync_views()

    def _sync_views(self) -> None:
        self.keys = self.keys_buffer[:, :, : self.length]
        self.values = self.values_buffer[:, :, : self.length]

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        new = key_states.shape[-2]
        if self.length + new > self.keys_buffer.shape[-2]:
            raise RuntimeError("generation cache capacity exceeded")  # capacity = prompt + max_new_tokens
        self.keys_buffer[:, :, self.length : self.length + new] = key_states
        self.values_buffer[:, :, self.length : self.length + new] = value_states
        self.length += new
        self._sync_views()
        return self.keys, self.values

    def get_seq_length(self) -> int:
        return self.length

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        self.keys_buffer = self.keys_buffer[indices]
        self.values_buffer = self.values_buffer[indices]
        self._sync_views()


def _filled_layer(keys: torch.Tensor, values: torch.Tensor) -> DynamicLayer:
    """A growing cache layer that starts from ``keys`` / ``values`` (1, kv_heads, length, head_dim), not copied:
    :meth:`DynamicLayer.update` concatenates into new tensors, so the stored prefix is never written to."""
    layer = DynamicLayer()
    layer.lazy_initialization(keys, values)
    layer.keys, layer.values = keys, values
    return layer


class PrefixCache:
    """Key/value caches of registered prompt prefixes, least recently used dropped beyond ``max_entries``.

    Each entry holds, per layer, keys and values of shape (1, kv_heads, prefix_length, head_dim): about 23 kB
    per token for SmolLM2-135M in bf16, so 64 prompts of 1,000 tokens take ~1.5 GB.
    """

    def __init__(self, max_entries: int = 64):
        if max_entries < 1:
            raise ValueError(f"max_entries must be >= 1, got {max_entries}")
        self.max_entries = max_entries
        self.entries: OrderedDict[tuple[int, ...], list[tuple[torch.Tensor, torch.Tensor]]] = OrderedDict()

    def add(self, ids: Sequence[int], cache: Cache) -> None:
        """Keep the cache of prompt ``ids``."""
        key = tuple(ids)
        self.entries[key] = [(layer.keys, layer.values) for layer in cache.layers]
        self.entries.move_to_end(key)
        while len(self.entries) > self.max_entries:
            self.entries.popitem(last=False)

    def __contains__(self, ids: Sequence[int]) -> bool:
        return tuple(ids) in self.entries

    def discard(self, keys: Sequence[Sequence[int]]) -> None:
        """Forget the prompts ``keys`` (those not stored are ignored)."""
        for key in keys:
            self.entries.pop(tuple(key), None)

    def longest(self, ids: Sequence[int]) -> tuple[int, list[tuple[torch.Tensor, torch.Tensor]] | None]:
        """The length and layers of the longest stored prefix of ``ids`` (``(0, None)`` when there is none)."""
        best, layers = 0, None
        for key, stored in self.entries.items():
            if best < len(key) <= len(ids) and tuple(ids[: len(key)]) == key:
                best, layers = len(key), stored
        if layers is not None:
            self.entries.move_to_end(tuple(ids[:best]))
        return best, layers


def _sample_next(logits: torch.Tensor, sampling: SamplingConfig, generators: list[torch.Generator]) -> torch.Tensor:
    """Next token per row. logits: (rows, vocab) float32; returns (rows,) int64."""
    if sampling.temperature <= 0:
        return logits.argmax(dim=-1)
    logits = logits / sampling.temperature
    if sampling.top_k:
        kth = torch.topk(logits, min(sampling.top_k, logits.shape[-1]), dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, -math.inf)
    if sampling.top_p < 1.0:
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
        cumulative = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
        drop_sorted = cumulative - sorted_logits.softmax(dim=-1) >= sampling.top_p
        logits = logits.masked_fill(drop_sorted.scatter(-1, order, drop_sorted), -math.inf)
    # Gumbel-max with one generator per row: the draw of a row never depends on the other rows
    uniform = torch.stack([torch.rand(logits.shape[-1], generator=g) for g in generators])
    gumbel = -torch.log(-torch.log(uniform.clamp_(1e-20, 1.0)))
    return (logits + gumbel).argmax(dim=-1)


class GenerationEngine:
    """Generate answers for many prompts in length-sorted batches with a shared-prefill KV cache.

    Args:
        model: a causal LM (eval mode; a peft model works too).
        tokenizer: its tokenizer (a chat template for :meth:`encode_chat`).
        batch_size: sequences decoded together (prompts per batch = batch_size // num_samples, at least 1).
        progress: show a tqdm bar with tokens/s.
        prefix_cache: where :meth:`add_prefixes` keeps encoded prompts (None = no reuse across calls). What a
            :meth:`generate` call stores there itself (its prompts' shared start, ``keep_prompts``) is forgotten when
            it returns, so a policy whose weights change between calls (RL) never reads a stale cache.
        share_prefix: encode the tokens every prompt of a call starts with once (needs ``prefix_cache``; off for a
            search whose cache holds patient records that such an entry could push out).
    """

    def __init__(
        self,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        batch_size: int = 16,
        progress: bool = True,
        prefix_cache: PrefixCache | None = None,
        share_prefix: bool = True,
    ):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.model, self.tokenizer, self.batch_size, self.progress = model, tokenizer, batch_size, progress
        self.prefix_cache, self.share_prefix = prefix_cache, share_prefix
        self._stored_by_call: list[tuple[int, ...]] = []  # prefix-cache keys the running generate() added
        eos = model.generation_config.eos_token_id if model.generation_config else None
        eos = eos if eos is not None else tokenizer.eos_token_id
        self.eos_ids = set(eos if isinstance(eos, list) else [eos])
        self.stats = EngineStats()
        self.guide: Guide | None = None  # built on the first guided call (converts the tokenizer once)

    def encode_chat(self, conversations: Sequence[list[dict[str, str]]], continuation: Sequence[str] = ()) -> list:
        """Token ids of chat ``conversations`` ready for the assistant's turn, plus an optional text continuation
        (an answer prefix the model goes on from, e.g. an MCTS node's steps so far)."""
        encoded = []
        for index, messages in enumerate(conversations):
            text = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
            if continuation:
                text += continuation[index]
            encoded.append(self.tokenizer(text, add_special_tokens=False)["input_ids"])
        return encoded

    @torch.inference_mode()
    def generate(
        self,
        prompt_ids: Sequence[Sequence[int]],
        sampling: SamplingConfig,
        num_samples: int = 1,
        keys: Sequence[str] | None = None,
        on_batch: Callable[[list[int], list[list[Generation]]], None] | None = None,
        grammars: Sequence[str | None] | None = None,
        watch: Sequence[int] = (),
        keep_prompts: bool = False,
    ) -> list[list[Generation]]:
        """Generate ``num_samples`` answers per prompt.

        Args:
            prompt_ids: token ids per prompt.
            sampling: decoding settings.
            num_samples: answers per prompt (sharing the prompt's prefill).
            keys: a stable name per prompt (e.g. patient id) that seeds its samples; defaults to the index.
            on_batch: called after each batch with the prompt indices and their answers (to save progress).
            grammars: a Lark grammar per prompt that its answers must follow (:mod:`eagrl.policy.guided`; None =
                free), e.g. :func:`~eagrl.policy.guided.feature_list_grammar`; an answer is complete (``stop``)
                once its grammar is.
            watch: token ids whose logits every step records in :attr:`Generation.watched` (e.g. the digits, so a
                token-expectation score reads the answer's digit distributions off its own decoding).
            keep_prompts: keep each encoded prompt's cache in the prefix cache (when the engine has one), so
                ``on_batch`` can run the batch's answers again at the cost of the answers alone (:meth:`encode`).

        Returns:
            ``answers[i][s]`` = sample ``s`` for prompt ``i``.
        """
        self._check_context(prompt_ids, sampling.max_new_tokens)
        keys = list(keys) if keys is not None else [str(index) for index in range(len(prompt_ids))]
        grammars = list(grammars) if grammars is not None else [None] * len(prompt_ids)
        if self.guide is None and any(grammars):
            self.guide = Guide(self.tokenizer)
        self.stats = EngineStats(prompts=len(prompt_ids))
        self._stored_by_call = []
        try:
            return self._generate(prompt_ids, sampling, num_samples, keys, on_batch, grammars, watch, keep_prompts)
        finally:
            if self.prefix_cache is not None:
                self.prefix_cache.discard(self._stored_by_call)
            self._stored_by_call = []

    def _generate(self, prompt_ids, sampling, num_samples, keys, on_batch, grammars, watch, keep_prompts):
        """:meth:`generate` after its checks (the same arguments, defaults filled)."""
        guided_before = self.guide.seconds if self.guide else 0.0
        self._share_common_prefix(prompt_ids)
        answers: list[list[Generation]] = [[] for _ in prompt_ids]
        order = sorted(range(len(prompt_ids)), key=lambda index: -len(prompt_ids[index]))
        per_batch = max(1, self.batch_size // num_samples)
        bar = tqdm(total=len(order) * num_samples, desc="generate", unit="seq", disable=not self.progress)
        for start in range(0, len(order), per_batch):
            batch = order[start : start + per_batch]
            results = self._generate_batch(
                [prompt_ids[i] for i in batch],
                [keys[i] for i in batch],
                sampling,
                num_samples,
                [grammars[i] for i in batch],
                list(watch),
                keep_prompts,
            )
            for index, result in zip(batch, results, strict=True):
                answers[index] = result
            bar.update(len(batch) * num_samples)
            bar.set_postfix(tok_s=f"{self.stats.tokens_per_second:.1f}")
            if on_batch:
                on_batch(batch, results)
        bar.close()
        self.stats.guide_seconds = self.guide.seconds - guided_before if self.guide else 0.0
        return answers

    def _check_context(self, prompt_ids: Sequence[Sequence[int]], max_new_tokens: int) -> None:
        """Refuse, before any work, a prompt that cannot fit the model's context with the answer budget."""
        context = getattr(self.model.config, "max_position_embeddings", None)
        longest = max(map(len, prompt_ids), default=0)
        if context and longest + max_new_tokens > context:
            raise ConfigError(
                f"the longest prompt has {longest} tokens; with generation.max_new_tokens={max_new_tokens} it "
                f"exceeds the backbone's context of {context} tokens: shorten the prompts (prompt.max_visits, "
                "e.g. 12, or prompt.features) or lower the answer budget"
            )

    @torch.inference_mode()
    def add_prefixes(self, prompt_ids: Sequence[Sequence[int]]) -> None:
        """Encode each prompt once into the prefix cache, so later prompts that extend it encode only the rest."""
        if self.prefix_cache is None:
            raise ValueError("this engine has no prefix cache (GenerationEngine(prefix_cache=PrefixCache()))")
        self.stats = EngineStats(prompts=len(prompt_ids))
        started = time.perf_counter()
        for ids in prompt_ids:
            if self.prefix_cache.longest(ids)[0] < len(ids):
                cache, _ = self.encode(ids)
                self.prefix_cache.add(ids, cache)
        self.stats.prefill_seconds += time.perf_counter() - started

    def _store(self, ids: Sequence[int], cache: Cache) -> None:
        """Keep ``ids``' cache in the prefix cache until the running :meth:`generate` returns (an entry the caller
        registered stays)."""
        if ids not in self.prefix_cache:
            self._stored_by_call.append(tuple(ids))
        self.prefix_cache.add(ids, cache)

    def _share_common_prefix(self, prompt_ids: Sequence[Sequence[int]]) -> None:
        """Encode once into the prefix cache the tokens every prompt starts with (the chat template, the system
        message, the cohort's opening sentence: ~65 of a TJH prompt's ~680 tokens), when there is a prefix cache and
        at least :data:`MIN_SHARED_PREFIX` such tokens."""
        if self.prefix_cache is None or not self.share_prefix or len(prompt_ids) < 2:
            return
        first, length = prompt_ids[0], min(map(len, prompt_ids)) - 1  # a prompt keeps a token of its own
        for ids in prompt_ids[1:]:
            length = next((index for index in range(length) if ids[index] != first[index]), length)
        shared = list(first[:length])
        if len(shared) >= MIN_SHARED_PREFIX and self.prefix_cache.longest(shared)[0] < len(shared):
            started = time.perf_counter()
            with torch.inference_mode():
                self._store(shared, self.encode(shared)[0])
            self.stats.prefill_seconds += time.perf_counter() - started
            self.stats.prompt_tokens += len(shared)

    @torch.inference_mode()
    def next_token_probabilities(self, prompt_ids: Sequence[Sequence[int]], token_ids: Sequence[int]) -> torch.Tensor:
        """P(next token = each of ``token_ids``) after every prompt: (prompts, len(token_ids)) float32."""
        self._check_context(prompt_ids, 1)
        self.stats = EngineStats(prompts=len(prompt_ids))
        started = time.perf_counter()
        rows = [self.encode(ids)[1].softmax(dim=-1)[list(token_ids)] for ids in prompt_ids]
        self.stats.prefill_seconds += time.perf_counter() - started
        self.stats.prompt_tokens += sum(map(len, prompt_ids))
        return torch.stack(rows) if rows else torch.zeros(0, len(token_ids))

    def encode(self, ids: Sequence[int]) -> tuple[Cache, torch.Tensor]:
        """Encode one token sequence on top of its longest cached prefix: its cache (the stored prefix is never
        written to) and its last logits (vocab,) float32. Call under ``torch.inference_mode``."""
        reused, layers = self.prefix_cache.longest(ids) if self.prefix_cache else (0, None)
        reused = min(reused, len(ids) - 1)  # at least one token is run, for the next-token logits
        cache = DynamicCache()
        if reused:
            cache = Cache(layers=[_filled_layer(keys[:, :, :reused], values[:, :, :reused]) for keys, values in layers])
            self.stats.reused_prompt_tokens += reused
        output = self.model(
            input_ids=torch.tensor([list(ids[reused:])]), past_key_values=cache, use_cache=True, logits_to_keep=1
        )
        return cache, output.logits[0, -1].float()

    def _prefill(self, prompts: list[Sequence[int]], num_samples: int, new_tokens: int, keep_prompts: bool = False):
        """Encode each prompt alone into a left-padded :class:`Cache` with room for ``new_tokens`` more tokens
        (each prompt's own cache kept in the prefix cache with ``keep_prompts``).

        Returns the cache, the first-token logits ``(rows, vocab)`` and the prompt length of every row.
        """
        lengths = [len(ids) for ids in prompts]
        if min(lengths) == 0:
            raise ValueError("cannot generate from an empty prompt")
        width = max(lengths)
        rows = len(prompts) * num_samples
        buffers, last_logits = None, []
        for prompt_index, ids in enumerate(prompts):
            single, logits = self.encode(ids)
            if keep_prompts and self.prefix_cache is not None:
                self._store(ids, single)
            last_logits.append(logits)
            if buffers is None:
                buffers = [
                    tuple(
                        torch.zeros(rows, t.shape[1], width + new_tokens, t.shape[3], dtype=t.dtype)
                        for t in (layer.keys, layer.values)
                    )
                    for layer in single.layers
                ]
            offset = width - len(ids)
            row_slice = slice(prompt_index * num_samples, (prompt_index + 1) * num_samples)
            for (keys, values), layer in zip(buffers, single.layers, strict=True):
                keys[row_slice, :, offset:width] = layer.keys[0]
                values[row_slice, :, offset:width] = layer.values[0]
        cache = Cache(layers=[SlotLayer(keys, values, width) for keys, values in buffers])
        logits = torch.stack(last_logits).repeat_interleave(num_samples, dim=0)
        return cache, logits, [length for length in lengths for _ in range(num_samples)]

    def _generate_batch(
        self,
        prompts: list[Sequence[int]],
        keys: list[str],
        sampling: SamplingConfig,
        num_samples: int,
        grammars: list[str | None],
        watch: list[int],
        keep_prompts: bool,
    ) -> list[list[Generation]]:
        started = time.perf_counter()
        cache, logits, lengths = self._prefill(prompts, num_samples, sampling.max_new_tokens, keep_prompts)
        self.stats.prefill_seconds += time.perf_counter() - started
        self.stats.prompt_tokens += sum(len(ids) for ids in prompts)
        started = time.perf_counter()
        width = cache.layers[0].length
        rows = len(lengths)
        generators = [
            torch.Generator().manual_seed(zlib.crc32(f"{sampling.seed}/{key}/{sample}".encode()))
            for key in keys
            for sample in range(num_samples)
        ]
        matchers = [
            self.guide.matcher(grammar) if grammar else None for grammar in grammars for _ in range(num_samples)
        ]
        tokens: list[list[int]] = [[] for _ in range(rows)]
        watched: list[list[torch.Tensor]] = [[] for _ in range(rows)]
        finish: list[str | None] = [None] * rows
        eos: list[int | None] = [None] * rows
        active = list(range(rows))  # row index (into tokens/finish) of each live cache row
        pad_mask = torch.zeros(rows, width + sampling.max_new_tokens, dtype=torch.long)
        for row, length in enumerate(lengths):
            pad_mask[row, width - length :] = 1
        positions = torch.tensor(lengths, dtype=torch.long)
        stop_window = self._stop_window(sampling.stop_strings)
        for step in range(sampling.max_new_tokens):
            if watch:
                read = torch.cat([logits[:, watch], logits.logsumexp(dim=-1, keepdim=True)], dim=-1)
                for slot, row in enumerate(active):
                    watched[row].append(read[slot])
            if self.guide is not None:
                self.guide.mask_(logits, [matchers[row] for row in active])
            next_tokens = _sample_next(logits, sampling, [generators[row] for row in active])
            keep = []
            for slot, row in enumerate(active):
                token = int(next_tokens[slot])
                if token in self.eos_ids:
                    finish[row], eos[row] = "eos", token
                    continue
                tokens[row].append(token)
                complete = matchers[row] is not None and self.guide.advance(matchers[row], token)
                if complete or (stop_window and self._hits_stop(tokens[row][-stop_window:], sampling.stop_strings)):
                    finish[row] = "stop"
                elif step + 1 == sampling.max_new_tokens:
                    finish[row] = "length"
                else:
                    keep.append(slot)
            if not keep:
                break
            if len(keep) < len(active):
                index = torch.tensor(keep)
                cache.batch_select_indices(index)
                next_tokens, pad_mask, positions = next_tokens[index], pad_mask[index], positions[index]
                active = [active[slot] for slot in keep]
            output = self.model(
                input_ids=next_tokens[:, None],
                attention_mask=pad_mask[:, : width + step + 1],
                position_ids=(positions + step)[:, None],
                past_key_values=cache,
                use_cache=True,
            )
            logits = output.logits[:, -1].float()
        self.stats.decode_seconds += time.perf_counter() - started
        self.stats.sequences += rows
        results: list[list[Generation]] = [[] for _ in prompts]
        for row in range(rows):
            generation = self._finish(tokens[row], lengths[row], finish[row] or "length", sampling.stop_strings)
            generation.eos_id = eos[row]
            if watch:
                generation.watched = torch.stack(watched[row]) if watched[row] else torch.zeros(0, len(watch) + 1)
            self.stats.generated_tokens += len(tokens[row])
            self.stats.finish_reasons[generation.finish_reason] = (
                self.stats.finish_reasons.get(generation.finish_reason, 0) + 1
            )
            results[row // num_samples].append(generation)
        return results

    def _stop_window(self, stop_strings: Sequence[str]) -> int:
        """How many trailing tokens can hold a stop string that just completed (0 = no stop strings)."""
        if not stop_strings:
            return 0
        return max(len(self.tokenizer(text, add_special_tokens=False)["input_ids"]) for text in stop_strings) + 2

    def _hits_stop(self, tail: list[int], stop_strings: Sequence[str]) -> bool:
        text = self.tokenizer.decode(tail, skip_special_tokens=True)
        return any(stop in text for stop in stop_strings)

    def _finish(self, token_ids: list[int], prompt_tokens: int, reason: str, stop_strings: Sequence[str]) -> Generation:
        """Decode and cut the text after the first stop string."""
        text = self.tokenizer.decode(token_ids, skip_special_tokens=True)
        for stop in stop_strings:
            position = text.find(stop)
            if position >= 0:
                text = text[: position + len(stop)]
                reason = "stop"
        return Generation(text=text, token_ids=token_ids, prompt_tokens=prompt_tokens, finish_reason=reason)
