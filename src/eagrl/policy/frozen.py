"""The frozen bottom of a partly adapted decoder, run once per input (SFT epochs and RL passes reuse it).

A LoRA adapter on the top layers only (``backbone.lora.layers_to_transform``, the CPU configs' layers 18–29 of
SmolLM2's 30) leaves the embeddings and the layers below the first adapted one frozen: for a given input they
compute the same hidden states in every SFT epoch, and in every pass RL makes over a step's answers (π_old, the KL
reference, each PPO epoch). :class:`FrozenLayerCache` keeps those hidden states (the input of the first adapted
layer) by input, so later passes run the adapted layers alone — for SmolLM2 with 18 frozen layers about 40 % of an
SFT step's compute. Same loss and gradients up to float rounding; an input costs ``tokens × hidden × dtype size``
of memory (SmolLM2-135M, float32: 2.3 kB per token, ~1.6 MB for a 700-token example), and inputs beyond the memory
budget are run in full.

    cache = FrozenLayerCache.attach(model, budget_gb=2.0)      # None when nothing is frozen below an adapter
    logits = cache.logits(batch["input_ids"], batch["attention_mask"], logits_to_keep=40)    # SFT
    prompt_hidden, answer_hidden = cache.group(prompt_ids, answer_inputs)                    # RL, then:
    with cache.adapted_layers():
        model(inputs_embeds=prompt_hidden, past_key_values=kv, use_cache=True)

Works for decoders laid out as Llama / Qwen2 / Mistral (``embed_tokens``, ``layers`` whose ``self_attn`` has a
``layer_idx``, ``norm``; no attention dropout); :meth:`FrozenLayerCache.agrees` checks the split against a full
forward pass, and its users turn the cache off when it does not agree.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import torch
from transformers.cache_utils import DynamicCache

log = logging.getLogger(__name__)


@contextmanager
def _running_layers(decoder: torch.nn.Module, layers: Sequence[torch.nn.Module]) -> Iterator[None]:
    """Inside the block the decoder runs ``layers`` only, numbered 0, 1, … for a key/value cache (its own list
    and numbers are put back after)."""
    full, numbers = decoder.layers, [layer.self_attn.layer_idx for layer in layers]
    decoder.layers = torch.nn.ModuleList(layers)
    for index, layer in enumerate(layers):
        layer.self_attn.layer_idx = index
    try:
        yield
    finally:
        decoder.layers = full
        for layer, number in zip(layers, numbers, strict=True):
            layer.self_attn.layer_idx = number


def expand_rows(cache: DynamicCache, rows: int) -> None:
    """Make a one-row key/value cache serve ``rows`` rows (a view, not a copy)."""
    for layer in cache.layers:
        layer.keys = layer.keys.expand(rows, -1, -1, -1)
        layer.values = layer.values.expand(rows, -1, -1, -1)


def _decoder(model: torch.nn.Module) -> torch.nn.Module | None:
    """The decoder stack (``embed_tokens``, ``layers``, ``norm``) of a (peft-wrapped) causal LM, or None."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    decoder = getattr(base, "model", None)
    if not all(hasattr(decoder, name) for name in ("embed_tokens", "layers", "norm")):
        return None
    if not all(hasattr(getattr(layer, "self_attn", None), "layer_idx") for layer in decoder.layers):
        return None
    return decoder


def frozen_layer_count(model: torch.nn.Module) -> int:
    """How many decoder layers, from the bottom, hold no trainable parameter (0 when the embeddings train, when
    every layer is frozen, or when the model is not laid out as a Llama-style decoder)."""
    decoder = _decoder(model)
    if decoder is None or any(parameter.requires_grad for parameter in decoder.embed_tokens.parameters()):
        return 0
    count = 0
    for layer in decoder.layers:  # no trainable parameter, and no adapter of any name (e.g. a frozen KL reference)
        if any(parameter.requires_grad or "lora_" in name for name, parameter in layer.named_parameters()):
            break
        count += 1
    return count if count < len(decoder.layers) else 0


