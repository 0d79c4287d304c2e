"""The frozen bottom of a partly adapted decoder, run once per example (SFT epochs reuse it).

A LoRA adapter on the top layers only (``backbone.lora.layers_to_transform``, the CPU configs' layers 18–29 of
SmolLM2's 30) leaves the embeddings and the layers below the first adapted one frozen: for a given example they
compute the same hidden states in every epoch. :class:`FrozenLayerCache` keeps those hidden states (the input of
the first trainable layer) per example, so a later epoch runs the trainable layers alone — for SmolLM2 with 18
frozen layers about 40 % of an SFT step's compute. Same loss and gradients up to float rounding; each example costs
``tokens × hidden × dtype size`` of memory (SmolLM2-135M, float32: 2.3 kB per token, ~1.6 MB for a 700-token
example), and examples beyond the memory budget are run in full.

    cache = FrozenLayerCache.attach(model, budget_gb=2.0)      # None when nothing is frozen below an adapter
    logits = cache.logits(batch["input_ids"], batch["attention_mask"], logits_to_keep=40)

Works for decoders laid out as Llama / Qwen2 / Mistral (``embed_tokens``, ``layers``, ``norm``, no attention
dropout); :meth:`FrozenLayerCache.agrees` checks the split against a full forward pass before it is used.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch

log = logging.getLogger(__name__)


@contextmanager
def _running_layers(decoder: torch.nn.Module, layers: Sequence[torch.nn.Module]) -> Iterator[None]:
    """Inside the block the decoder runs ``layers`` only (its own list is put back after)."""
    full = decoder.layers
    decoder.layers = torch.nn.ModuleList(layers)
    try:
        yield
    finally:
        decoder.layers = full


def _decoder(model: torch.nn.Module) -> torch.nn.Module | None:
    """The decoder stack (``embed_tokens``, ``layers``, ``norm``) of a (peft-wrapped) causal LM, or None."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    decoder = getattr(base, "model", None)
    if all(hasattr(decoder, name) for name in ("embed_tokens", "layers", "norm")):
        return decoder
    return None


def frozen_layer_count(model: torch.nn.Module) -> int:
    """How many decoder layers, from the bottom, hold no trainable parameter (0 when the embeddings train, when
    every layer is frozen, or when the model is not laid out as a Llama-style decoder)."""
    decoder = _decoder(model)
    if decoder is None or any(parameter.requires_grad for parameter in decoder.embed_tokens.parameters()):
        return 0
    count = 0
    for layer in decoder.layers:
        if any(parameter.requires_grad for parameter in layer.parameters()):
            break
        count += 1
    return count if count < len(decoder.layers) else 0


class FrozenLayerCache:
    """Hidden states entering the first trainable layer, per example (keyed by its token ids).

    Args:
        model: the policy (a peft model whose adapter starts above ``frozen`` layers).
        frozen: the number of frozen bottom layers (:func:`frozen_layer_count`).
        budget_gb: memory for stored hidden states; examples beyond it are run in full every time.

    Attributes:
        hits, misses: rows served from the store, and rows whose frozen layers ran.
        stored_bytes: memory the stored hidden states take.
    """

    def __init__(self, model: torch.nn.Module, frozen: int, budget_gb: float):
        self.model, self.frozen = model, frozen
        self.decoder = _decoder(model)
        self.layers = list(self.decoder.layers)
        self.budget = int(budget_gb * 2**30)
        self.store: dict[bytes, torch.Tensor] = {}
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

    def hidden(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """(batch, width, hidden) input of the first trainable layer for a right-padded batch (padding positions
        hold zeros); rows not stored yet run the frozen layers once."""
        lengths = attention_mask.sum(dim=1).tolist()
        keys = [input_ids[row, :length].numpy().tobytes() for row, length in enumerate(lengths)]
        missing = [row for row, key in enumerate(keys) if key not in self.store]
        computed = self._run_frozen(input_ids[missing], attention_mask[missing]) if missing else None
        rows = []
        for row, key in enumerate(keys):
            if row in missing:
                value = computed[missing.index(row), : lengths[row]]
                self.misses += 1
                size = value.numel() * value.element_size()
                if self.stored_bytes + size <= self.budget:
                    self.store[key] = value
                    self.stored_bytes += size
            else:
                value = self.store[key]
                self.hits += 1
            rows.append(torch.nn.functional.pad(value, (0, 0, 0, input_ids.shape[1] - lengths[row])))
        return torch.stack(rows)

    @torch.no_grad()
    def _run_frozen(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """The frozen layers' output (rows, width, hidden), read where the final norm would take it."""
        captured: list[torch.Tensor] = []
        handle = self.decoder.norm.register_forward_pre_hook(lambda module, args: captured.append(args[0]))
        try:
            with _running_layers(self.decoder, self.layers[: self.frozen]):
                self.model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False, logits_to_keep=1)
        finally:
            handle.remove()
        return captured[0].detach()

    def logits(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, logits_to_keep: int) -> torch.Tensor:
        """The model's logits (batch, logits_to_keep, vocab) with the frozen layers read from the store; the
        trainable layers run with gradients as usual."""
        hidden = self.hidden(input_ids, attention_mask)
        with _running_layers(self.decoder, self.layers[self.frozen :]):
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
            with _running_layers(self.decoder, self.layers[self.frozen :]):
                hidden = self._run_frozen(input_ids, attention_mask)
                split = self.model(inputs_embeds=hidden, attention_mask=attention_mask, use_cache=False).logits
        finally:
            self.model.train(training)
        mask = attention_mask.bool()
        error = float((full - split)[mask].abs().max())
        scale = float(full[mask].abs().max())
        return error <= tolerance * max(scale, 1.0)
