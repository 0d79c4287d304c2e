"""Token-expectation scoring: the second pass against the digits read off the greedy answers, in the same run.

    python benchmarks/token_expectation.py --adapter <eagrl-rl folder> --write BENCHMARKS.md   # TJH, ~10 min
    python benchmarks/token_expectation.py --write BENCHMARKS.md                # the base model: no answer read off
    python benchmarks/token_expectation.py experiment=tiny --patients 4 --repeats 1            # smoke test

An evaluation (``eagrl-evaluate score.method=token_expectation``) answers every patient greedily, then reads ŷ as
E[0.dd] under the policy's digit distributions after ``<Final answer> 0.`` (:mod:`eagrl.policy.scoring`). Two
runners score the same training patients (labels unused), one after the other, their order alternating between
repeats (the machine is shared):

- ``pass``: greedy answers, then the teacher-forced pass over every prompt + answer (the score before b912a6a);
- ``read_off``: greedy answers recording the digit logits at each step (``generate(watch=digits)``), p₁ and p₂
  read off them where the answer wrote its own ``<Final answer> 0.`` (:func:`~eagrl.policy.scoring.generated_digits`),
  the pass only for the rest;
- ``cached``: as eagrl-evaluate does it now: ``read_off``, and the rest's pass run per batch while the batch's
  prompts are in the prefix cache (``generate(keep_prompts=True)``, :func:`~eagrl.policy.scoring.batch_digits`:
  the answer alone is encoded), the prompts' shared start encoded once.

Reported: seconds to answer and to score, their sum (what an evaluation costs), the pass ÷ read-off ratio of that
sum, the share of patients read off, whether both runners wrote the same answers and the largest |Δŷ| between them.
Trailing ``key=value`` arguments are Hydra overrides of the ``evaluate`` config.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

from eagrl.cli.entry import compose_entry, with_default_experiment
from eagrl.evaluation.aggregate import provenance, write_section
from eagrl.policy.backbone import load_adapter, load_backbone
from eagrl.policy.engine import GenerationEngine, PrefixCache, SamplingConfig
from eagrl.policy.scoring import DigitsPerBatch, digit_token_ids, generated_digits, score_answers
from eagrl.stages.runtime import prepared_datamodule

#: the TJH recipe that learns (features-then-answer prompts) unless another experiment is given
DEFAULT_EXPERIMENT = "tjh_expert_label"
RUNNERS = ("pass", "read_off", "cached")


def evaluate_once(engine: GenerationEngine, prompt_ids, sampling: SamplingConfig, runner: str) -> dict:
    """Greedy answers and their token-expectation scores: seconds of each part, ŷ, texts, patients read off."""
    watch = digit_token_ids(engine.tokenizer) if runner != "pass" else []
    cached = runner == "cached"
    engine.prefix_cache = PrefixCache(engine.batch_size + 1) if cached else None
    on_batch = DigitsPerBatch(engine, prompt_ids, watch) if cached else None
    started = time.perf_counter()
    answers = [
        samples[0]
        for samples in engine.generate(prompt_ids, sampling, watch=watch, keep_prompts=cached, on_batch=on_batch)
    ]
    answered = time.perf_counter()
    generated = on_batch.reads if on_batch else None
    if runner == "read_off":
        generated = [generated_digits(engine.tokenizer, answer, watch) for answer in answers]
    texts = [answer.text for answer in answers]
    probabilities, details = score_answers(engine, prompt_ids, texts, method="token_expectation", generated=generated)
    return {
        "answer_seconds": answered - started,
        "score_seconds": time.perf_counter() - answered,
        "probabilities": probabilities,
        "texts": texts,
        "read_off": details.counts["digits_from_generation"],
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--adapter", help="a LoRA adapter folder (an eagrl-rl or eagrl-sft artifact); none: base")
    parser.add_argument("--patients", type=int, default=48, help="training patients (a stratified sample)")
    parser.add_argument("--repeats", type=int, default=2, help="rounds of both runners")
    parser.add_argument("--write", type=Path, help="write the table into this markdown file")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides of the evaluate config")
    args = parser.parse_intermixed_args(argv)
    overrides = with_default_experiment(args.overrides, DEFAULT_EXPERIMENT)
    cfg = compose_entry("evaluate", overrides)
    torch.set_num_threads(cfg.num_threads or torch.get_num_threads())
    datamodule = prepared_datamodule(cfg)
    _, prompts = datamodule.patients("train", cfg.task, cfg.prompt, args.patients)
    backbone = load_backbone(cfg.backbone)
    model = load_adapter(backbone.model, args.adapter) if args.adapter else backbone.model
    engine = GenerationEngine(model, backbone.tokenizer, batch_size=cfg.generation.batch_size, progress=False)
    prompt_ids = engine.encode_chat([prompt.messages() for prompt in prompts])
    sampling = SamplingConfig(
        max_new_tokens=cfg.generation.max_new_tokens, stop_strings=tuple(cfg.generation.stop_strings), seed=cfg.seed
    )

    runs: dict[str, list[dict]] = {runner: [] for runner in RUNNERS}
    for repeat in range(args.repeats):
        for runner in RUNNERS if repeat % 2 == 0 else RUNNERS[::-1]:
            run = evaluate_once(engine, prompt_ids, sampling, runner)
            runs[runner].append(run)
            print(f"repeat {repeat} {runner}: answer {run['answer_seconds']:.1f} s, score "
                  f"{run['score_seconds']:.1f} s, read off {run['read_off']}", flush=True)  # fmt: skip

    rows = []
    for runner in RUNNERS:
        answer = statistics.median(run["answer_seconds"] for run in runs[runner])
        score = statistics.median(run["score_seconds"] for run in runs[runner])
        read = runs[runner][0]["read_off"]
        rows.append(
            f"| {runner} | {answer:.1f} | {score:.1f} | {answer + score:.1f} | {read} of {len(prompts)} "
            f"({100 * read / len(prompts):.0f} %) |"
        )
    totals = {runner: [run["answer_seconds"] + run["score_seconds"] for run in runs[runner]] for runner in RUNNERS}
    comparisons = []
    for runner in RUNNERS[1:]:
        ratios = [slow / fast for slow, fast in zip(totals["pass"], totals[runner], strict=True)]
        pairs = list(zip(runs["pass"], runs[runner], strict=True))
        same_texts = all(a["texts"] == b["texts"] for a, b in pairs)
        largest = max(float(np.abs(a["probabilities"] - b["probabilities"]).max()) for a, b in pairs)
        comparisons.append(
            f"Pass ÷ {runner} seconds per repeat: {', '.join(f'{ratio:.2f}' for ratio in ratios)} (median "
            f"**{statistics.median(ratios):.2f}×**); same greedy answers: {'yes' if same_texts else 'NO'}; largest "
            f"|Δŷ| {largest:.1e}."
        )
    lines = [
        f"Command: `python benchmarks/token_expectation.py {' '.join(sys.argv[1:] if argv is None else argv)}`  ",
        f"{provenance(torch.get_num_threads())}; "
        f"backbone {cfg.backbone.name} in {str(backbone.model.dtype).removeprefix('torch.')}"
        f"{f', adapter {Path(args.adapter).name}' if args.adapter else ' (no adapter)'}; "
        f"{len(prompts)} {cfg.dataset.name} training patients ({' '.join(overrides)}), "
        f"mean {statistics.mean(map(len, prompt_ids)):.0f} prompt tokens; greedy, "
        f"{cfg.generation.max_new_tokens}-token budget, batch {cfg.generation.batch_size}; "
        f"{args.repeats} interleaved repeats (medians).",
        "",
        "| runner | seconds to answer | seconds to score | seconds in all | patients read off the answer |",
        "|---|---:|---:|---:|---:|",
        *rows,
        "",
        *comparisons,
    ]
    content = "\n".join(lines)
    print(content)
    if args.write:  # one section for a trained adapter, one for the base model
        write_section(args.write, "token_expectation" if args.adapter else "token_expectation_base", content)


if __name__ == "__main__":
    main()
