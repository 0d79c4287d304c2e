#!/usr/bin/env bash
# Stage 2 on TJH with SmolLM2-135M at CPU scale (conf/experiment/stage2_tjh_smollm2.yaml): EAG-RL, GRPO and DAPO
# from the Stage-1 trajectory SFT adapter (run experiments/stage1.sh first), then their test AUROC / AUPRC beside
# base-PQD and the SFT policy (same prompts, reused when already evaluated). Writes the "stage2" and "stage2_cost"
# blocks of BENCHMARKS.md.
#   bash experiments/stage2.sh                       # about 2 h on the 2-core CPU
#   ALGORITHMS=eagrl bash experiments/stage2.sh reward.attention=internal
set -euo pipefail
cd "$(dirname "$0")/.."
EXPERIMENT=${EXPERIMENT:-stage2_tjh_smollm2}
EVAL_EXPERIMENT=${EVAL_EXPERIMENT:-stage1_tjh_smollm2}
ALGORITHMS=${ALGORITHMS:-eagrl grpo dapo}
source experiments/lib.sh
start_run stage2
evaluations=$run_dir/evaluate
for algorithm in $ALGORITHMS; do
  timed "rl-$algorithm" "$bin/eagrl-rl" "experiment=$EXPERIMENT" "rl=$algorithm" "hydra.run.dir=$run_dir/rl-$algorithm" "$@"
done
first=$(echo "$ALGORITHMS" | cut -d' ' -f1)
sft_adapter=$(json_field "$(json_field "$run_dir/rl-$first/metrics.json" artifact_dir)/eagrl_adapter.json" init_adapter)
timed evaluate-base-pqd "$bin/eagrl-evaluate" "experiment=$EVAL_EXPERIMENT" prompt=pqd \
  "hydra.run.dir=$evaluations/evaluate-base-pqd"
timed evaluate-sft-trajectory "$bin/eagrl-evaluate" "experiment=$EVAL_EXPERIMENT" prompt=pqd "adapter=$sft_adapter" \
  "hydra.run.dir=$evaluations/evaluate-sft-trajectory"
for algorithm in $ALGORITHMS; do
  adapter=$(json_field "$run_dir/rl-$algorithm/metrics.json" artifact_dir)
  timed "evaluate-rl-$algorithm" "$bin/eagrl-evaluate" "experiment=$EVAL_EXPERIMENT" prompt=pqd "adapter=$adapter" \
    "hydra.run.dir=$evaluations/evaluate-rl-$algorithm"
done
"$bin/eagrl-aggregate" "$evaluations" --benchmarks BENCHMARKS.md --section stage2 \
  --command "bash experiments/stage2.sh $*  (evaluations in $evaluations)"
"$bin/python" experiments/stage_costs.py "$run_dir" --benchmarks BENCHMARKS.md --section stage2_cost
