#!/usr/bin/env bash
# External validation (README "Validate on another cohort"), then the internal-vs-external table into BENCHMARKS.md
# (section external_validation):
#   1. ConCare trained on PhysioNet 2012 set A only (dataset=physionet2012_a), scored on all of set B as an external
#      cohort (dataset=physionet2012_b: split none) through `eagrl-expert artifact=...`;
#   2. ConCare trained on TJH, scored on a copy of its 200 test patients that keeps 3 labs (lactate dehydrogenase,
#      lymphocyte %, hs-CRP) besides age and sex: the other 70 labs were never measured.
#   bash experiments/external_validation.sh                    # 1 thread per job, patience 5, at most 30 epochs
#   bash experiments/external_validation.sh seed=1             # overrides go to the two training runs
# Finished training and scoring runs are reused (artifacts are keyed by config and inputs).
set -euo pipefail
cd "$(dirname "$0")/.."
source experiments/lib.sh
start_run external_validation
train=(expert=concare num_threads=1 train.patience=5 trainer.max_epochs=30)
labs=data/external/tjh_test_3labs

timed train_physionet_a "$bin/eagrl-expert" "${train[@]}" dataset=physionet2012_a "hydra.run.dir=$run_dir/train_physionet_a" "$@"
timed score_physionet_b "$bin/eagrl-expert" "artifact=$(json_field "$run_dir/train_physionet_a/metrics.json" artifact_dir)" \
  dataset=physionet2012_b num_threads=1 "hydra.run.dir=$run_dir/score_physionet_b"

timed train_tjh "$bin/eagrl-expert" "${train[@]}" dataset=tjh "hydra.run.dir=$run_dir/train_tjh" "$@"
"$bin/python" experiments/tjh_lab_subset.py "$labs/cohort.xlsx"
# dataset.min_visits=1: a patient with one day of these labs is scored too (the protocol's >= 2 days would drop 28)
timed score_tjh_3labs "$bin/eagrl-expert" "artifact=$(json_field "$run_dir/train_tjh/metrics.json" artifact_dir)" \
  dataset=tjh_external "dataset.cohort_dir=$PWD/$labs" dataset.name=tjh_test_3labs dataset.min_visits=1 num_threads=1 \
  "hydra.run.dir=$run_dir/score_tjh_3labs"

"$bin/python" experiments/external_table.py "$run_dir/score_physionet_b/metrics.json" \
  "$run_dir/score_tjh_3labs/metrics.json" --benchmarks BENCHMARKS.md --section external_validation \
  --command "bash experiments/external_validation.sh${*:+ $*}"
cat "$run_dir/times.tsv"
