"""The internal vs external table of expert scoring runs (``eagrl-expert artifact=... dataset=...``), optionally into
BENCHMARKS.md.

    python experiments/external_table.py logs/external_validation/runs/<stamp>/*/metrics.json \
        --benchmarks BENCHMARKS.md --section external_validation --command "bash experiments/external_validation.sh"

Each row: the expert and the cohort it was trained on with its own test split's scores (internal), the scored
cohort (external), the difference, and — when the scored patients are also in the training cohort's test split (a
reduced copy of it, such as TJH with 3 labs) — the same patients' scores with every feature, from the artifact's own
predictions. AUROC / AUPRC ×100: bootstrap mean ± std [2.5-97.5 percentile interval] over 100 resamples.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd

from eagrl.evaluation.aggregate import provenance, write_section
from eagrl.evaluation.metrics import bootstrap_metrics


def cell(scores: dict, metric: str) -> str:
    """``m ± s [low, high]`` (×100) of a bootstrap summary."""
    text = f"{100 * scores[metric]['mean']:.1f} ± {100 * scores[metric]['std']:.1f}"
    interval = scores.get("ci95", {}).get(metric)
    return text + (f" [{100 * interval[0]:.1f}, {100 * interval[1]:.1f}]" if interval else "")


def same_patients(metrics: dict) -> dict | None:
    """Bootstrap scores of the artifact's own (all-feature) test predictions for the scored patients that are in
    its test split, when all of them are; ``None`` otherwise."""
    scored = pd.read_parquet(Path(metrics["external_dir"]) / "importance.parquet", columns=["patient_id"])
    own = pd.read_parquet(Path(metrics["artifact_dir"]) / "importance.parquet")
    own = own[own["split"] == "test"].set_index("patient_id")
    if metrics["dataset"] == metrics["trained_on"] or not scored["patient_id"].isin(own.index).all():
        return None
    rows = own.loc[scored["patient_id"]]
    return bootstrap_metrics(rows["label"].to_numpy(), rows["probability"].to_numpy(), 100, 42)


def table(paths: list[Path]) -> pd.DataFrame:
    rows = []
    for path in paths:
        metrics = json.loads(path.read_text())
        internal, external, cohort = metrics["internal_test"], metrics["test"], metrics["cohort"]
        control = same_patients(metrics)
        rows.append(
            {
                "expert": metrics["expert"].split("@")[0],
                "trained on": metrics["trained_on"],
                "internal test (n)": internal["n"],
                "internal AUROC": cell(internal, "auroc"),
                "internal AUPRC": cell(internal, "auprc"),
                "scored cohort": metrics["dataset"],
                "patients (deaths)": f"{cohort['patients']} ({cohort['positives']})",
                "features never measured": len(cohort["absent_features"]),
                "external AUROC": cell(external, "auroc"),
                "external AUPRC": cell(external, "auprc"),
                "Δ AUROC": f"{100 * (external['auroc']['mean'] - internal['auroc']['mean']):+.1f}",
                "same patients, all features: AUROC": cell(control, "auroc") if control else "–",
            }
        )
    return pd.DataFrame(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("metrics", type=Path, nargs="+", help="metrics.json of eagrl-expert artifact= runs")
    parser.add_argument("--benchmarks", type=Path, help="write the table into this markdown file")
    parser.add_argument("--section", default="external_validation", help="marker name of the block in --benchmarks")
    parser.add_argument("--command", help="the command that produced the runs (recorded with the table)")
    args = parser.parse_args()
    content = "\n".join(
        [
            f"Command: `{args.command or 'eagrl-expert artifact=... dataset=...'}`  ",
            f"{provenance()}.",
            "",
            table(args.metrics).to_markdown(index=False, disable_numparse=True),
        ]
    )
    print(content)
    if args.benchmarks:
        write_section(args.benchmarks, args.section, content)


if __name__ == "__main__":
    main()
