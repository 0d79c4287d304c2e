#!/usr/bin/env bash
# The planted-signal canary over training seeds (issue 16): per seed, one EAG-RL pipeline of $EXPERIMENT (expert,
# the base model once, Stage 1, EAG-RL, evaluations) and one GRPO pipeline from the same Stage-1 adapter (rl=grpo
# ablation=no_ratt: R_att weight 0, fixed clip; finished stages are reused), then the comparison
# (experiments/canary_compare.py) into the experiment's canary_comparison block of BENCHMARKS.md.
#   bash experiments/canary.sh                                  # conf/experiment/canary.yaml (MCTS + trajectory SFT), 3 seeds
#   EXPERIMENT=canary_expert_label bash experiments/canary.sh   # Stage 1 on the expert's features and the label
#   SEEDS="0" bash experiments/canary.sh                        # one seed (a smoke test, not a claim)
set -euo pipefail
cd "$(dirname "$0")/.."
SEEDS=${SEEDS:-0 1 2}
EXPERIMENT=${EXPERIMENT:-canary}
source experiments/lib.sh
start_run "$EXPERIMENT"
first=${SEEDS%% *}
for seed in $SEEDS; do
  # the base model is evaluated once, with the first seed
  base=()
  [ "$seed" = "$first" ] || base=("baselines=[]")
  timed "eagrl-seed$seed" "$bin/eagrl-pipeline" "experiment=$EXPERIMENT" "seed=$seed" "${base[@]}" \
    "hydra.run.dir=$run_dir/eagrl-seed$seed" "$@"
  timed "grpo-seed$seed" "$bin/eagrl-pipeline" "experiment=$EXPERIMENT" "seed=$seed" rl=grpo ablation=no_ratt \
    "baselines=[]" "hydra.run.dir=$run_dir/grpo-seed$seed" "$@"
done
"$bin/python" experiments/canary_compare.py "$run_dir" --benchmarks BENCHMARKS.md
