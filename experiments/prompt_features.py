"""Print the dynamic features an expert most often ranks among its top-k for the training patients, as the YAML
list for ``prompt.features`` (how conf/experiment/stage1_tjh_smollm2.yaml chose its 20 TJH features).

    python experiments/prompt_features.py artifacts/expert/tjh/mortality/concare/seed0-<hash> --count 19
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path

import pandas as pd


def frequent_features(importance: pd.DataFrame, static: set[str], count: int) -> list[str]:
    """The ``count`` dynamic features found most often in the train patients' top-k sets (ties: first seen)."""
    train = importance[importance["split"] == "train"]
    counts = Counter(name for top_k in train["top_k"] for name in top_k if name not in static)
    return [name for name, _ in counts.most_common(count)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("expert_dir", type=Path, help="an eagrl-expert artifact folder (holds importance.parquet)")
    parser.add_argument("--count", type=int, default=20, help="how many features to print")
    parser.add_argument("--static", nargs="*", default=["Age", "Sex"], help="static features to leave out")
    args = parser.parse_args()
    importance = pd.read_parquet(args.expert_dir / "importance.parquet")
    print(json.dumps(frequent_features(importance, set(args.static), args.count)))


if __name__ == "__main__":
    main()
