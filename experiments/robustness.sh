#!/usr/bin/env bash
# Figure 3 of the paper: robustness to shuffling 20/40/60/100 % of the feature lines (× shuffle seeds), EAG-RL vs the
# base LLM (PQD) vs ConCare (whose input columns are shuffled the same way). Writes the "robustness" block of
# BENCHMARKS.md and robustness.png. CPU cost: one evaluation per fraction × seed × LLM (7 min each for the 200 TJH
# test patients with SmolLM2-135M): reduce with SEEDS=0,1 or MAX_PATIENTS=100 (then say so beside the numbers).
#   RL_ADAPTER=artifacts/rl/tjh/mortality/smollm2_135m/eagrl-none-<hash> bash experiments/robustness.sh
#   EXPERIMENT=paper RL_ADAPTER=... bash experiments/robustness.sh trainer=gpu
set -euo pipefail
cd "$(dirname "$0")/.."
EXPERIMENT=${EXPERIMENT:-stage1_tjh_smollm2}
DATASET=${DATASET:-tjh}
RL_ADAPTER=${RL_ADAPTER:?set RL_ADAPTER to an eagrl-rl artifact folder}
FRACTIONS=${FRACTIONS:-0.2,0.4,0.6,1.0}
SEEDS=${SEEDS:-0,1,2,3,4}
MAX_PATIENTS=${MAX_PATIENTS:-null}
sweep=logs/robustness/multiruns/$(date +%Y-%m-%d_%H-%M-%S)
for policy in "adapter=$RL_ADAPTER" "adapter=null"; do
  name=$([ "$policy" = "adapter=null" ] && echo base || echo rl)
  .venv/bin/eagrl-evaluate -m "experiment=$EXPERIMENT" "dataset=$DATASET" prompt=pqd "$policy" "max_patients=$MAX_PATIENTS" \
    prompt.shuffle_fraction=0 "hydra.sweep.dir=$sweep/$name-unshuffled" "$@"
  .venv/bin/eagrl-evaluate -m "experiment=$EXPERIMENT" "dataset=$DATASET" prompt=pqd "$policy" "max_patients=$MAX_PATIENTS" \
    "prompt.shuffle_fraction=$FRACTIONS" "prompt.shuffle_seed=$SEEDS" "hydra.sweep.dir=$sweep/$name" "$@"
done
.venv/bin/eagrl-expert -m expert=concare "dataset=$DATASET" seed=0 logger=none "robustness.shuffle_fraction=0,$FRACTIONS" \
  "robustness.shuffle_seed=$SEEDS" "hydra.sweep.dir=$sweep/expert"
.venv/bin/eagrl-aggregate "$sweep"/* --layout robustness --plot "$sweep/robustness.png" --benchmarks BENCHMARKS.md \
  --section robustness --command "RL_ADAPTER=$RL_ADAPTER bash experiments/robustness.sh $*  (plot: $sweep/robustness.png)"
