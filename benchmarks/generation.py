"""Generation throughput: our engine vs plain ``model.generate`` on the same prompts, in the same run.

    python benchmarks/generation.py                      # SmolLM2-135M, TJH PQD prompts, batch 1 / 8 / 32
    python benchmarks/generation.py --write BENCHMARKS.md
    python benchmarks/generation.py backbone=tiny_random --batch-sizes 1 4 --new-tokens 8   # smoke test

For each batch size B the first B test prompts (longest-first order does not matter: every runner gets the
same B prompts as one batch) are answered with greedy decoding and the same token budget by

- ``generate/sdpa``: ``model.generate`` on the backbone as transformers loads it (left-padded batch);
- ``generate/eagrl_sdpa``: ``model.generate`` with our attention function (isolates that part of the gain);
- ``engine``: :class:`eagrl.policy.engine.GenerationEngine`.

Tokens/s = generated tokens ÷ wall seconds, prefill included. The compute bound divides the measured bf16 /
fp32 matmul FLOP/s by the FLOPs of one decoded token (2 × matmul parameters + attention over the context).
Trailing ``key=value`` arguments are Hydra overrides of the ``evaluate`` config (dataset, prompt, backbone).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

from eagrl.cli.entry import compose_entry
from eagrl.evaluation.aggregate import provenance, write_section
from eagrl.policy.attention import EAGRL_SDPA
from eagrl.policy.backbone import load_backbone
from eagrl.policy.engine import GenerationEngine, SamplingConfig
from eagrl.stages.runtime import prepared_datamodule

#: benchmark prompt budget: short enough for batch 32 with model.generate on a 2-core CPU
DEFAULT_OVERRIDES = ["prompt.max_visits=1", "prompt.omit_unobserved=true"]


def matmul_flops(dtype: torch.dtype, size: int = 1024, repeats: int = 20) -> float:
    """Measured FLOP/s of a (size × size) @ (size × size) matmul in ``dtype``."""
    a, b = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
    a @ b
    started = time.perf_counter()
    for _ in range(repeats):
        a @ b
    return 2 * size**3 * repeats / (time.perf_counter() - started)


def flops_per_token(model, context: int) -> float:
    """FLOPs to decode one token: 2 × matmul weights (incl. the tied LM head) + QK and AV over ``context``."""
    config = model.config
    matmul_parameters = sum(p.numel() for name, p in model.named_parameters() if p.dim() == 2 and "embed" not in name)
    matmul_parameters += config.vocab_size * config.hidden_size  # LM head (tied to the embedding in SmolLM2)
    head_dim = config.hidden_size // config.num_attention_heads
    attention = 4 * config.num_hidden_layers * config.num_attention_heads * head_dim * context
    return 2 * matmul_parameters + attention


def run_generate(model, tokenizer, prompts: list[list[int]], new_tokens: int) -> tuple[int, float]:
    """Generated tokens (up to EOS) and seconds of ``model.generate`` on one left-padded batch."""
    batch = tokenizer.pad({"input_ids": prompts}, return_tensors="pt", padding_side="left")
    started = time.perf_counter()
    with torch.inference_mode():
        output = model.generate(
            **batch, max_new_tokens=new_tokens, do_sample=False, pad_token_id=tokenizer.pad_token_id
        )
    seconds = time.perf_counter() - started
    generated = output[:, batch["input_ids"].shape[1] :]
    eos = tokenizer.eos_token_id
    tokens = sum(int((row == eos).nonzero()[0, 0]) if (row == eos).any() else len(row) for row in generated)
    return tokens, seconds


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--new-tokens", type=int, default=64, help="token budget per answer")
    parser.add_argument("--write", type=Path, help="write the table into this markdown file (section 'generation')")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides of the evaluate config")
    args = parser.parse_args(argv)
    cfg = compose_entry("evaluate", [*DEFAULT_OVERRIDES, *args.overrides])
    datamodule = prepared_datamodule(cfg)
    prompts = datamodule.prompts("test", cfg.task, cfg.prompt)
    backbone = load_backbone(cfg.backbone)
    model, tokenizer = backbone.model, backbone.tokenizer
    encoded = GenerationEngine(model, tokenizer, progress=False).encode_chat([p.messages() for p in prompts])
    sampling = SamplingConfig(max_new_tokens=args.new_tokens)

    rows = []
    for batch_size in args.batch_sizes:
        batch = encoded[:batch_size]
        results = {}
        for implementation in ("sdpa", EAGRL_SDPA):
            model.set_attn_implementation(implementation)
            results[f"generate/{implementation}"] = run_generate(model, tokenizer, batch, args.new_tokens)
        engine = GenerationEngine(model, tokenizer, batch_size=batch_size, progress=False)
        started = time.perf_counter()
        engine.generate(batch, sampling)
        results["engine"] = (engine.stats.generated_tokens, time.perf_counter() - started)
        engine_rate = results["engine"][0] / results["engine"][1]
        for runner, (tokens, seconds) in results.items():
            rows.append((batch_size, runner, tokens, seconds, tokens / seconds, engine_rate / (tokens / seconds)))
        print(rows[-3:], flush=True)
        model.set_attn_implementation(cfg.backbone.attn_implementation)

    dtype = model.dtype
    mean_context = sum(map(len, encoded[: max(args.batch_sizes)])) / len(encoded[: max(args.batch_sizes)])
    flop_rate = matmul_flops(dtype)
    per_token = flops_per_token(model, int(mean_context + args.new_tokens / 2))
    lines = [
        f"Command: `python benchmarks/generation.py {' '.join(sys.argv[1:] if argv is None else argv)}`  ",
        f"{provenance(torch.get_num_threads())}; "
        f"backbone {cfg.backbone.name} in {str(dtype).removeprefix('torch.')}; greedy, {args.new_tokens} new tokens; "
        f"TJH test prompts with {' '.join(DEFAULT_OVERRIDES + list(args.overrides))}, "
        f"mean {mean_context:.0f} prompt tokens.",
        "",
        "| batch | runner | generated tokens | seconds | tokens/s (prefill incl.) | engine speed-up |",
        "|---:|---|---:|---:|---:|---:|",
        *(f"| {b} | {r} | {t} | {s:.1f} | {rate:.1f} | {ratio:.2f}× |" for b, r, t, s, rate, ratio in rows),
        "",
        f"Compute bound: measured {str(dtype).removeprefix('torch.')} matmul {flop_rate / 1e9:.0f} GFLOP/s ÷ "
        f"{per_token / 1e9:.3f} GFLOP per decoded token (at {mean_context + args.new_tokens / 2:.0f} context tokens) = "
        f"**{flop_rate / per_token:.0f} tokens/s** (prefill and decode alike).",
    ]
    content = "\n".join(lines)
    print(content)
    if args.write:
        write_section(args.write, "generation", content)


if __name__ == "__main__":
    main()
