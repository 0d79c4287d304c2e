"""Supervised fine-tuning of the policy: Stage 1 trajectory SFT and the label-only SFT baseline (METHOD §5).

An example is a chat prompt and the assistant's completion. The loss is next-token cross-entropy on the
completion (and the end-of-turn token) only: prompt tokens are masked with -100, and the mean runs over the
completion tokens of the batch. The prompt is encoded exactly as the generation engine encodes it at inference
(chat template with the generation prompt, then the completion's own tokens), so training and decoding agree.

    module = PolicySFTModule(attach_lora(model, lora_cfg), lr=2e-4)
    trainer.fit(module, DataLoader(SFTDataset(tokenize_examples(tokenizer, examples)), collate_fn=...))
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial

import torch
from torch.utils.data import DataLoader, Dataset, Sampler
from transformers import PreTrainedTokenizerBase

from eagrl.policy.frozen import FrozenLayerCache
from eagrl.policy.lightning import AdapterModule
from eagrl.utils.numerics import NonFiniteGuard

log = logging.getLogger(__name__)

#: label value of a token that is not trained on
IGNORE = -100


@dataclass(frozen=True)
class ChatExample:
    """One training example: a patient's chat prompt (system + user) and the assistant's completion."""

    patient_id: str
    messages: list[dict[str, str]]
    completion: str


def tokenize_example(tokenizer: PreTrainedTokenizerBase, example: ChatExample) -> dict[str, list[int]]:
    """``input_ids`` = prompt + completion + end of turn; ``labels`` = the same with the prompt masked."""
    prompt = tokenizer.apply_chat_template(example.messages, add_generation_prompt=True, tokenize=False)
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    completion_ids = tokenizer(example.completion, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    return {"input_ids": prompt_ids + completion_ids, "labels": [IGNORE] * len(prompt_ids) + completion_ids}


class SFTDataset(Dataset):
    """Tokenised examples (see :func:`tokenize_example`)."""

    def __init__(self, items: list[dict[str, list[int]]]):
        self.items = items

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict[str, list[int]]:
        return self.items[index]


def collate(items: list[dict[str, list[int]]], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad a batch: ``input_ids``, ``attention_mask`` and ``labels`` (B, longest); padding is ignored."""
    width = max(len(item["input_ids"]) for item in items)
    input_ids = torch.full((len(items), width), pad_id, dtype=torch.long)
    labels = torch.full((len(items), width), IGNORE, dtype=torch.long)
    attention_mask = torch.zeros((len(items), width), dtype=torch.long)
    for row, item in enumerate(items):
        length = len(item["input_ids"])
        input_ids[row, :length] = torch.tensor(item["input_ids"])
        labels[row, :length] = torch.tensor(item["labels"])
        attention_mask[row, :length] = 1
    return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}


class EpochShuffle(Sampler[int]):
    """A permutation of the examples that depends only on (seed, epoch): Lightning calls :meth:`set_epoch`, so an
    epoch redone after a resume sees exactly the order it would have seen."""

    def __init__(self, size: int, seed: int):
        self.size, self.seed, self.epoch = size, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        return iter(torch.randperm(self.size, generator=torch.Generator().manual_seed(self.seed + self.epoch)).tolist())

    def __len__(self) -> int:
        return self.size


def sft_loader(items: list[dict[str, list[int]]], batch_size: int, pad_id: int, shuffle: bool, seed: int) -> DataLoader:
    """A DataLoader over tokenised examples (shuffled by :class:`EpochShuffle`)."""
    return DataLoader(
        SFTDataset(items),
        batch_size=batch_size,
        sampler=EpochShuffle(len(items), seed) if shuffle else None,
        collate_fn=partial(collate, pad_id=pad_id),
    )


class PolicySFTModule(AdapterModule):
    """Next-token SFT of a (LoRA-wrapped) causal LM; checkpoints hold only the adapter (:class:`AdapterModule`).

    Args:
        model: the policy, usually a peft model whose adapter is the only trainable part.
        lr: AdamW learning rate.
        weight_decay: AdamW weight decay.
        on_nonfinite: a non-finite loss is skipped (``skip``) or stops the run (``stop``).
        frozen_cache_gb: memory for the hidden states of the frozen layers below the adapter, kept per example so
            later epochs run the adapted layers only (:class:`~eagrl.policy.frozen.FrozenLayerCache`; 0 = off).
    """

    def __init__(
        self,
        model: torch.nn.Module,
        lr: float = 2e-4,
        weight_decay: float = 0.0,
        on_nonfinite: str = "skip",
        frozen_cache_gb: float = 0.0,
    ):
        super().__init__(lr, weight_decay)
        self.model = model
        self.save_hyperparameters(ignore=["model"])
        self.guard = NonFiniteGuard(on_nonfinite, "sft.on_nonfinite")
        self.frozen_cache = FrozenLayerCache.attach(model, frozen_cache_gb)
        self.frozen_cache_checked = False

    def on_fit_start(self) -> None:
        """Train mode for the whole policy: ``from_pretrained`` leaves the base model in eval mode and Lightning
        keeps each module's mode, so the decoder layers would skip gradient checkpointing (and any dropout)."""
        self.model.train()

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Mean cross-entropy over the completion tokens of the batch (nats per token).

        Logits are computed only from the position before the batch's earliest completion token on: the LM head
        over a long prompt (vocabulary × prompt length) would be a fifth of the step's compute for nothing. With a
        frozen-layer cache, the layers below the adapter run once per example (checked on the first batch against
        a full forward pass; off when they disagree).
        """
        labels = batch["labels"]
        trained = (labels != IGNORE).any(dim=0).nonzero()
        first = max(int(trained[0]), 1) if len(trained) else labels.shape[1] - 1  # first trained position
        keep = labels.shape[1] - first + 1  # positions first - 1 … last, each predicting the next
        input_ids, attention_mask = batch["input_ids"], batch["attention_mask"]
        if self.frozen_cache is not None and not self.frozen_cache_checked:
            self.frozen_cache_checked = True
            if not self.frozen_cache.agrees(input_ids, attention_mask):
                log.warning("frozen-layer cache off: its split forward pass does not reproduce this model's logits")
                self.frozen_cache = None
        if self.frozen_cache is not None:
            logits = self.frozen_cache.logits(input_ids, attention_mask, logits_to_keep=keep)
        else:
            logits = self.model(
                input_ids=input_ids, attention_mask=attention_mask, use_cache=False, logits_to_keep=keep
            ).logits
        return torch.nn.functional.cross_entropy(
            logits[:, :-1].float().reshape(-1, logits.shape[-1]), labels[:, first:].reshape(-1), ignore_index=IGNORE
        )

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor | None:
        """The batch's loss, or None (Lightning skips the batch) when it is not finite."""
        loss = self(batch)
        if not self.guard.check(loss, self.global_step):
            self.log("train/nonfinite_skips", float(self.guard.count), on_step=True, batch_size=1)
            return None
        self.log("train/loss", loss, prog_bar=True, batch_size=len(batch["input_ids"]), on_step=True, on_epoch=True)
        return loss

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self.log("val/loss", self(batch), prog_bar=True, batch_size=len(batch["input_ids"]), on_epoch=True)
