#!/usr/bin/env bash
# Figure 3 of the paper: robustness to shuffling 20/40/60/100 % of the feature lines (× shuffle seeds), EAG-RL vs the
# base LLM (PQD) vs ConCare (whose input columns are shuffled the same way). Writes the "robustness" block of
# BENCHMARKS.md and robustness.png. CPU cost: one evaluation per fraction × seed × LLM (7 min each for the 200 TJH
# test patients with SmolLM2-135M): reduce with SEEDS=0,1 or MAX_PATIENTS=100 (then say so beside the numbers).
#   RL_ADAPTER=artifacts/rl/tjh/mortality/smollm2_135m/eagrl-none-<hash> bash experiments/robustness.sh
#   EXPERIMENT=paper RL_ADAPTER=... bash experiments/robustness.sh trainer=gpu
#   EXPERIMENT=tjh_expert_label PROMPT=features_answer RL_ADAPTER=<eagrl-none-…> OTHER_ADAPTERS=<grpo-no_ratt-…> \
#     SEEDS=0 BASE=no bash experiments/robustness.sh     # EAG-RL vs GRPO under the expert-label recipe's prompt
#   JOBS=2 ... bash experiments/robustness.sh num_threads=1  # the LLMs' evaluations two at a time (one per core)
set -euo pipefail
cd "$(dirname "$0")/.."
EXPERIMENT=${EXPERIMENT:-stage1_tjh_smollm2}
DATASET=${DATASET:-tjh}
RL_ADAPTER=${RL_ADAPTER:?set RL_ADAPTER to an eagrl-rl artifact folder}
FRACTIONS=${FRACTIONS:-0.2,0.4,0.6,1.0}
SEEDS=${SEEDS:-0,1,2,3,4}
MAX_PATIENTS=${MAX_PATIENTS:-null}
# the BENCHMARKS.md block the table replaces
SECTION=${SECTION:-robustness}
# the prompt style every LLM answers under (the style its adapter was trained in)
PROMPT=${PROMPT:-pqd}
# further adapters shuffled alike (space-separated eagrl-rl / eagrl-sft folders, e.g. GRPO's beside EAG-RL's)
OTHER_ADAPTERS=${OTHER_ADAPTERS:-}
# yes: the base LLM too; no: the adapters alone
BASE=${BASE:-yes}
# how many LLMs are evaluated at once (each LLM's evaluations stay in order; give each num_threads=<cores / JOBS>)
JOBS=${JOBS:-1}
[[ $JOBS =~ ^[1-9][0-9]*$ ]] || { echo "robustness.sh: JOBS must be a positive integer, got '$JOBS'" >&2; exit 2; }
# shellcheck disable=SC2206  # OTHER_ADAPTERS is a space-separated list of folders
adapters=("$RL_ADAPTER" $OTHER_ADAPTERS)
[ "$BASE" = yes ] && adapters+=(null)
sweep=logs/robustness/multiruns/$(date +%Y-%m-%d_%H-%M-%S)
# evaluate_llm <adapter> <name>: the LLM's unshuffled answers, then every fraction × shuffle seed
evaluate_llm() {
  .venv/bin/eagrl-evaluate -m "experiment=$EXPERIMENT" "dataset=$DATASET" "prompt=$PROMPT" "adapter=$1" \
    "max_patients=$MAX_PATIENTS" prompt.shuffle_fraction=0 "hydra.sweep.dir=$sweep/$2-unshuffled" "${overrides[@]}"
  .venv/bin/eagrl-evaluate -m "experiment=$EXPERIMENT" "dataset=$DATASET" "prompt=$PROMPT" "adapter=$1" \
    "max_patients=$MAX_PATIENTS" "prompt.shuffle_fraction=$FRACTIONS" "prompt.shuffle_seed=$SEEDS" \
    "hydra.sweep.dir=$sweep/$2" "${overrides[@]}"
}
overrides=("$@")
pids=()
# each LLM's chain in its own process group; a failed evaluation stops the script and the chains still running
set -m
trap 'for pid in "${pids[@]}"; do kill -- "-$pid" 2> /dev/null || true; done' EXIT
for index in "${!adapters[@]}"; do
  adapter=${adapters[$index]}
  name=$([ "$adapter" = null ] && echo base || echo "adapter$index")
  # at most JOBS LLMs at once: wait for the oldest before starting another
  if [ "${#pids[@]}" -ge "$JOBS" ]; then wait "${pids[0]}"; pids=("${pids[@]:1}"); fi
  evaluate_llm "$adapter" "$name" &
  pids+=($!)
done
for pid in "${pids[@]}"; do wait "$pid"; done
pids=()
.venv/bin/eagrl-expert -m expert=concare "dataset=$DATASET" seed=0 logger=none "robustness.shuffle_fraction=0,$FRACTIONS" \
  "robustness.shuffle_seed=$SEEDS" "hydra.sweep.dir=$sweep/expert"
.venv/bin/eagrl-aggregate "$sweep"/* --layout robustness --plot "$sweep/robustness.png" --benchmarks BENCHMARKS.md \
  --section "$SECTION" --command "EXPERIMENT=$EXPERIMENT PROMPT=$PROMPT RL_ADAPTER=$RL_ADAPTER OTHER_ADAPTERS=\"$OTHER_ADAPTERS\" BASE=$BASE SEEDS=$SEEDS MAX_PATIENTS=$MAX_PATIENTS JOBS=$JOBS bash experiments/robustness.sh $*  (plot: $sweep/robustness.png)"
