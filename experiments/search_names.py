"""What the search's feature lists carry: the names of every complete answer of an MCTS artifact (``paths.parquet``)
and of the trajectories it selected for SFT (``selected.parquet``), against the guiding expert's salient set C_exp of
each patient and, on the canary, the planted features; beside them what lists of the same length drawn at random from
the features a prompt shows would score (the hypergeometric expectation).

    python experiments/search_names.py artifacts/mcts/synthetic/mortality/smollm2_135m/<hash> [...] \
        --planted Albumin Potassium "Platelet count" --shown 16

A list that names the record's salient features scores above the random row; the base model's prior for common labs
scores below it.
"""

from __future__ import annotations

import argparse
from math import comb
from pathlib import Path

import numpy as np
import pandas as pd

from eagrl.rewards import jaccard


def random_jaccard(listed: int, target: int, shown: int) -> float:
    """Expected Jaccard of ``listed`` names drawn without replacement from ``shown`` features with a fixed set of
    ``target`` of them."""
    total = comb(shown, listed)
    return sum(
        comb(target, hits) * comb(shown - target, listed - hits) / total * hits / (listed + target - hits)
        for hits in range(min(listed, target) + 1)
    )


def describe(table: pd.DataFrame, planted: set[str], shown: int) -> dict[str, float | int]:
    """One row: answers, patients, names per list, mean Jaccard with C_exp and the planted set, and at random."""
    lengths = table["features"].map(len)
    experts = table["expert_features"]
    agreement = [jaccard(names, expert) for names, expert in zip(table["features"], experts, strict=True)]
    at_random = [random_jaccard(length, len(expert), shown) for length, expert in zip(lengths, experts, strict=True)]
    row = {
        "answers": len(table),
        "patients": table["patient_id"].nunique(),
        "names per list": round(float(lengths.mean()), 2),
        "distinct lists": table["features"].map(tuple).nunique(),
        "Jaccard C_exp": round(float(np.mean(agreement)), 3),
        "random C_exp": round(float(np.mean(at_random)), 3),
    }
    if planted:
        row["Jaccard planted"] = round(float(np.mean([jaccard(names, planted) for names in table["features"]])), 3)
        row["random planted"] = round(float(np.mean([random_jaccard(n, len(planted), shown) for n in lengths])), 3)
    return row


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folders", nargs="+", type=Path, help="eagrl-mcts artifact folders")
    parser.add_argument("--planted", nargs="*", default=[], help="the planted features (the canary's dataset.planted)")
    parser.add_argument("--shown", type=int, default=16, help="features a prompt shows (the canary: 16 labs)")
    args = parser.parse_args(argv)
    rows = []
    for folder in args.folders:
        for name in ("paths", "selected"):
            table = pd.read_parquet(folder / f"{name}.parquet")
            rows.append({"search": folder.name, "answers of": name, **describe(table, set(args.planted), args.shown)})
    print(pd.DataFrame(rows).to_markdown(index=False))


if __name__ == "__main__":
    main()
