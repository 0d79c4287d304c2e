"""PolicySFTModule under Lightning: the policy trains in train mode, so gradient checkpointing really recomputes."""

from __future__ import annotations

import lightning as L
import torch

from eagrl.policy.backbone import attach_lora
from eagrl.policy.frozen import FrozenLayerCache, frozen_layer_count
from eagrl.policy.sft import PolicySFTModule, sft_loader
from tests.policy.conftest import nonzero_adapter, tiny

LORA = {"r": 4, "lora_alpha": 8, "lora_dropout": 0.0, "target_modules": ["q_proj", "v_proj"]}


def test_fit_recomputes_every_layer_with_gradient_checkpointing():
    """The model enters in eval mode (as from_pretrained leaves it); during fit each decoder layer runs twice per
    step, in the forward and again in the backward pass (checkpointing), and never in eval mode (without the module's
    on_fit_start it stayed in eval mode: 2 eval calls, no recompute)."""
    model, _ = tiny()
    policy = attach_lora(model.eval(), LORA)
    policy.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    calls = {"train": 0, "eval": 0}

    def count(mlp, *_):
        calls["train" if model.model.layers[0].training else "eval"] += 1

    # transformers checkpoints the layer's forward, so hooks inside it run again on recompute (a pre-hook: the
    # recompute stops early, once the tensors the backward pass needs exist)
    model.model.layers[0].mlp.register_forward_pre_hook(count)
    items = [{"input_ids": list(range(3, 40)), "labels": [-100] * 20 + list(range(23, 40))}] * 2
    trainer = L.Trainer(
        max_epochs=1, accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False,
    )  # fmt: skip
    trainer.fit(PolicySFTModule(policy), sft_loader(items, batch_size=1, pad_id=0, shuffle=False, seed=0))
    assert calls == {"train": 4, "eval": 0}


def test_loss_on_completion_logits_equals_the_full_sequence_loss():
    """The module computes logits only from the batch's first completion position on; its loss is the model's own
    full-sequence loss (mean over the completion tokens of a right-padded batch whose rows start them at different
    positions), and so is its gradient."""
    model, _ = tiny()
    items = [
        {"input_ids": list(range(3, 40)), "labels": [-100] * 20 + list(range(23, 40))},
        {"input_ids": list(range(5, 30)), "labels": [-100] * 12 + list(range(17, 30))},
    ]
    batch = next(iter(sft_loader(items, batch_size=2, pad_id=0, shuffle=False, seed=0)))
    module = PolicySFTModule(model)
    loss = module(batch)
    reference = model(**batch, use_cache=False).loss
    assert torch.allclose(loss, reference, atol=1e-6)
    loss.backward()
    ours = model.model.layers[0].self_attn.q_proj.weight.grad.clone()
    model.zero_grad()
    reference.backward()
    assert torch.allclose(ours, model.model.layers[0].self_attn.q_proj.weight.grad, atol=1e-6)


def _two_rows():
    items = [
        {"input_ids": list(range(3, 40)), "labels": [-100] * 20 + list(range(23, 40))},
        {"input_ids": list(range(5, 30)), "labels": [-100] * 12 + list(range(17, 30))},
    ]
    return next(iter(sft_loader(items, batch_size=2, pad_id=0, shuffle=False, seed=0)))


def _adapter_gradients(policy) -> list[torch.Tensor]:
    return [parameter.grad.clone() for parameter in policy.parameters() if parameter.requires_grad]


def test_frozen_layer_cache_gives_the_full_forward_loss_and_gradients():
    """LoRA on the top layer only: the bottom layer is frozen, its hidden states are stored per example on the first
    pass and read on the second; loss and adapter gradients equal a full forward pass's each time. An adapter on
    every layer leaves nothing to cache."""
    model, _ = tiny()
    policy = nonzero_adapter(attach_lora(model, {**LORA, "layers_to_transform": [1]}))
    assert frozen_layer_count(policy) == 1
    batch = _two_rows()
    plain, cached = PolicySFTModule(policy), PolicySFTModule(policy, frozen_cache_gb=1.0)
    assert plain.frozen_cache is None and cached.frozen_cache is not None
    reference = plain(batch)
    reference.backward()
    expected = _adapter_gradients(policy)
    for passes in (1, 2):
        policy.zero_grad()
        loss = cached(batch)
        loss.backward()
        assert torch.allclose(loss, reference, atol=1e-6)
        for ours, theirs in zip(_adapter_gradients(policy), expected, strict=True):
            assert torch.allclose(ours, theirs, atol=1e-6)
        assert cached.frozen_cache.summary() | {"stored_gb": 0} == {
            "frozen_layers": 1, "hits": 2 * (passes - 1), "misses": 2, "stored_gb": 0,
        }  # fmt: skip
    every_layer, _ = tiny()
    assert FrozenLayerCache.attach(attach_lora(every_layer, LORA), budget_gb=1.0) is None


def test_frozen_layer_cache_turns_itself_off_when_the_split_pass_disagrees():
    """A decoder that treats ``inputs_embeds`` differently from its own embeddings (as Gemma scales them) fails the
    first batch's check: the module drops the cache and computes the full forward's loss."""
    model, _ = tiny()
    policy = attach_lora(model, {**LORA, "layers_to_transform": [1]})

    def scale_given_embeddings(module, args, kwargs):
        if kwargs.get("inputs_embeds") is not None:
            kwargs["inputs_embeds"] = kwargs["inputs_embeds"] * 2
        return args, kwargs

    model.model.register_forward_pre_hook(scale_given_embeddings, with_kwargs=True)
    batch = _two_rows()
    module = PolicySFTModule(policy, frozen_cache_gb=1.0)
    loss = module(batch)
    assert module.frozen_cache is None
    assert torch.allclose(loss, PolicySFTModule(policy)(batch), atol=1e-6)
