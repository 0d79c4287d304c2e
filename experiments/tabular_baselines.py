"""Logistic regression and gradient-boosted trees on the experts' last-visit inputs and splits (eagrl.experts.tabular),
over datasets and seeds, as a table in the experts' format (optionally into BENCHMARKS.md).

    python experiments/tabular_baselines.py                                   # TJH and PhysioNet 2012, seeds 0 1 2
    python experiments/tabular_baselines.py --benchmarks BENCHMARKS.md        # also write the tabular_baselines block
    python experiments/tabular_baselines.py --datasets tjh --seeds 0 -- paths.data_dir=/tmp/data

Seconds are the wall time of fitting the whole grid (one thread, :data:`THREADS`).
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

import pandas as pd
import torch

from eagrl.cli.entry import compose_entry
from eagrl.evaluation.aggregate import provenance, write_section
from eagrl.experts.tabular import MODELS, fit_tabular
from eagrl.stages.runtime import prepared_datamodule

#: threads of the fits (the expert sweep ran one thread per job)
THREADS = 1


def rows(datasets: list[str], seeds: list[int], overrides: list[str]) -> pd.DataFrame:
    """One row per dataset, model and seed."""
    results = []
    for dataset in datasets:
        cfg = compose_entry("expert", [f"dataset={dataset}", *overrides])
        datamodule = prepared_datamodule(cfg)
        for name in MODELS:
            for seed in seeds:
                metrics = fit_tabular(name, datamodule.arrays, seed, cfg.evaluation.resamples, cfg.evaluation.seed)
                test = metrics["test"]
                results.append(
                    {
                        "dataset": dataset,
                        "task": cfg.task.name,
                        "model": name,
                        "seed": seed,
                        **{f"{key}": 100 * test[key]["mean"] for key in ("auroc", "auprc")},
                        **{f"{key}_boot": 100 * test[key]["std"] for key in ("auroc", "auprc")},
                        "setting": f"{'C' if 'C' in metrics else 'trees'}={metrics.get('C', metrics.get('trees'))}",
                        "seconds": metrics["seconds_to_fit"],
                        "parameters": metrics["parameters"],
                    }
                )
                row = results[-1]
                print(f"{dataset} {name} seed {seed}: AUROC {row['auroc']:.1f}, AUPRC {row['auprc']:.1f} "
                      f"({row['setting']}, {row['seconds']:.1f} s)", flush=True)  # fmt: skip
    return pd.DataFrame(results)


def table(frame: pd.DataFrame) -> pd.DataFrame:
    """The experts table's columns: mean ± std over seeds (the mean bootstrap std in brackets)."""
    out = []
    for (dataset, task, model), group in frame.groupby(["dataset", "task", "model"], sort=True):
        cells = {"dataset": dataset, "task": task, "model": model}
        for key in ("auroc", "auprc"):
            std = group[key].std(ddof=0) if len(group) > 1 else 0.0
            cells[key.upper()] = f"{group[key].mean():.1f} ± {std:.1f} (boot ± {group[f'{key}_boot'].mean():.1f})"
        cells["setting (chosen on val)"] = ", ".join(sorted(set(group["setting"])))
        cells["s/fit (CPU)"] = f"{group['seconds'].mean():.2f}"
        cells["parameters"] = f"{group['parameters'].mean():.0f}"
        cells["seeds"] = len(group)
        out.append(cells)
    return pd.DataFrame(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="+", default=["tjh", "physionet2012"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--benchmarks", type=Path, help="write the table into this markdown file")
    parser.add_argument("--section", default="tabular_baselines", help="marker name of the block in --benchmarks")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides of the eagrl-expert config (after --)")
    args = parser.parse_args()
    torch.set_num_threads(THREADS)
    from threadpoolctl import threadpool_limits

    with threadpool_limits(THREADS):
        frame = rows(args.datasets, args.seeds, args.overrides)
    command = "python experiments/tabular_baselines.py " + shlex.join(sys.argv[1:])
    content = "\n".join(
        [
            f"Command: `{command.strip()}`  ",
            f"{provenance()}; {THREADS} thread.",
            "",
            table(frame).to_markdown(index=False, disable_numparse=True),
        ]
    )
    print(content)
    if args.benchmarks:
        write_section(args.benchmarks, args.section, content)


if __name__ == "__main__":
    main()
