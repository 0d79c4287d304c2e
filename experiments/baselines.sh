#!/usr/bin/env bash
# Prompting baselines (vanilla, think-answer, PQD) of one backbone on one dataset's test split, then the table
# into BENCHMARKS.md. One job at a time: each uses both cores. Finished configs are reused (artifacts).
#   bash experiments/baselines.sh                                   # SmolLM2-135M on TJH (CPU)
#   BACKBONE=qwen2_5_7b_instruct bash experiments/baselines.sh trainer=gpu   # paper scale
#   DATASETS=mimic4_demo TASKS=mortality,readmission bash experiments/baselines.sh
set -euo pipefail
cd "$(dirname "$0")/.."
BACKBONE=${BACKBONE:-smollm2_135m}
DATASETS=${DATASETS:-tjh}
TASKS=${TASKS:-mortality}
STYLES=${STYLES:-vanilla,think_answer,pqd}
SECTION=${SECTION:-baselines}
stamp=$(date +%Y-%m-%d_%H-%M-%S)
sweep_dir=logs/evaluate/multiruns/$stamp
command="eagrl-evaluate -m backbone=$BACKBONE dataset=$DATASETS task=$TASKS prompt=$STYLES hydra.sweep.dir=$sweep_dir $*"
start=$(date +%s)
.venv/bin/$command
echo "wall time: $(( $(date +%s) - start )) s"
.venv/bin/eagrl-aggregate "$sweep_dir" --benchmarks BENCHMARKS.md --section "$SECTION" --command "$command"
