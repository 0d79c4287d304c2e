#!/usr/bin/env bash
# Table 2 of the paper: the ablations of EAG-RL (w/o Stage 1, w/o Stage 2, w/o R_att, w/o adaptive clip) beside the
# full method, one eagrl-pipeline multirun per dataset-task; the table in the paper's layout into BENCHMARKS.md
# ("table2") and CSV. Stages shared with Table 1 (expert, MCTS, SFT, the full EAG-RL) are reused.
#   bash experiments/table2.sh                                   # CPU: TJH + SmolLM2-135M (stage2_tjh_smollm2)
#   EXPERIMENT=paper DATASET_TASKS="mimic4:mortality" BACKBONE=qwen2_5_7b_instruct bash experiments/table2.sh
set -euo pipefail
cd "$(dirname "$0")/.."
source experiments/lib.sh
EXPERIMENT=${EXPERIMENT:-stage2_tjh_smollm2}
DATASET_TASKS=${DATASET_TASKS:-tjh:mortality}
BACKBONE=${BACKBONE:-smollm2_135m}
paper_table "BACKBONE=$BACKBONE bash experiments/table2.sh" "${SECTION:-table2}" "backbone=$BACKBONE" \
  ablation=none,no_stage1,no_stage2,no_ratt,no_adaptive_clip "baselines=[]" "stages=[expert,mcts,sft,rl,evaluate,report]" \
  -- "$@"
