"""Expert acceptance on the synthetic canary (issue 16): train each expert on ``dataset=synthetic`` (a finished
artifact is reused), then print its test AUROC / AUPRC (100-resample bootstrap mean ± std and the normal 95 % CI
mean ± 1.96 std) and its planted share: the fraction of each patient's top-k salient set C_exp (k =
``dataset.salient_top_k``) that is a planted feature (``dataset.planted``), averaged over the patients of a split
(val, to diagnose and choose; test, to report). The Bayes AUROC of the test split (the generator's own risk, the
ceiling of any model) is printed beside them.

    .venv/bin/python experiments/canary_experts.py                       # every expert, seed 0
    .venv/bin/python experiments/canary_experts.py --experts concare,gru -- expert.importance=integrated_gradients
    .venv/bin/python experiments/canary_experts.py --benchmarks BENCHMARKS.md   # also the "Canary: experts" block

Arguments after ``--`` are Hydra overrides given to every ``eagrl-expert`` run (and to the dataset composed here).
Run from the repository root (``paths`` are relative to it); run directories go to ``logs/canary_experts/``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
from sklearn.metrics import roc_auc_score

from eagrl.cli.entry import compose_entry
from eagrl.data.cohort import Cohort, prepare_cohort
from eagrl.data.synthetic import RISK
from eagrl.evaluation.aggregate import commit, machine, write_section
from eagrl.experts import EXPERTS

#: a 95 % normal interval is mean ± this many bootstrap standard deviations
Z95 = 1.96


def planted_share(importance: pd.DataFrame, planted: set[str], split: str, k: int | None = None) -> float:
    """Mean over the patients of ``split`` of |C_exp ∩ planted| / |C_exp| (``importance.parquet`` rows), C_exp the
    artifact's top-k set, or its ``k`` first names when given (k = 1: how often the top feature is planted)."""
    rows = importance[importance["split"] == split]
    return float(rows["top_k"].map(lambda names: len(planted & set(names[:k])) / len(names[:k])).mean())


def importance_method(metrics: dict) -> str:
    """The method an artifact's importance comes from (``auto`` resolved: native where the expert has it)."""
    method = metrics["importance_method"]
    if method != "auto":
        return method
    return "native" if EXPERTS[metrics["expert"]].has_native_importance else "integrated_gradients"


def scores(metrics: dict, name: str) -> str:
    """``m ± s [lo, hi]`` (×100) of one bootstrap metric."""
    mean, std = 100 * metrics[name]["mean"], 100 * metrics[name]["std"]
    return f"{mean:.1f} ± {std:.1f} [{mean - Z95 * std:.1f}, {mean + Z95 * std:.1f}]"


def train(expert: str, seed: int, overrides: list[str], run_dir: Path) -> dict:
    """Run ``eagrl-expert`` for one expert (reusing a finished artifact); its metrics."""
    command = [
        sys.executable,
        "-m",
        "eagrl.cli.expert",
        "dataset=synthetic",
        f"expert={expert}",
        f"seed={seed}",
        "num_threads=1",
        f"hydra.run.dir={run_dir / expert}",
        *overrides,
    ]
    result = subprocess.run(command, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True)
    if result.returncode:
        sys.exit(f"{' '.join(command)} failed:\n{result.stderr[-3000:]}")
    return json.loads((run_dir / expert / "metrics.json").read_text())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--experts", default=",".join(EXPERTS), help="comma-separated expert names (default: all)")
    parser.add_argument("--seed", type=int, default=0, help="expert seed")
    parser.add_argument("--benchmarks", type=Path, help="write the table into this markdown file")
    parser.add_argument("--section", default="canary_experts", help="marker name of the block in --benchmarks")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides for every expert run (after --)")
    args = parser.parse_args(argv)

    cfg = compose_entry("expert", ["dataset=synthetic", *args.overrides])
    cohort = Cohort.load(prepare_cohort(cfg.dataset, cfg.paths.raw_source, cfg.paths.data_dir))
    test = cohort.patients[cohort.patients["split"] == "test"]
    planted = set(cfg.dataset.planted)
    run_dir = Path(cfg.paths.log_dir) / "canary_experts" / datetime.now().strftime("%Y-%m-%d_%H-%M-%S")

    rows, start = [], time.monotonic()
    for expert in args.experts.split(","):
        metrics = train(expert, args.seed, args.overrides, run_dir)
        importance = pd.read_parquet(Path(metrics["artifact_dir"]) / "importance.parquet")
        rows.append(
            {
                "expert": expert,
                "importance": importance_method(metrics),
                "val AUPRC": f"{100 * metrics['best_val']:.1f}",
                "test AUROC": scores(metrics["test"], "auroc"),
                "test AUPRC": scores(metrics["test"], "auprc"),
                "planted share val": f"{100 * planted_share(importance, planted, 'val'):.1f}",
                "planted share test": f"{100 * planted_share(importance, planted, 'test'):.1f}",
                "top-1 planted test": f"{100 * planted_share(importance, planted, 'test', k=1):.1f}",
                "epochs": metrics["epochs"],
                "s/epoch": f"{metrics['seconds_per_epoch']:.2f}",
            }
        )
        print(rows[-1], flush=True)

    command = " ".join(["python experiments/canary_experts.py", *(argv if argv is not None else sys.argv[1:])])
    content = "\n".join(
        [
            "## Canary: experts (issue 16)",
            "",
            f"Command: `{command}`  ",
            f"Machine: {machine()} (2-core CPU, no GPU); commit {commit()}; {datetime.now(UTC):%Y-%m-%d}; "
            f"seed {args.seed}; 1 thread per run; wall time of the command {time.monotonic() - start:.0f} s (an "
            "expert whose artifact was complete is only read).  ",
            f"Cohort `dataset=synthetic` {cohort.manifest['version']}: {len(cohort.patients)} patients "
            f"({len(test)} test, outcome rate {test[cfg.task.name].mean():.2f}); planted "
            f"{', '.join(cfg.dataset.planted)}; top-k = {cfg.dataset.salient_top_k}; test Bayes AUROC "
            f"{100 * roc_auc_score(test[cfg.task.name], test[RISK]):.1f} (the generator's own risk).  ",
            "AUROC / AUPRC ×100: bootstrap mean ± std [normal 95 % CI]; val AUPRC: the best checkpoint's (the "
            "model-selection metric); planted share: mean over the split's patients of |C_exp ∩ planted| / k, in %; "
            "top-1 planted: % of test patients whose most important feature is planted.",
            "",
            pd.DataFrame(rows).to_markdown(index=False, disable_numparse=True),
        ]
    )
    print(content)
    if args.benchmarks:
        write_section(args.benchmarks, args.section, content)


if __name__ == "__main__":
    main()
