#!/usr/bin/env bash
# Figure 4 of the paper: train on one dataset, answer another zero-shot. EAG-RL and GRPO are trained on the source
# (expert, Stage 1, Stage 2 of $SOURCE_EXPERIMENT; GRPO = rl=grpo ablation=no_ratt from the same Stage-1 adapter), or
# taken ready-made from ADAPTERS; then the base model and each source-trained adapter answer the target's test split
# with the target experiment's prompts (an adapter's method is named <method>@<source dataset>). Writes the
# "cross_domain" block of BENCHMARKS.md. The paper trains on MIMIC-IV; at CPU scale: TJH ↔ PhysioNet 2012.
#   bash experiments/cross_domain.sh                         # PhysioNet 2012 → TJH (trains both arms on PhysioNet)
#   SOURCE_EXPERIMENT=tjh_expert_label TARGET_EXPERIMENT=physionet_expert_label MAX_PATIENTS=200 \
#     ADAPTERS="artifacts/rl/tjh/mortality/smollm2_135m/eagrl-none-<hash> artifacts/rl/…/grpo-no_ratt-<hash>" \
#     bash experiments/cross_domain.sh num_threads=1        # TJH-trained adapters → 200 PhysioNet test stays
#   SOURCE_EXPERIMENT=<mimic4 experiment> bash experiments/cross_domain.sh   # the paper's source, once you have it
# Arguments are Hydra overrides for every stage (source pipelines and target evaluations, e.g. num_threads=1);
# SOURCE_OVERRIDES (space-separated) are the source pipelines' alone (e.g. salient.expert=retain).
set -euo pipefail
cd "$(dirname "$0")/.."
SOURCE_EXPERIMENT=${SOURCE_EXPERIMENT:-physionet_expert_label}
TARGET_EXPERIMENT=${TARGET_EXPERIMENT:-tjh_expert_label}
# eagrl-rl artifact folders trained on the source (space-separated); empty: train EAG-RL and GRPO on the source
ADAPTERS=${ADAPTERS:-}
# overrides of the source pipelines alone (space-separated; pipeline keys such as salient.* or stage_overrides.*)
SOURCE_OVERRIDES=${SOURCE_OVERRIDES:-}
# target test patients answered (a label-stratified sample; null: all of them)
MAX_PATIENTS=${MAX_PATIENTS:-null}
# the file whose cross_domain block the table replaces
BENCHMARKS=${BENCHMARKS:-BENCHMARKS.md}
source experiments/lib.sh
start_run cross_domain
# shellcheck disable=SC2206  # ADAPTERS is a space-separated list of folders
adapters=($ADAPTERS)
if [ ${#adapters[@]} -eq 0 ]; then
  # shellcheck disable=SC2206  # SOURCE_OVERRIDES is a space-separated list of overrides
  source_overrides=($SOURCE_OVERRIDES)
  for arm in eagrl grpo; do
    arm_overrides=()
    [ $arm = grpo ] && arm_overrides=(rl=grpo ablation=no_ratt)
    "$bin/eagrl-pipeline" "experiment=$SOURCE_EXPERIMENT" "stages=[expert,sft,rl]" "baselines=[]" "$@" \
      "${source_overrides[@]}" "${arm_overrides[@]}" "hydra.run.dir=$run_dir/source/$arm"
    adapters+=("$(json_field "$run_dir/source/$arm/rl/metrics.json" artifact_dir)")
  done
fi
target=("experiment=$TARGET_EXPERIMENT" "max_patients=$MAX_PATIENTS" "$@")
"$bin/eagrl-evaluate" "${target[@]}" "hydra.run.dir=$run_dir/target/base"
for adapter in "${adapters[@]}"; do
  "$bin/eagrl-evaluate" "${target[@]}" "adapter=$adapter" "hydra.run.dir=$run_dir/target/$(basename "$adapter")"
done
"$bin/eagrl-aggregate" "$run_dir/target" --benchmarks "$BENCHMARKS" --section cross_domain \
  --command "SOURCE_EXPERIMENT=$SOURCE_EXPERIMENT TARGET_EXPERIMENT=$TARGET_EXPERIMENT MAX_PATIENTS=$MAX_PATIENTS \
ADAPTERS=\"$ADAPTERS\" SOURCE_OVERRIDES=\"$SOURCE_OVERRIDES\" bash experiments/cross_domain.sh $*"
