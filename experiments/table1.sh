#!/usr/bin/env bash
# Table 1 of the paper: dataset-task × backbone × {vanilla, think-answer, PQD, SFT, GRPO, DAPO, EAG-RL}, AUROC /
# AUPRC on the test split. One eagrl-pipeline multirun per dataset-task (rl=eagrl,grpo,dapo × backbones; stages
# shared by the jobs — expert, baselines, MCTS, SFT — run once and are reused), then the table in the paper's
# layout into BENCHMARKS.md ("table1") and CSV.
#   bash experiments/table1.sh                                   # CPU: TJH + SmolLM2-135M (stage2_tjh_smollm2)
#   EXPERIMENT=paper DATASET_TASKS="tjh:mortality mimic4:mortality mimic4:readmission" \
#     BACKBONES=qwen2_5_7b_instruct,llama3_1_8b_instruct,qwen2_5_3b_instruct bash experiments/table1.sh
set -euo pipefail
cd "$(dirname "$0")/.."
source experiments/lib.sh
EXPERIMENT=${EXPERIMENT:-stage2_tjh_smollm2}
DATASET_TASKS=${DATASET_TASKS:-tjh:mortality}
BACKBONES=${BACKBONES:-smollm2_135m}
paper_table "BACKBONES=$BACKBONES bash experiments/table1.sh" "${SECTION:-table1}" "backbone=$BACKBONES" \
  rl=eagrl,grpo,dapo "baselines=[vanilla,think_answer,pqd]" -- "$@"
