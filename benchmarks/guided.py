"""Guided decoding overhead: the MCTS closing spans sampled with and without their grammars, in the same run.

    python benchmarks/guided.py --write BENCHMARKS.md     # SmolLM2-135M, Stage-1 TJH prompts, ~5 minutes on 2 cores
    python benchmarks/guided.py experiment=tiny --patients 4 --repeats 1      # smoke test (tiny random model)

Every patient's prompt is encoded once into the engine's prefix cache (as in the search); then, per repeat, both
runners answer the same closings of a depth-0 node, one after the other (their order alternates between
repeats, the machine is shared): the ``<Important Features>`` span (``mcts.answer_children`` samples per patient,
``mcts.features_tokens`` budget), then the ``<Final answer>`` span after each runner's own list
(``mcts.final_tokens``), with the search's sampling settings and ``generation.batch_size``:

- ``free``: unconstrained sampling (``mcts.guided=false``);
- ``guided``: :mod:`eagrl.policy.guided` grammars (the features the prompt shows with a value, ``0.dd``).

Tokens/s = generated tokens ÷ wall seconds of the two span calls (the suffix prefill included). A guided span
is shorter (it closes as soon as its list is complete), and a batch whose rows finish early decodes fewer rows
per forward pass, which lowers tokens/s by itself; so the mask's own cost is reported too: the share of the
time spent in the grammar (``EngineStats.guide_seconds``: masks, grammar states) and the tokens/s the same
tokens would have had without it. Trailing ``key=value`` arguments are Hydra overrides of the ``mcts`` config.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from dataclasses import dataclass
from pathlib import Path

import torch

from eagrl.cli.entry import compose_entry, with_default_experiment
from eagrl.evaluation.aggregate import provenance, write_section
from eagrl.mcts.search import clean
from eagrl.policy.backbone import load_backbone
from eagrl.policy.engine import EngineStats, GenerationEngine, PrefixCache, SamplingConfig
from eagrl.policy.guided import feature_list_grammar, probability_grammar
from eagrl.policy.parsing import FeatureVocabulary, parse_answer
from eagrl.stages.runtime import prepared_datamodule

#: the Stage-1 record's prompts and backbone unless another experiment is given
DEFAULT_EXPERIMENT = "stage1_tjh_smollm2"
RUNNERS = ("free", "guided")


@dataclass
class Run:
    """One runner's closings over all patients in one repeat."""

    stats: EngineStats
    answers: list[str]


