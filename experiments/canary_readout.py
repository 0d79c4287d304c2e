"""What does a policy read on the canary: the planted labs' flags, or any flag? (issue 16)

A policy can rank canary patients above chance without the planted rule: the number of flagged labs already ranks
them (the planted labs are among the flagged ones). This regresses an ``eagrl-evaluate`` run's scores ŷ on the
number of flagged planted labs and the number of other flagged labs of each patient's prompt (least squares, no
label involved) and prints the two weights: a policy that learnt the rule weighs a planted flag far more than
another; one that counts flags weighs them alike.

    .venv/bin/python experiments/canary_readout.py <eagrl-evaluate folder> -- experiment=canary prompt=vanilla

Arguments after ``--`` are the Hydra overrides of the evaluated run's prompt (the ``evaluate`` config is composed
with them and its split is read from the folder's metrics.json). Prints one markdown row.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd
from hydra import compose, initialize_config_dir
from sklearn.metrics import roc_auc_score

from eagrl.cli.entry import CONFIG_DIR
from eagrl.stages.runtime import prepared_datamodule


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("folder", type=Path, help="an eagrl-evaluate artifact folder (predictions.parquet)")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides of the evaluated run's prompt (after --)")
    args = parser.parse_args()
    metrics = json.loads((args.folder / "metrics.json").read_text())
    predictions = pd.read_parquet(args.folder / "predictions.parquet").set_index("patient_id")
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose("evaluate", overrides=args.overrides)
    datamodule = prepared_datamodule(cfg)
    records, prompts = datamodule.patients(metrics["split"], cfg.task, cfg.prompt)
    planted = set(cfg.dataset.planted)
    counts, ids = [], []
    for record, prompt in zip(records, prompts, strict=True):
        if record.patient_id not in predictions.index:
            continue
        lines = [line for line in prompt.messages()[-1]["content"].splitlines() if line.startswith("- ")]
        flagged = [line.removeprefix("- ").split(":")[0] for line in lines if "(high)" in line or "(low)" in line]
        counts.append([sum(name in planted for name in flagged), sum(name not in planted for name in flagged)])
        ids.append(record.patient_id)
    counts = np.array(counts, dtype=float)
    scores = predictions.loc[ids, "probability"].to_numpy()
    design = np.column_stack([np.ones(len(scores)), counts])
    weights, *_ = np.linalg.lstsq(design, scores, rcond=None)
    labels = predictions.loc[ids, "label"].to_numpy()
    print("| run | patients | AUROC | ŷ per flagged planted lab | ŷ per other flagged lab | ratio |")
    print("|---|---:|---:|---:|---:|---:|")
    ratio = weights[1] / weights[2] if weights[2] else float("inf")
    print(
        f"| {metrics['method']} ({metrics['split']}) | {len(ids)} | {100 * roc_auc_score(labels, scores):.1f} | "
        f"{weights[1]:+.4f} | {weights[2]:+.4f} | {ratio:.1f} |"
    )


if __name__ == "__main__":
    main()
