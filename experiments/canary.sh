#!/usr/bin/env bash
# The planted-signal canary over training seeds (issue 16): per seed, one EAG-RL pipeline of $EXPERIMENT (expert,
# the base model once, Stage 1, EAG-RL, evaluations) and one GRPO pipeline from the same Stage-1 adapter (rl=grpo
# ablation=no_ratt: R_att weight 0, fixed clip; finished stages are reused), then the comparison
# (experiments/canary_compare.py) into the experiment's canary_comparison block of BENCHMARKS.md.
#   bash experiments/canary.sh                                  # conf/experiment/canary.yaml (MCTS + trajectory SFT), 3 seeds
#   EXPERIMENT=canary_expert_label bash experiments/canary.sh   # Stage 1 on the expert's features and the label
#   SEEDS="0" bash experiments/canary.sh                        # one seed (a smoke test, not a claim)
#   RUN_DIR=logs/canary/runs/<stamp> SEEDS="1 2" bash experiments/canary.sh   # add seeds to a run
#   RUN_DIR=<run> SEEDS=1 BASE=no bash experiments/canary.sh   # a parallel stream of a run: another one evaluates the base
set -euo pipefail
cd "$(dirname "$0")/.."
SEEDS=${SEEDS:-0 1 2}
EXPERIMENT=${EXPERIMENT:-canary}
# auto: evaluate the base model with the run's first seed that finds no base metrics; no: never (parallel streams)
BASE=${BASE:-auto}
source experiments/lib.sh
if [ -n "${RUN_DIR:-}" ]; then run_dir=$RUN_DIR && mkdir -p "$run_dir"; else start_run "$EXPERIMENT"; fi
for seed in $SEEDS; do
  # the base model is evaluated once per run, with its first seed
  base=()
  if [ "$BASE" = no ] || compgen -G "$run_dir/eagrl-seed*/baseline:*/metrics.json" > /dev/null; then
    base=("baselines=[]")
  fi
  timed "eagrl-seed$seed" "$bin/eagrl-pipeline" "experiment=$EXPERIMENT" "seed=$seed" "${base[@]}" \
    "hydra.run.dir=$run_dir/eagrl-seed$seed" "$@"
  timed "grpo-seed$seed" "$bin/eagrl-pipeline" "experiment=$EXPERIMENT" "seed=$seed" rl=grpo ablation=no_ratt \
    "baselines=[]" "hydra.run.dir=$run_dir/grpo-seed$seed" "$@"
done
"$bin/python" experiments/canary_compare.py "$run_dir" --benchmarks BENCHMARKS.md
