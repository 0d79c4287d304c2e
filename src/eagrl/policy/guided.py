"""Guided decoding: the closing PQD spans constrained to a grammar, token by token (llguidance).

A grammar describes what the model may write next; at every decoding step the :class:`Guide` turns a row's
grammar state into a mask over the vocabulary (tokens that would leave the grammar get logit −inf) and
advances that state with the sampled token. Sampling is otherwise unchanged (temperature, top-p, seeds).
Three grammars (Lark syntax of llguidance), each ending with its closing tag:

- :func:`feature_list_grammar`: after ``<Important Features>``, 1 to ``max_features`` distinct names of the
  features the patient's prompt shows, separated by ``"; "``: `` LDH; Albumin </Important Features>``;
- :func:`probability_grammar`: after ``<Final answer>``, a probability with two decimals: `` 0.73 </Final answer>``;
- :func:`answer_grammar`: a whole PQD answer, free text up to the model's own ``<Important Features>`` tag, then
  both constrained spans (for RL rollouts and evaluation, when their ``guided`` switch is on).

Names are kept distinct with a parametric rule (one bit per name, the first 64 names; a 65th name onward may
repeat). With SmolLM2's 49k-token vocabulary the grammars take 1.5 % of the search's closing-span time
(BENCHMARKS.md "Guided decoding overhead": ``python benchmarks/guided.py``).
"""

from __future__ import annotations

import functools
import json
import time
from collections import OrderedDict
from collections.abc import Sequence

import llguidance
import llguidance.hf
import llguidance.torch
import torch
from transformers import PreTrainedTokenizerBase

FEATURES_CLOSE, FINAL_CLOSE = "</Important Features>", "</Final answer>"
#: names a parametric rule keeps distinct (its parameter is 64 bits)
DISTINCT_NAMES = 64
#: the probability and the closing tag after ``<Final answer>``
PROBABILITY = f'" 0." /[0-9]{{2}}/ " {FINAL_CLOSE}"'


def _feature_rules(names: Sequence[str], max_features: int, min_features: int = 1) -> list[str]:
    """Rules ``list1`` … ``list{max_features}``: a separated list of ``min_features`` to ``max_features`` distinct
    ``names`` (both capped at the number of names); ``list1::0x0`` starts it."""
    if not names:
        raise ValueError("a guided feature list needs at least one feature name shown in the prompt")
    if max_features < 1:
        raise ValueError(f"a guided feature list holds at least one name, got max_features={max_features}")
    names = list(dict.fromkeys(names))
    max_features = min(max_features, len(names))  # a longer list would run out of distinct names after a "; "
    min_features = min(max(min_features, 1), max_features)
    rules = []
    for position in range(1, max_features + 1):
        last = position == max_features
        alternatives = []
        for bit, name in enumerate(names):
            distinct = bit < DISTINCT_NAMES
            rest = "" if last else f" more{position + 1}::{f'set_bit({bit})' if distinct else '_'}"
            alternatives.append(json.dumps(name) + rest + (f" %if bit_clear({bit})" if distinct else ""))
        rules.append(f"list{position}::_ : " + "\n    | ".join(alternatives))
        if not last:
            end = '"" | ' if position >= min_features else ""  # the list may end only once it is long enough
            rules.append(f'more{position + 1}::_ : {end}"; " list{position + 1}::_')
    return rules


def feature_list_grammar(names: Sequence[str], max_features: int, min_features: int = 1) -> str:
    """What follows ``<Important Features>``: ``min_features`` to ``max_features`` distinct ``names``, then the
    closing tag."""
    rules = _feature_rules(names, max_features, min_features)
    return "\n".join([f'start: " " list1::0x0 " {FEATURES_CLOSE}"', *rules])


def probability_grammar() -> str:
    """What follows ``<Final answer>``: ``0.dd``, then the closing tag."""
    return f"start: {PROBABILITY}"


