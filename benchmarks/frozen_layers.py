"""The frozen-layer cache: SFT and RL passes with the layers below the adapter read from the store vs run in full.

    python benchmarks/frozen_layers.py --write BENCHMARKS.md                # TJH prompts, SmolLM2-135M, ~5 min
    python benchmarks/frozen_layers.py experiment=tiny --patients 2 --repeats 1   # smoke test

The CPU configs put LoRA on SmolLM2's top 12 of 30 layers (``backbone.lora.layers_to_transform``), so the 18 below
compute the same hidden states for an input every time (:mod:`eagrl.policy.frozen`). Two passes, each timed with
the cache (``cached``: the store already holds the input, as in SFT epochs after the first and in RL passes after
π_old's) and without it (``full``), alternating which goes first between repeats (the machine is shared):

- ``sft step``: the SFT module's loss and backward pass over one example (prompt + an expert-label completion);
- ``rl passes``: what one RL step runs over a group of G answers after sampling them: π_old and the KL reference
  (no gradient) and two PPO epochs (loss and backward), :func:`~eagrl.rl.rollout.score_responses`.

Reported: median seconds per example / group, the full ÷ cached ratio, and the largest loss and gradient
differences between the two (the same computation to float rounding). Trailing ``key=value`` arguments are Hydra
overrides of the ``sft`` config.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

from eagrl.cli.entry import compose_entry, with_default_experiment
from eagrl.evaluation.aggregate import provenance, write_section
from eagrl.policy.backbone import attach_lora, load_backbone
from eagrl.policy.frozen import FrozenLayerCache
from eagrl.policy.sft import IGNORE, ChatExample, PolicySFTModule, sft_loader, tokenize_example
from eagrl.rl.rollout import score_responses
from eagrl.stages.runtime import prepared_datamodule

#: the TJH recipe that learns (LoRA on the top 12 layers) unless another experiment is given
DEFAULT_EXPERIMENT = "tjh_expert_label"
#: an expert-label completion (~30 tokens), and G answers of that kind for the RL group
COMPLETION = (
    "<Important Features> Lactate dehydrogenase; Interleukin-6 </Important Features> "
    "<Final answer> 0.90 </Final answer>"
)
ANSWERS = [COMPLETION.replace("0.90", probability) for probability in ("0.90", "0.10", "0.75", "0.35")]


def gradients(policy) -> list[torch.Tensor]:
    """The adapter's gradients (copies), then zeroed."""
    copies = [parameter.grad.clone() for parameter in policy.parameters() if parameter.requires_grad]
    policy.zero_grad()
    return copies


def sft_step(module: PolicySFTModule, batch) -> tuple[float, float, list[torch.Tensor]]:
    """Seconds, loss and gradients of one SFT step."""
    started = time.perf_counter()
    loss = module(batch)
    loss.backward()
    return time.perf_counter() - started, float(loss.detach()), gradients(module.model)


def rl_passes(policy, prompt_ids, responses, pad_id, frozen) -> tuple[float, float, list[torch.Tensor]]:
    """Seconds of π_old + reference + two PPO-epoch passes over a group, the last pass's summed log-probability and
    the gradients."""
    started = time.perf_counter()
    with torch.no_grad():
        score_responses(policy, prompt_ids, responses, pad_id, entropy=True, frozen=frozen)
        with policy.disable_adapter():
            score_responses(policy, prompt_ids, responses, pad_id, frozen=frozen)
    for _ in range(2):
        total = score_responses(policy, prompt_ids, responses, pad_id, frozen=frozen).logp.sum()
        total.backward()
    return time.perf_counter() - started, float(total.detach()), gradients(policy)


