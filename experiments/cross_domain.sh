#!/usr/bin/env bash
# Figure 4 of the paper: train on one dataset, answer another zero-shot. The whole method (expert, MCTS, SFT, RL)
# runs on the source (default PhysioNet 2012; MIMIC-IV with SOURCE_EXPERIMENT=<a mimic4 experiment> once you have
# it), then the source-trained policy and the base model answer the target's test split (default TJH) with the
# target's prompts. Writes the "cross_domain" block of BENCHMARKS.md.
#   bash experiments/cross_domain.sh
#   SOURCE_EXPERIMENT=<mimic4 experiment> bash experiments/cross_domain.sh
set -euo pipefail
cd "$(dirname "$0")/.."
SOURCE_EXPERIMENT=${SOURCE_EXPERIMENT:-physionet_smollm2}
TARGET_EXPERIMENT=${TARGET_EXPERIMENT:-stage1_tjh_smollm2}
source experiments/lib.sh
start_run cross_domain
"$bin/eagrl-pipeline" "experiment=$SOURCE_EXPERIMENT" "stages=[expert,mcts,sft,rl]" "hydra.run.dir=$run_dir/source" "$@"
adapter=$(json_field "$run_dir/source/rl/metrics.json" artifact_dir)
"$bin/eagrl-evaluate" "experiment=$TARGET_EXPERIMENT" prompt=pqd "hydra.run.dir=$run_dir/target/base"
"$bin/eagrl-evaluate" "experiment=$TARGET_EXPERIMENT" prompt=pqd "adapter=$adapter" "hydra.run.dir=$run_dir/target/transfer"
"$bin/eagrl-aggregate" "$run_dir/target" --benchmarks BENCHMARKS.md --section cross_domain \
  --command "SOURCE_EXPERIMENT=$SOURCE_EXPERIMENT TARGET_EXPERIMENT=$TARGET_EXPERIMENT bash experiments/cross_domain.sh $*"