def answer_grammar(names: Sequence[str], max_features: int) -> str:
    """A whole PQD answer: free text up to ``<Important Features>``, the list, ``<Final answer>`` and ``0.dd``."""
    return "\n".join(
        [
            f'start: reasoning " " list1::0x0 " {FEATURES_CLOSE}\\n<Final answer>" {PROBABILITY}',
            "reasoning[lazy]: /(?s:.*)<Important Features>/",
            *_feature_rules(names, max_features),
        ]
    )


def _timed(method):
    """Add the method's wall time to ``self.seconds``."""

    @functools.wraps(method)
    def timed(self, *args, **kwargs):
        started = time.perf_counter()
        try:
            return method(self, *args, **kwargs)
        finally:
            self.seconds += time.perf_counter() - started

    return timed


class Guide:
    """Masks and grammar states for one tokenizer; ``seconds`` is the wall time spent in them so far.

    Args:
        tokenizer: a fast Hugging Face tokenizer (converted once, ~0.4 s for SmolLM2's vocabulary).
        max_grammars: compiled grammars kept (a grammar compiles in ~10 ms; a row starts from a copy, ~5 µs).
    """

    def __init__(self, tokenizer: PreTrainedTokenizerBase, max_grammars: int = 512):
        self.tokenizer = llguidance.hf.from_tokenizer(tokenizer)
        self.max_grammars = max_grammars
        self.compiled: OrderedDict[str, llguidance.LLMatcher] = OrderedDict()
        self.seconds = 0.0
        words = llguidance.torch.get_bitmask_shape(1, self.tokenizer.vocab_size)[1]
        self.shifts = torch.arange(32, dtype=torch.int32).repeat(words)

    @_timed
    def matcher(self, grammar: str) -> llguidance.LLMatcher:
        """A fresh grammar state at the start of ``grammar`` (Lark); raises ValueError on an invalid grammar."""
        compiled = self.compiled.get(grammar)
        if compiled is None:
            compiled = llguidance.LLMatcher(
                self.tokenizer, llguidance.LLMatcher.grammar_from_lark(grammar), log_level=0
            )
            if compiled.is_error():
                raise ValueError(f"invalid guided-decoding grammar: {compiled.get_error()}")
            self.compiled[grammar] = compiled
            while len(self.compiled) > self.max_grammars:
                self.compiled.popitem(last=False)
        self.compiled.move_to_end(grammar)
        return compiled.deep_copy()

    @_timed
    def mask_(self, logits: torch.Tensor, matchers: Sequence[llguidance.LLMatcher | None]) -> None:
        """Set to −inf, in place, the logits of tokens each row's grammar forbids. logits: (rows, vocab) float32;
        ``matchers[row]`` is None for a free row."""
        rows = [row for row, matcher in enumerate(matchers) if matcher is not None]
        if not rows:
            return
        bitmask = llguidance.torch.allocate_token_bitmask(len(rows), self.tokenizer.vocab_size)
        for slot, row in enumerate(rows):
            llguidance.torch.fill_next_token_bitmask(matchers[row], bitmask, slot)
        allowed = ((bitmask.repeat_interleave(32, dim=1) >> self.shifts) & 1).bool()  # (rows, 32 · words)
        vocab = logits.shape[-1]
        allowed = torch.nn.functional.pad(allowed[:, :vocab], (0, max(0, vocab - allowed.shape[1])))
        if not allowed.any(dim=1).all():
            raise RuntimeError(f"a guided row allows no token: {_errors(matchers[row] for row in rows)}")
        index = torch.tensor(rows)
        logits[index] = logits[index].masked_fill(~allowed, -torch.inf)

    @_timed
    def advance(self, matcher: llguidance.LLMatcher, token: int) -> bool:
        """Move ``matcher`` past ``token``; whether its grammar is complete (only the end of sequence may follow)."""
        if not matcher.consume_token(token):
            raise RuntimeError(f"guided decoding sampled a token its grammar forbids: {matcher.get_error()}")
        return matcher.is_stopped()


def _errors(matchers) -> str:
    return "; ".join(error for matcher in matchers if (error := matcher.get_error())) or "no parser error"
