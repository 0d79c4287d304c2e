"""``eagrl-aggregate``: turn a multirun directory of ``eagrl-expert``, ``eagrl-evaluate`` or ``eagrl-pipeline`` jobs
into a markdown table (and optionally a block of BENCHMARKS.md and a CSV).

    eagrl-aggregate logs/expert/multiruns/2026-11-22_10-00-00
    eagrl-aggregate logs/expert/multiruns/<datetime> --benchmarks BENCHMARKS.md --section experts \
        --command "eagrl-expert -m ..."
    eagrl-aggregate logs/pipeline/multiruns/<datetime> --layout paper --csv table1.csv   # Table 1 / 2 shape

Each job folder holds ``metrics.json`` when it finished; a job folder without it is reported as failed,
with its overrides. Rows group jobs by dataset, task and model (an expert, or ``<backbone> / <prompt style or
adapter>``) and, for an LLM, the ``score`` its ŷ was read with; AUROC / AUPRC are ×100, mean ± std over seeds of
each seed's bootstrap mean, with the mean bootstrap std beside it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import yaml

GROUP_KEYS = ("dataset", "task", "model")


def _row(metrics: dict) -> dict:
    """One table row from an ``eagrl-expert`` or ``eagrl-evaluate`` metrics.json."""
    is_expert = "expert" in metrics
    row = {
        "dataset": metrics["dataset"],
        "task": metrics["task"],
        "model": metrics["expert"] if is_expert else f"{metrics['backbone']} / {metrics['method']}",
        "seed": metrics["seed"],
        "shuffle_fraction": metrics.get("shuffle_fraction", 0.0),
        "shuffle_seed": metrics.get("shuffle_seed", 0),
    }
    scores = metrics[metrics.get("split", "test")]
    for name in ("auroc", "auprc"):
        row[name] = 100 * scores[name]["mean"]
        row[f"{name}_boot_std"] = 100 * scores[name]["std"]
    if is_expert:
        row |= {key: metrics[key] for key in ("epochs", "seconds_per_epoch", "parameters")}
    else:
        generation = metrics["generation"]
        row |= {
            "score": metrics.get("score", "greedy"),
            "parse_failure": 100 * metrics["parsing"]["parse_failure_rate"],
            "pqd_format": 100 * metrics["parsing"].get("pqd_format_rate", float("nan")),
            "seconds": generation["seconds_this_run"] + metrics.get("scoring", {}).get("seconds", 0.0),
            "tokens_per_second": generation["generated_tokens_per_second"],
        }
    return row


def _results(job: Path) -> list[dict]:
    """Test results of one job: its own metrics.json (an eagrl-expert or eagrl-evaluate job), or those of its
    stages (an eagrl-pipeline job: the expert and every evaluation; training stages hold no test result)."""
    own = job / "metrics.json"
    paths = [own] if own.is_file() else sorted(job.glob("*/metrics.json"))
    found = [json.loads(path.read_text()) for path in paths]
    return [metrics for metrics in found if "expert" in metrics or "parsing" in metrics]


def collect(multirun_dir: Path | list[Path]) -> tuple[pd.DataFrame, list[str]]:
    """Finished jobs' results as rows (column ``job``: the job's folder), and the overrides of every job that did
    not finish. A pipeline job is finished when it wrote its report (``report.md``).
    """
    rows, failed = [], []
    directories = multirun_dir if isinstance(multirun_dir, list) else [multirun_dir]
    jobs = [path for directory in directories for path in sorted(directory.iterdir()) if (path / ".hydra").is_dir()]
    for job in jobs:
        results = _results(job)
        pipeline = any(job.glob("*/metrics.json")) and not (job / "metrics.json").is_file()
        if not results or (pipeline and not (job / "report.md").is_file()):
            overrides = yaml.safe_load((job / ".hydra" / "overrides.yaml").read_text()) or []
            failed.append(f"job {job.parent.name}/{job.name}: {' '.join(overrides)}")
        rows += [{**_row(metrics), "job": str(job)} for metrics in results]
    return pd.DataFrame(rows), failed


def summarise(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per (dataset, task, model and, for LLMs, the score read from them): metrics mean ± std over seeds,
    cost columns, seeds."""
    keys = list(GROUP_KEYS)
    if "score" in frame:  # an expert row has none
        frame, keys = frame.assign(score=frame["score"].fillna("")), [*keys, "score"]
    grouped = frame.groupby(keys, sort=True)
    columns = {
        "AUROC": grouped["auroc"].agg(_mean_std) + grouped["auroc_boot_std"].mean().map(" (boot ± {:.1f})".format),
        "AUPRC": grouped["auprc"].agg(_mean_std) + grouped["auprc_boot_std"].mean().map(" (boot ± {:.1f})".format),
    }
    if "seconds_per_epoch" in frame:
        columns["s/epoch (CPU)"] = grouped["seconds_per_epoch"].mean().map("{:.2f}".format)
        columns["epochs"] = grouped["epochs"].mean().map("{:.0f}".format)
        columns["parameters"] = grouped["parameters"].first()
    if "parse_failure" in frame:
        columns["parse failures %"] = grouped["parse_failure"].mean().map("{:.1f}".format)
        columns["PQD format %"] = grouped["pqd_format"].mean().map("{:.1f}".format)
        columns["wall s (CPU)"] = grouped["seconds"].mean().map("{:.0f}".format)
        columns["generated tok/s"] = grouped["tokens_per_second"].mean().map("{:.1f}".format)
    columns["seeds"] = grouped.size()
    return pd.DataFrame(columns).reset_index()


