"""Write a copy of TJH's test split (or another split) that keeps only a few labs: an external cohort in TJH's
format for ``dataset=tjh_external``, to see how a TJH model degrades when most labs were never measured.

    python experiments/tjh_lab_subset.py data/external/tjh_test_3labs/cohort.xlsx          # LDH, lymphocyte %, hs-CRP
    eagrl-expert artifact=<a TJH expert> dataset=tjh_external dataset.cohort_dir=$PWD/data/external/tjh_test_3labs

The default labs are the three of the TJH source paper's model (Yan et al., Nat. Mach. Intell. 2020): lactate
dehydrogenase, lymphocyte percentage and high-sensitivity C-reactive protein; age and sex are kept. The file lands
under ``data/`` (never committed).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from eagrl.cli.entry import compose_entry
from eagrl.data.cohort import MANIFEST, prepare_cohort
from eagrl.data.features import FeatureTable
from eagrl.data.tjh import subset_workbook

#: the TJH source paper's three biomarkers (canonical names of tjh_features.csv), with the demographics
YAN_FEATURES = ["Age", "Sex", "Lactate dehydrogenase", "Lymphocyte (%)", "High-sensitivity C-reactive protein"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("target", type=Path, help="the workbook to write (e.g. data/external/<name>/cohort.xlsx)")
    parser.add_argument("--features", nargs="+", default=YAN_FEATURES, help="canonical names of the features kept")
    parser.add_argument("--split", default="test", help="the TJH split whose patients are copied")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides of the eagrl-data config (paths.*)")
    args = parser.parse_args()
    cfg = compose_entry("data", ["dataset=tjh", *args.overrides])
    directory = prepare_cohort(cfg.dataset, cfg.paths.raw_source, cfg.paths.data_dir)
    manifest = json.loads((directory / MANIFEST).read_text())
    source = Path(cfg.paths.data_dir) / "raw" / manifest["raw_files"]["xlsx"]["path"]
    patients = manifest["splits"][args.split]
    features = FeatureTable.load(cfg.dataset.features_file)
    subset_workbook(source, args.target, features, args.features, patients)
    print(f"wrote {args.target}: {len(patients)} {args.split} patients, features {', '.join(args.features)}")


if __name__ == "__main__":
    main()