class FrozenLayerCache:
    """Hidden states entering the first adapted layer, stored by input (its token ids).

    Args:
        model: the policy (a peft model whose adapter starts above ``frozen`` layers).
        frozen: the number of frozen bottom layers (:func:`frozen_layer_count`).
        budget_gb: memory for stored hidden states; inputs beyond it are run in full every time.

    Attributes:
        hits, misses: inputs served from the store, and inputs whose frozen layers ran.
        stored_bytes: memory the stored hidden states take.
    """

    def __init__(self, model: torch.nn.Module, frozen: int, budget_gb: float):
        self.model, self.frozen = model, frozen
        self.decoder = _decoder(model)
        self.layers = list(self.decoder.layers)
        self.budget = int(budget_gb * 2**30)
        self.store: dict[bytes, tuple[torch.Tensor, ...]] = {}
        self.hits = self.misses = self.stored_bytes = 0

    @classmethod
    def attach(cls, model: torch.nn.Module, budget_gb: float | None) -> FrozenLayerCache | None:
        """A cache for ``model``, or None when the budget is 0 / None, nothing is frozen below the adapter, or the
        frozen layers are not deterministic (attention dropout)."""
        if not budget_gb:
            return None
        frozen = frozen_layer_count(model)
        if frozen == 0:
            return None
        if getattr(model.config, "attention_dropout", 0.0):
            log.info("frozen-layer cache off: the model has attention dropout, its frozen layers are not deterministic")
            return None
        return cls(model, frozen, budget_gb)

    def summary(self) -> dict[str, float]:
        """What the cache did, for ``metrics.json``."""
        return {
            "frozen_layers": self.frozen,
            "hits": self.hits,
            "misses": self.misses,
            "stored_gb": self.stored_bytes / 2**30,
        }

    def clear(self) -> None:
        """Forget the stored hidden states (RL: a new step's answers)."""
        self.store.clear()
        self.stored_bytes = 0

    def adapted_layers(self):
        """Context manager: inside it the model runs only the adapted layers, on ``inputs_embeds`` from this cache."""
        return _running_layers(self.decoder, self.layers[self.frozen :])

    def _stored(self, key: bytes, compute: Callable[[], tuple[torch.Tensor, ...]]) -> tuple[torch.Tensor, ...]:
        """The stored value of ``key``, or ``compute()`` (kept when it fits the budget)."""
        if key in self.store:
            self.hits += 1
            return self.store[key]
        value = compute()
        self._keep(key, value)
        return value

    def _keep(self, key: bytes, value: tuple[torch.Tensor, ...]) -> None:
        """Count a computed input and store it when it fits the budget."""
        self.misses += 1
        size = sum(tensor.numel() * tensor.element_size() for tensor in value)
        if self.stored_bytes + size <= self.budget:
            self.store[key] = value
            self.stored_bytes += size

    @torch.no_grad()
    def _below(self, **inputs) -> torch.Tensor:
        """Run the frozen layers on ``inputs`` (model keyword arguments); their output (rows, width, hidden), read
        where the final norm would take it."""
        captured: list[torch.Tensor] = []
        handle = self.decoder.norm.register_forward_pre_hook(lambda module, args: captured.append(args[0]))
        try:
            with _running_layers(self.decoder, self.layers[: self.frozen]):
                self.model(**inputs, logits_to_keep=1)
        finally:
            handle.remove()
        return captured[0].detach()

    def hidden(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """(batch, width, hidden) input of the first adapted layer for a right-padded batch (padding positions hold
        zeros); each row is stored by its own tokens, and the rows not stored yet run the frozen layers together."""
        lengths = attention_mask.sum(dim=1).tolist()
        keys = [input_ids[row, :length].numpy().tobytes() for row, length in enumerate(lengths)]
        missing = [row for row, key in enumerate(keys) if key not in self.store]
        if missing:
            computed = self._below(
                input_ids=input_ids[missing], attention_mask=attention_mask[missing], use_cache=False
            )
        rows = []
        for row, (key, length) in enumerate(zip(keys, lengths, strict=True)):
            if row in missing:
                value = computed[missing.index(row), :length]
                self._keep(key, (value,))
            else:
                (value,) = self.store[key]
                self.hits += 1
            rows.append(torch.nn.functional.pad(value, (0, 0, 0, input_ids.shape[1] - length)))
        return torch.stack(rows)

    def group(self, prompt_ids: Sequence[int], inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Input of the first adapted layer for a prompt (1, prompt, hidden) and for G answer rows run on top of it
        without a mask ((G, width, hidden); ``inputs`` (G, width) right-padded), stored by content."""
        prompt = torch.tensor([list(prompt_ids)])
        key = prompt.numpy().tobytes() + b"|" + inputs.numpy().tobytes() + bytes(str(tuple(inputs.shape)), "ascii")

        def compute() -> tuple[torch.Tensor, torch.Tensor]:
            cache = DynamicCache()
            prompt_hidden = self._below(input_ids=prompt, past_key_values=cache, use_cache=True)
            expand_rows(cache, len(inputs))
            return prompt_hidden, self._below(input_ids=inputs, past_key_values=cache, use_cache=True)

        return self._stored(key, compute)

    def logits(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, logits_to_keep: int) -> torch.Tensor:
        """The model's logits (batch, logits_to_keep, vocab) with the frozen layers read from the store; the
        adapted layers run with gradients as usual."""
        hidden = self.hidden(input_ids, attention_mask)
        with self.adapted_layers():
            return self.model(
                inputs_embeds=hidden, attention_mask=attention_mask, use_cache=False, logits_to_keep=logits_to_keep
            ).logits

    @torch.no_grad()
    def agrees(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, tolerance: float = 1e-3) -> bool:
        """Whether the split forward gives the full forward's logits on this batch (max |Δ| ≤ ``tolerance`` × the
        largest |logit|), both run in eval mode (no adapter dropout); nothing is stored."""
        training = self.model.training
        self.model.eval()
        try:
            full = self.model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits
            hidden = self._below(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)
            with self.adapted_layers():
                split = self.model(inputs_embeds=hidden, attention_mask=attention_mask, use_cache=False).logits
        finally:
            self.model.train(training)
        return close(full[attention_mask.bool()], split[attention_mask.bool()], tolerance)


def close(reference: torch.Tensor, other: torch.Tensor, tolerance: float = 1e-3) -> bool:
    """max |reference − other| ≤ ``tolerance`` × max(1, max |reference|)."""
    return float((reference - other).abs().max()) <= tolerance * max(float(reference.abs().max()), 1.0)