def closings(engine, prompts, opening, names, search, guided: bool, seed: int) -> Run:
    """Both closing spans of every prompt (``answer_children`` samples each), as the search samples them."""
    stats = EngineStats()

    def span(prompt_ids, budget, stop, samples, grammars):
        sampling = SamplingConfig(
            max_new_tokens=budget,
            temperature=search.temperature,
            top_p=search.top_p,
            top_k=search.top_k,
            stop_strings=(stop,),
            seed=seed,
        )
        answers = engine.generate(prompt_ids, sampling, samples, grammars=grammars if guided else None)
        stats.accumulate(engine.stats)
        return answers

    tokens = engine.tokenizer
    listed = span(
        [ids + tokens(opening, add_special_tokens=False)["input_ids"] for ids in prompts],
        search.features_tokens,
        "</Important Features>",
        search.answer_children,
        [feature_list_grammar(shown, search.guided_features) for shown in names],
    )
    texts = [
        f"{opening} {clean(sample.text)} </Important Features>\n<Final answer>"
        for samples in listed
        for sample in samples
    ]
    rows = [ids for ids in prompts for _ in range(search.answer_children)]
    finals = span(
        [ids + tokens(text, add_special_tokens=False)["input_ids"] for ids, text in zip(rows, texts, strict=True)],
        search.final_tokens,
        "</Final answer>",
        1,
        [probability_grammar()] * len(rows),
    )
    answers = [f"{text} {clean(final.text)} </Final answer>" for text, (final,) in zip(texts, finals, strict=True)]
    return Run(stats, answers)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=16, help="training patients (a stratified sample)")
    parser.add_argument("--repeats", type=int, default=3, help="rounds of both runners")
    parser.add_argument("--write", type=Path, help="write the table into this markdown file (section 'guided')")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides of the mcts config")
    args = parser.parse_args(argv)
    overrides = with_default_experiment(args.overrides, DEFAULT_EXPERIMENT)
    cfg = compose_entry("mcts", overrides)
    torch.set_num_threads(cfg.num_threads or torch.get_num_threads())
    datamodule = prepared_datamodule(cfg)
    _, prompts = datamodule.patients("train", cfg.task, cfg.prompt, args.patients)
    backbone = load_backbone(cfg.backbone)
    engine = GenerationEngine(
        backbone.model,
        backbone.tokenizer,
        batch_size=cfg.generation.batch_size,
        progress=False,
        prefix_cache=PrefixCache(max_entries=args.patients),
    )
    encoded = engine.encode_chat([prompt.messages() for prompt in prompts])
    engine.add_prefixes(encoded)
    search = cfg.mcts
    opening = f"<Final subquestion> {search.final_subquestion} </Final subquestion>\n<Important Features>"
    names = [prompt.observed_features for prompt in prompts]
    vocabulary = FeatureVocabulary(datamodule.features)

    runs: dict[str, list[Run]] = {runner: [] for runner in RUNNERS}
    for repeat in range(args.repeats):
        for runner in RUNNERS if repeat % 2 == 0 else RUNNERS[::-1]:
            run = closings(engine, encoded, opening, names, search, runner == "guided", cfg.seed + repeat)
            runs[runner].append(run)
            print(f"repeat {repeat} {runner}: {run.stats.tokens_per_second:.1f} tok/s", flush=True)

    rows, rates = [], {}
    for runner in RUNNERS:
        total = EngineStats()
        for run in runs[runner]:
            total.accumulate(run.stats)
        parsed = [parse_answer(answer, vocabulary) for run in runs[runner] for answer in run.answers]
        shown = [
            set(names[index // search.answer_children]) for run in runs[runner] for index in range(len(run.answers))
        ]
        named = sum(
            1
            for answer, allowed in zip(parsed, shown, strict=True)
            if answer.features and set(answer.features) <= allowed
        )
        guide_share = total.guide_seconds / total.seconds
        rates[runner] = [run.stats.tokens_per_second for run in runs[runner]]
        rows.append(
            f"| {runner} | {len(parsed)} | {total.generated_tokens / len(parsed):.1f} | {total.seconds:.1f} | "
            f"{total.tokens_per_second:.1f} | {100 * guide_share:.1f} % | "
            f"{total.generated_tokens / (total.seconds - total.guide_seconds):.1f} | "
            f"{100 * sum(answer.status == 'ok' for answer in parsed) / len(parsed):.0f} % | "
            f"{100 * named / len(parsed):.0f} % |"
        )
    ratios = [guided / free for guided, free in zip(rates["guided"], rates["free"], strict=True)]
    guided_total = EngineStats()
    for run in runs["guided"]:
        guided_total.accumulate(run.stats)
    mask_overhead = guided_total.guide_seconds / (guided_total.seconds - guided_total.guide_seconds)
    lines = [
        f"Command: `python benchmarks/guided.py {' '.join(sys.argv[1:] if argv is None else argv)}`  ",
        f"{provenance(torch.get_num_threads())}; "
        f"backbone {cfg.backbone.name} in {str(backbone.model.dtype).removeprefix('torch.')}; "
        f"{args.patients} TJH training patients ({' '.join(overrides)}), "
        f"mean {statistics.mean(map(len, encoded)):.0f} prompt tokens (prefix-cached), "
        f"mean {statistics.mean(map(len, names)):.1f} names allowed; {search.answer_children} closings per patient, "
        f"temperature {search.temperature}, top-p {search.top_p}, batch {cfg.generation.batch_size}; "
        f"{args.repeats} interleaved repeats.",
        "",
        "| runner | closings | tokens per closing | seconds | tokens/s | time in the grammar | tokens/s without "
        "the grammar's time | `<Final answer>` parsed (ok) | lists only names shown |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
        *rows,
        "",
        f"Guided ÷ free tokens/s per repeat: {', '.join(f'{ratio:.3f}' for ratio in ratios)} "
        f"(median **{statistics.median(ratios):.3f}**, i.e. {100 * (1 - statistics.median(ratios)):.1f} % fewer "
        f"tokens/s, shorter spans included). The grammar's own cost at equal tokens: "
        f"**{100 * mask_overhead:.1f} %** of the guided runs' wall time without it.",
    ]
    content = "\n".join(lines)
    print(content)
    if args.write:
        write_section(args.write, "guided", content)


if __name__ == "__main__":
    main()