def paper_layout(frame: pd.DataFrame) -> pd.DataFrame:
    """The paper's Table 1 / Table 2 shape: one row per model (backbone / method, or expert), one column per
    dataset-task and metric, cells mean ± std over seeds (×100)."""
    frame = frame.assign(column=frame["dataset"] + "/" + frame["task"])
    cells = {}
    for (model, column), group in frame.groupby(["model", "column"], sort=True):
        cells.setdefault(model, {})
        for metric in ("auroc", "auprc"):
            cells[model][(column, metric.upper())] = _mean_std(group[metric])
    table = pd.DataFrame.from_dict(cells, orient="index")
    table.columns = [f"{column} {metric}" for column, metric in table.columns]
    return table.sort_index(axis=1).rename_axis("model").reset_index()


def robustness_layout(frame: pd.DataFrame) -> pd.DataFrame:
    """Figure 3 as a table: one row per dataset-task and model, one column per shuffled fraction of the feature
    lines (columns for a tensor model) and metric, mean ± std over the shuffle seeds (×100)."""
    cells = {}
    for (column, model, fraction), group in frame.assign(column=frame["dataset"] + "/" + frame["task"]).groupby(
        ["column", "model", "shuffle_fraction"], sort=True
    ):
        row = cells.setdefault((column, model), {})
        for metric in ("auroc", "auprc"):
            row[f"{100 * fraction:.0f} % {metric.upper()}"] = _mean_std(group[metric])
    table = pd.DataFrame.from_dict(cells, orient="index")
    order = sorted(table.columns, key=lambda name: (name.split()[-1], float(name.split()[0])))
    return table[order].rename_axis(["dataset/task", "model"]).reset_index()


