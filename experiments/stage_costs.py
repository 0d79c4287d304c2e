"""Markdown table of a stage script's wall times (``times.tsv``: name, seconds, command) with each stage's
headline numbers from its run directory's ``metrics.json`` (``<run>/<name>/`` or ``<run>/evaluate/<name>/``);
optionally into a block of BENCHMARKS.md.

    python experiments/stage_costs.py logs/stage1/runs/<datetime> --benchmarks BENCHMARKS.md --section stage1_cost
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from eagrl.evaluation.aggregate import provenance, write_section


def headline(metrics: dict) -> str:
    """The few numbers that say what a stage produced."""
    if "complete_answers" in metrics:  # eagrl-mcts
        selected = metrics["selected"]
        return (
            f"{metrics['patients']} patients, {metrics['complete_answers']} complete answers "
            f"({100 * metrics['parse_rate']:.0f} % parsed, {100 * metrics['correct_side_rate']:.0f} % on the label's "
            f"side, mean R_att {metrics['mean_r_att']:.3f}), {selected['trajectories']} selected {selected['by_label']}"
        )
    if "optimizer_steps" in metrics:  # eagrl-sft
        val = "-" if metrics["val_loss"] is None else f"{metrics['val_loss']:.3f}"
        return (
            f"{metrics['examples']['train']} examples ({metrics['mean_tokens_per_example']:.0f} tokens each), "
            f"{metrics['optimizer_steps']} steps, train loss {metrics['train_loss']:.3f}, val loss {val}"
        )
    if "parsing" in metrics:  # eagrl-evaluate
        scores = metrics[metrics["split"]]
        return (
            f"AUROC {100 * scores['auroc']['mean']:.1f}, AUPRC {100 * scores['auprc']['mean']:.1f}, "
            f"PQD format {100 * metrics['parsing']['pqd_format_rate']:.0f} %"
        )
    if "expert" in metrics:  # eagrl-expert
        return f"test AUROC {100 * metrics['test']['auroc']['mean']:.1f}, {metrics['epochs']} epochs"
    return ""


def render(run_dir: Path) -> str:
    lines = [
        f"Run: `{run_dir}`  ",
        f"{provenance()}. A stage reused from an earlier run takes seconds (its artifact was complete).",
        "",
        "| stage | wall time | result | command |",
        "|---|---:|---|---|",
    ]
    for line in (run_dir / "times.tsv").read_text().splitlines():
        name, seconds, command = line.split("\t")
        # a stage's run directory is <run_dir>/<name>, an evaluation's <run_dir>/evaluate/<name>
        candidates = (run_dir / name / "metrics.json", run_dir / "evaluate" / name / "metrics.json")
        metrics_path = next((path for path in candidates if path.is_file()), None)
        result = headline(json.loads(metrics_path.read_text())) if metrics_path else ""
        minutes, rest = divmod(int(seconds), 60)
        lines.append(f"| {name} | {minutes} min {rest:02d} s | {result} | `{command}` |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--benchmarks", type=Path)
    parser.add_argument("--section", default="stage1_cost")
    args = parser.parse_args()
    content = render(args.run_dir)
    print(content)
    if args.benchmarks:
        write_section(args.benchmarks, args.section, content)


if __name__ == "__main__":
    main()
