"""SFT step with and without gradient checkpointing (``sft.gradient_checkpointing``), and with LoRA on the top layers
only (``backbone.lora.layers_to_transform``, the canary's setting): peak memory, time and the gradient, on the real
backbone and real trajectory-length examples.

    python benchmarks/sft_memory.py --write BENCHMARKS.md      # about 2 minutes on the 2-core CPU (SmolLM2-135M)

Each variant runs in its own process (peak RSS is per process): the backbone with the configured LoRA adapter in
train mode, ``--steps`` forward + backward passes of one example of ``--tokens`` tokens (the demo's trajectories
are ~1,100 tokens: a ~1,000-token prompt and its answer), the loss on every token. The first pass is a warm-up; the
table gives the mean seconds of the others, the process's peak RSS and the LoRA gradient's norm (the first two
variants must agree: checkpointing recomputes the same activations; the third trains fewer adapters, so its norm
differs, and its backward pass stops at the lowest adapted layer).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch
from omegaconf import OmegaConf

from eagrl.cli.entry import compose_entry
from eagrl.evaluation.aggregate import provenance, write_section
from eagrl.policy.backbone import attach_lora, load_backbone

VARIANTS = ("activations kept", "gradient checkpointing", "LoRA on the top layers only")


def measure(args) -> dict:
    """Peak RSS (GB), seconds per pass after the warm-up and the LoRA gradient norm of one variant."""
    cfg = compose_entry("sft", [f"backbone={args.backbone}"])
    torch.manual_seed(0)
    backbone = load_backbone(cfg.backbone).model
    lora = OmegaConf.to_container(cfg.backbone.lora, resolve=True)
    if args.variant == VARIANTS[2]:
        layers = backbone.config.num_hidden_layers
        lora["layers_to_transform"] = list(range(layers - min(args.top_layers, layers), layers))
    model = attach_lora(backbone, lora)
    if args.variant == VARIANTS[1]:
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    model.train()
    input_ids = torch.randint(0, model.config.vocab_size, (1, args.tokens), generator=torch.Generator().manual_seed(0))
    seconds = []
    for _ in range(args.steps):
        model.zero_grad()
        started = time.perf_counter()
        model(
            input_ids=input_ids, attention_mask=torch.ones_like(input_ids), labels=input_ids, use_cache=False
        ).loss.backward()
        seconds.append(time.perf_counter() - started)
    gradients = [p.grad.float().norm() ** 2 for p in model.parameters() if p.grad is not None]
    return {
        "peak_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9,
        "seconds": sum(seconds[1:]) / max(1, len(seconds) - 1),
        "gradient_norm": float(torch.stack(gradients).sum().sqrt()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="smollm2_135m", help="backbone config")
    parser.add_argument("--tokens", type=int, default=1100, help="example length in tokens")
    parser.add_argument("--steps", type=int, default=4, help="forward + backward passes (the first is a warm-up)")
    parser.add_argument("--top-layers", type=int, default=12, help="adapted layers of the third variant (canary: 12)")
    parser.add_argument("--write", type=Path, help="write the table into this BENCHMARKS.md")
    parser.add_argument("--variant", choices=VARIANTS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.variant:
        print(json.dumps(measure(args)))
        return
    common = [
        f"--backbone={args.backbone}",
        f"--tokens={args.tokens}",
        f"--steps={args.steps}",
        f"--top-layers={args.top_layers}",
    ]
    results = {}
    for variant in VARIANTS:
        child = subprocess.run(
            [sys.executable, __file__, *common, f"--variant={variant}"], capture_output=True, text=True, check=False
        )
        if child.returncode != 0:
            sys.exit(f"{variant}: the measuring process failed:\n{child.stderr[-2000:]}")
        results[variant] = json.loads(child.stdout.strip().splitlines()[-1])
    kept, recomputed, _ = (results[variant] for variant in VARIANTS)
    command = "python benchmarks/sft_memory.py " + " ".join(sys.argv[1:])
    lines = [
        f"Command: `{command.strip()}`  ",
        f"{provenance(torch.get_num_threads())}; "
        f"{args.backbone} + the configured LoRA adapter, one {args.tokens}-token example, loss on every token, "
        f"{args.steps - 1} timed forward + backward passes after a warm-up, one process per variant; the third "
        f"adapts the top {args.top_layers} layers only.",
        "",
        "| variant | peak RSS (GB) | s/pass | LoRA gradient norm | memory vs kept | time vs kept |",
        "|---|---:|---:|---:|---:|---:|",
        *(
            f"| {variant} | {row['peak_gb']:.2f} | {row['seconds']:.2f} | {row['gradient_norm']:.6g} | "
            f"{row['peak_gb'] / kept['peak_gb']:.2f}× | {row['seconds'] / kept['seconds']:.2f}× |"
            for variant, row in results.items()
        ),
    ]
    content = "\n".join(lines)
    print(content)
    if abs(recomputed["gradient_norm"] - kept["gradient_norm"]) > 1e-2 * kept["gradient_norm"]:
        sys.exit("the two variants' gradients differ by more than 1 %: checkpointing changed the computation")
    if args.write:
        write_section(args.write, "sft_memory", content)


if __name__ == "__main__":
    main()