def largest_gradient_gap(first: list[torch.Tensor], second: list[torch.Tensor]) -> float:
    """max |Δgrad| ÷ max |grad| over the adapter."""
    scale = max(float(g.abs().max()) for g in first) or 1.0
    return max(float((a - b).abs().max()) for a, b in zip(first, second, strict=True)) / scale


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=8, help="training patients (a stratified sample)")
    parser.add_argument("--repeats", type=int, default=2, help="rounds of both runners")
    parser.add_argument("--write", type=Path, help="write the table into this markdown file")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides of the sft config")
    args = parser.parse_intermixed_args(argv)
    overrides = with_default_experiment(args.overrides, DEFAULT_EXPERIMENT)
    cfg = compose_entry("sft", overrides)
    torch.set_num_threads(cfg.num_threads or torch.get_num_threads())
    datamodule = prepared_datamodule(cfg)
    _, prompts = datamodule.patients("train", cfg.task, cfg.prompt, args.patients)
    backbone = load_backbone(cfg.backbone)
    tokenizer = backbone.tokenizer
    policy = attach_lora(backbone.model, cfg.backbone.lora)
    policy.eval()  # no adapter dropout: both runners compute the same thing
    with torch.no_grad():  # a non-zero adapter (peft starts B at 0), as after training: its path counts in both
        for name, parameter in policy.named_parameters():
            if "lora_B" in name:
                parameter.normal_(std=0.02, generator=torch.Generator().manual_seed(0))
    examples = [ChatExample(str(index), prompt.messages(), COMPLETION) for index, prompt in enumerate(prompts)]
    items = [tokenize_example(tokenizer, example) for example in examples]
    batches = list(sft_loader(items, 1, tokenizer.pad_token_id, shuffle=False, seed=0))
    prompt_ids = [item["input_ids"][: item["labels"].count(IGNORE)] for item in items]  # the prompt is masked
    eos = [tokenizer.eos_token_id]
    responses = [tokenizer(answer, add_special_tokens=False)["input_ids"] + eos for answer in ANSWERS]
    full_module = PolicySFTModule(policy)
    cached_module = PolicySFTModule(policy, frozen_cache_gb=4.0)
    frozen = FrozenLayerCache.attach(policy, 4.0)
    if cached_module.frozen_cache is None or frozen is None:
        raise SystemExit("the model has no frozen layers below its adapter (backbone.lora.layers_to_transform)")
    for batch, ids in zip(batches, prompt_ids, strict=True):  # fill the stores (the first epoch / π_old's pass)
        cached_module(batch)
        rl_passes(policy, ids, responses, tokenizer.pad_token_id, frozen)

    seconds = {(task, runner): [] for task in ("sft step", "rl passes") for runner in ("full", "cached")}
    gaps = {"sft step": [0.0, 0.0], "rl passes": [0.0, 0.0]}
    for repeat in range(args.repeats):
        for batch, ids in zip(batches, prompt_ids, strict=True):
            runs = {}
            for runner in ("full", "cached") if repeat % 2 == 0 else ("cached", "full"):
                runs[("sft step", runner)] = sft_step(full_module if runner == "full" else cached_module, batch)
                runs[("rl passes", runner)] = rl_passes(
                    policy, ids, responses, tokenizer.pad_token_id, frozen if runner == "cached" else None
                )
            for task in gaps:
                full, cached = runs[(task, "full")], runs[(task, "cached")]
                gaps[task][0] = max(gaps[task][0], abs(full[1] - cached[1]) / max(abs(full[1]), 1.0))
                gaps[task][1] = max(gaps[task][1], largest_gradient_gap(full[2], cached[2]))
            for key, run in runs.items():
                seconds[key].append(run[0])
        print(f"repeat {repeat} done", flush=True)

    rows = []
    for task, unit in (("sft step", "example"), ("rl passes", f"group of {len(responses)}")):
        full, cached = statistics.median(seconds[(task, "full")]), statistics.median(seconds[(task, "cached")])
        ratios = [a / b for a, b in zip(seconds[(task, "full")], seconds[(task, "cached")], strict=True)]
        rows.append(
            f"| {task} (per {unit}) | {full:.2f} | {cached:.2f} | **{statistics.median(ratios):.2f}×** | "
            f"{gaps[task][0]:.1e} | {gaps[task][1]:.1e} |"
        )
    lines = [
        f"Command: `python benchmarks/frozen_layers.py {' '.join(sys.argv[1:] if argv is None else argv)}`  ",
        f"{provenance(torch.get_num_threads())}; backbone {cfg.backbone.name} in "
        f"{str(backbone.model.dtype).removeprefix('torch.')}, LoRA r {cfg.backbone.lora.r} on layers "
        f"{frozen.frozen}–{len(frozen.layers) - 1} ({frozen.frozen} frozen below); {len(prompts)} {cfg.dataset.name} "
        f"training prompts ({' '.join(overrides)}), mean {statistics.mean(map(len, prompt_ids)):.0f} tokens, an "
        f"expert-label completion of {len(responses[0])} tokens; a random non-zero adapter, eval mode (no "
        f"dropout); {args.repeats} interleaved repeats (medians over prompts and repeats).",
        "",
        "| pass | full (s) | cached (s) | full ÷ cached | max relative Δloss | max relative Δgrad |",
        "|---|---:|---:|---:|---:|---:|",
        *rows,
    ]
    content = "\n".join(lines)
    print(content)
    if args.write:
        write_section(args.write, "frozen_layers", content)


if __name__ == "__main__":
    main()
