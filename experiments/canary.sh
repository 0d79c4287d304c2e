#!/usr/bin/env bash
# The planted-signal canary over training seeds (issue 16; conf/experiment/canary.yaml): per seed, one EAG-RL
# pipeline (expert, base-PQD once, MCTS, trajectory SFT, EAG-RL, evaluations) and one GRPO pipeline from the same
# Stage-1 adapter (rl=grpo ablation=no_ratt: R_att weight 0, fixed clip; finished stages are reused), then the
# comparison (experiments/canary_compare.py) into the canary_comparison block of BENCHMARKS.md.
#   bash experiments/canary.sh                      # 3 seeds, a few hours on the 2-core CPU
#   SEEDS="0" bash experiments/canary.sh            # one seed (a smoke test, not a claim)
set -euo pipefail
cd "$(dirname "$0")/.."
SEEDS=${SEEDS:-0 1 2}
source experiments/lib.sh
start_run canary
first=${SEEDS%% *}
for seed in $SEEDS; do
  stages="[expert,mcts,sft,rl,evaluate,report]"
  [ "$seed" = "$first" ] && stages="[expert,baselines,mcts,sft,rl,evaluate,report]"
  timed "eagrl-seed$seed" "$bin/eagrl-pipeline" experiment=canary "seed=$seed" "stages=$stages" \
    "hydra.run.dir=$run_dir/eagrl-seed$seed" "$@"
  timed "grpo-seed$seed" "$bin/eagrl-pipeline" experiment=canary "seed=$seed" rl=grpo ablation=no_ratt \
    "stages=[expert,mcts,sft,rl,evaluate]" "hydra.run.dir=$run_dir/grpo-seed$seed" "$@"
done
"$bin/python" experiments/canary_compare.py "$run_dir" --benchmarks BENCHMARKS.md
