#!/usr/bin/env bash
# Stage 1 on TJH with SmolLM2-135M at CPU scale (conf/experiment/stage1_tjh_smollm2.yaml): the ConCare expert,
# expert-guided MCTS on the 96 training patients, trajectory SFT and the label-only SFT baseline, then base-PQD,
# label-only SFT and trajectory SFT on the 200 test patients. Finished stages are reused (artifacts). Writes the
# "stage1" (test metrics) and "stage1_cost" (wall time of each stage) blocks of BENCHMARKS.md.
#   bash experiments/stage1.sh                       # about 1.5 h on the 2-core CPU
#   EXPERIMENT=<another experiment> bash experiments/stage1.sh mcts=paper backbone=qwen2_5_7b_instruct trainer=gpu
set -euo pipefail
cd "$(dirname "$0")/.."
EXPERIMENT=${EXPERIMENT:-stage1_tjh_smollm2}
source experiments/lib.sh
start_run stage1
timed expert "$bin/eagrl-expert" expert=concare dataset=tjh seed=0 logger=none "hydra.run.dir=$run_dir/expert"
timed mcts "$bin/eagrl-mcts" "experiment=$EXPERIMENT" "hydra.run.dir=$run_dir/mcts" "$@"
timed sft-trajectory "$bin/eagrl-sft" "experiment=$EXPERIMENT" "hydra.run.dir=$run_dir/sft-trajectory" "$@"
timed sft-label_only "$bin/eagrl-sft" "experiment=$EXPERIMENT" sft=label_only "hydra.run.dir=$run_dir/sft-label_only" "$@"
trajectory_adapter=$(json_field "$run_dir/sft-trajectory/metrics.json" artifact_dir)
label_adapter=$(json_field "$run_dir/sft-label_only/metrics.json" artifact_dir)
evaluations=$run_dir/evaluate
timed evaluate-base-pqd "$bin/eagrl-evaluate" "experiment=$EXPERIMENT" prompt=pqd "hydra.run.dir=$evaluations/evaluate-base-pqd" "$@"
timed evaluate-sft-label_only "$bin/eagrl-evaluate" "experiment=$EXPERIMENT" prompt=vanilla "adapter=$label_adapter" \
  "hydra.run.dir=$evaluations/evaluate-sft-label_only" "$@"
timed evaluate-sft-trajectory "$bin/eagrl-evaluate" "experiment=$EXPERIMENT" prompt=pqd "adapter=$trajectory_adapter" \
  "hydra.run.dir=$evaluations/evaluate-sft-trajectory" "$@"
"$bin/eagrl-aggregate" "$evaluations" --benchmarks BENCHMARKS.md --section stage1 \
  --command "bash experiments/stage1.sh $*  (evaluations in $evaluations)"
"$bin/python" experiments/stage_costs.py "$run_dir" --benchmarks BENCHMARKS.md --section stage1_cost
