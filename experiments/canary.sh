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
#   RUN_DIR=<run> ARMS="label_only no_adaptive_clip" BASE=no bash experiments/canary.sh   # more arms for a run
# Arms (ARMS, default "eagrl grpo"; eagrl first: it evaluates the base model and trains the Stage-1 adapter the RL arms
# start from, the others reuse both): eagrl; grpo (rl=grpo ablation=no_ratt: R_att 0, fixed clip); no_ratt (w/o
# R_att, adaptive clip kept); no_adaptive_clip (R_att, fixed clip 0.2); dapo (rl=dapo); no_stage1 (EAG-RL from a
# fresh adapter on the base model, no Stage 1); label_only (Stage 1 on the label alone under the same readable prompt
# in the vanilla style, completion 0.<label>, evaluated as such); trajectory (the paper's Stage 1 instead: the
# expert-guided search writes PQD answers under the same readable prompt, SFT on the selected trajectories, evaluated
# in PQD). w/o Stage 2 is the Stage-1 SFT row.
set -euo pipefail
cd "$(dirname "$0")/.."
SEEDS=${SEEDS:-0 1 2}
EXPERIMENT=${EXPERIMENT:-canary}
# auto: evaluate the base model with the run's first seed that finds no base metrics; no: never (parallel streams)
BASE=${BASE:-auto}
ARMS=${ARMS:-eagrl grpo}
# the file whose canary_comparison block the comparison replaces
BENCHMARKS=${BENCHMARKS:-BENCHMARKS.md}
# arm_overrides <arm>: the arm's eagrl-pipeline overrides in $overrides (after the base model's choice in $base);
# fails for an unknown arm. They come after the command line's overrides: what defines an arm cannot be overridden
arm_overrides() {
  case $1 in
    eagrl) overrides=("${base[@]}") ;;
    grpo) overrides=(rl=grpo ablation=no_ratt "baselines=[]") ;;
    no_ratt | no_adaptive_clip) overrides=("ablation=$1" "baselines=[]") ;;
    dapo) overrides=(rl=dapo "baselines=[]") ;;
    no_stage1) overrides=(ablation=no_stage1 "baselines=[]" "stages=[expert,rl,evaluate]" "evaluate_adapters=[rl]") ;;
    label_only) overrides=("stages=[sft,evaluate]" "baselines=[]"
      "stage_overrides.sft=['sft=label_only','prompt=vanilla','sft.completion=\"<Final answer> 0.{label} </Final answer>\"']"
      "stage_overrides.evaluate=['prompt=vanilla']") ;;
    trajectory) overrides=(prompt=pqd "stages=[expert,mcts,sft,evaluate]" "baselines=[]" "evaluate_adapters=[sft]"
      "stage_overrides.sft=['sft=trajectory']" "stage_overrides.evaluate=['generation.max_new_tokens=128']") ;;
    *) return 1 ;;
  esac
}
# refuse an unknown arm before anything runs
base=()
for arm in $ARMS; do
  arm_overrides "$arm" || { echo "canary.sh: unknown arm '$arm' (the arms are listed at the top of $0)" >&2; exit 2; }
done
source experiments/lib.sh
if [ -n "${RUN_DIR:-}" ]; then run_dir=$RUN_DIR && mkdir -p "$run_dir"; else start_run "$EXPERIMENT"; fi
for seed in $SEEDS; do
  # the base model is evaluated once per run, with its first seed
  base=()
  if [ "$BASE" = no ] || compgen -G "$run_dir/eagrl-seed*/baseline:*/metrics.json" > /dev/null; then
    base=("baselines=[]")
  fi
  for arm in $ARMS; do
    arm_overrides "$arm"
    timed "$arm-seed$seed" "$bin/eagrl-pipeline" "experiment=$EXPERIMENT" "seed=$seed" "$@" "${overrides[@]}" \
      "hydra.run.dir=$run_dir/$arm-seed$seed"
  done
done
"$bin/python" experiments/canary_compare.py "$run_dir" --benchmarks "$BENCHMARKS"
