#!/usr/bin/env bash
# Expert EHR models x datasets x seeds, 2 jobs in parallel (joblib), then the table into BENCHMARKS.md.
#   bash experiments/experts.sh                      # the full grid
#   EXPERTS=gru,retain DATASETS=tjh SEEDS=0 bash experiments/experts.sh   # a slice
set -euo pipefail
cd "$(dirname "$0")/.."
EXPERTS=${EXPERTS:-concare,adacare,retain,stagenet,gru,lstm,transformer}
DATASETS=${DATASETS:-tjh,physionet2012}
SEEDS=${SEEDS:-0,1,2}
stamp=$(date +%Y-%m-%d_%H-%M-%S)
sweep_dir=logs/expert/multiruns/$stamp
command="eagrl-expert -m expert=$EXPERTS dataset=$DATASETS seed=$SEEDS hydra.sweep.dir=$sweep_dir $*"
start=$(date +%s)
.venv/bin/$command
echo "wall time: $(( $(date +%s) - start )) s"
.venv/bin/eagrl-aggregate "$sweep_dir" --benchmarks BENCHMARKS.md --section experts --command "$command"