def robustness_plot(frame: pd.DataFrame, path: Path) -> Path:
    """AUROC and AUPRC against the shuffled fraction, one line per model (mean ± std over seeds)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 2, figsize=(9, 3.5))
    for model, group in frame.groupby("model"):
        by_fraction = group.groupby("shuffle_fraction")
        for axis, metric in zip(axes, ("auroc", "auprc"), strict=True):
            mean, std = by_fraction[metric].mean(), by_fraction[metric].std(ddof=0).fillna(0)
            axis.errorbar(100 * mean.index, mean, yerr=std, marker="o", capsize=3, label=model)
    for axis, metric in zip(axes, ("AUROC", "AUPRC"), strict=True):
        axis.set(xlabel="feature lines shuffled (%)", ylabel=f"{metric} ×100")
    axes[0].legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path


LAYOUTS = {"long": summarise, "paper": paper_layout, "robustness": robustness_layout}


def _mean_std(values: pd.Series) -> str:
    std = values.std(ddof=0) if len(values) > 1 else 0.0
    return f"{values.mean():.1f} ± {std:.1f}"


def machine() -> str:
    """CPU model, its family / model numbers, the kernel set torch picked and the core count of this machine: the
    model name alone ("AMD EPYC") covers CPU generations whose kernels (AVX2, AVX-512) round differently."""
    import torch

    fields: dict[str, str] = {}
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            key, _, value = line.partition(":")
            fields.setdefault(key.strip(), value.strip())
            if not line.strip():
                break
    name = fields.get("model name") or platform.processor() or platform.machine()
    if "cpu family" in fields:
        name += f" (family {fields['cpu family']} model {fields.get('model', '?')})"
    return f"{name}, torch kernels {torch.backends.cpu.get_cpu_capability()}, {os.cpu_count()} cores"


def commit() -> str:
    """Short hash of the checked-out commit (``unknown`` outside git)."""
    result = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False)
    return result.stdout.strip() or "unknown"


def provenance(threads: int | None = None) -> str:
    """``Machine: <machine()>[, <threads> threads]; commit <commit()>; <UTC date>``: the line every table and benchmark
    writes under its command."""
    threads_text = "" if threads is None else f", {threads} threads"
    return f"Machine: {machine()}{threads_text}; commit {commit()}; {datetime.now(UTC):%Y-%m-%d}"


def render(multirun_dir: Path | list[Path], command: str | None, layout: str = "long") -> str:
    """The markdown section for one multirun (``layout``: ``long`` one row per dataset, task and model with cost
    columns; ``paper`` the Table 1 / Table 2 shape)."""
    frame, failed = collect(multirun_dir)
    finished = frame["job"].nunique() if len(frame) else 0
    lines = [
        f"Command: `{command or '(see the multirun.yaml of ' + str(multirun_dir) + ')'}`  ",
        f"{provenance()}; {finished} jobs finished, {len(failed)} failed.",
        "",
    ]
    table = LAYOUTS[layout](frame) if len(frame) else None
    lines.append(table.to_markdown(index=False, disable_numparse=True) if table is not None else "(no finished job)")
    if failed:
        lines += ["", "Failed jobs:", *(f"- {entry}" for entry in failed)]
    return "\n".join(lines)


def write_section(path: Path, section: str, content: str) -> None:
    """Replace (or append) the block between ``<!-- section:begin -->`` and ``<!-- section:end -->``."""
    begin, end = f"<!-- {section}:begin -->", f"<!-- {section}:end -->"
    text = path.read_text() if path.is_file() else "# Benchmarks\n"
    block = f"{begin}\n{content}\n{end}"
    if begin in text and end in text:
        text = text[: text.index(begin)] + block + text[text.index(end) + len(end) :]
    else:
        text = text.rstrip("\n") + f"\n\n{block}\n"
    path.write_text(text)


def main(argv: list[str] | None = None) -> None:
    """Console script ``eagrl-aggregate``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("multirun_dir", type=Path, nargs="+", help="logs/<stage>/multiruns/<datetime> folders")
    parser.add_argument("--benchmarks", type=Path, help="write the table into this markdown file")
    parser.add_argument("--section", default="experts", help="marker name of the block in --benchmarks")
    parser.add_argument("--command", help="the command that produced the multirun (recorded with the table)")
    parser.add_argument(
        "--layout", choices=tuple(LAYOUTS), default="long", help="long, paper (Tables 1, 2), robustness"
    )
    parser.add_argument("--csv", type=Path, help="also write the table as CSV")
    parser.add_argument("--plot", type=Path, help="robustness layout: also plot the curves into this PNG")
    args = parser.parse_args(argv)
    missing = [directory for directory in args.multirun_dir if not directory.is_dir()]
    if missing:
        print(f"eagrl-aggregate: error: {missing[0]} is not a directory", file=sys.stderr)
        sys.exit(2)
    content = render(args.multirun_dir, args.command, args.layout)
    print(content)
    if args.csv or args.plot:
        frame, _ = collect(args.multirun_dir)
        if args.csv:
            LAYOUTS[args.layout](frame).to_csv(args.csv, index=False)
        if args.plot:
            robustness_plot(frame, args.plot)
    if args.benchmarks:
        write_section(args.benchmarks, args.section, content)


if __name__ == "__main__":
    main()
