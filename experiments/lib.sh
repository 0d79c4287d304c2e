# Helpers shared by the experiment scripts (sourced): a run directory, timed stages, artifact lookups, paper tables.
#   source experiments/lib.sh
#   start_run stage1                   # run directory logs/stage1/runs/<stamp>/ in $run_dir
# shellcheck shell=bash
# the virtual environment's bin folder (make install's .venv unless VENV_BIN names another)
bin=${VENV_BIN:-.venv/bin}

# start_run <name>: create logs/<name>/runs/<stamp>/ and set $run_dir to it
start_run() {
  run_dir=logs/$1/runs/$(date +%Y-%m-%d_%H-%M-%S)
  mkdir -p "$run_dir"
}

# timed <name> <command...>: run a stage and record its name, wall seconds and command in $run_dir/times.tsv
timed() {
  local name=$1 start
  shift
  start=$(date +%s)
  "$@"
  printf '%s\t%s\t%s\n' "$name" "$(( $(date +%s) - start ))" "${*#"$bin/"}" >> "$run_dir/times.tsv"
}

# json_field <file> <key>: one top-level field of a JSON file
json_field() { "$bin/python" -c "import json, sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])" "$1" "$2"; }

# paper_table <command> <section> <overrides...> [-- <user overrides...>]: one eagrl-pipeline multirun of
# experiment=$EXPERIMENT per dataset:task pair of $DATASET_TASKS with the overrides, then the aggregator's table in
# the paper's layout into BENCHMARKS.md (<section>) and <first sweep>/<section>.csv. The user overrides come last;
# the recorded command is EXPERIMENT, DATASET_TASKS, <command> (the script with its own variables) and them.
paper_table() {
  local command=$1 section=$2 stamp sweep pair
  local -a overrides=() user=() sweeps=()
  shift 2
  while [ $# -gt 0 ] && [ "$1" != -- ]; do overrides+=("$1"); shift; done
  [ $# -gt 0 ] && shift
  user=("$@")
  stamp=$(date +%Y-%m-%d_%H-%M-%S)
  for pair in $DATASET_TASKS; do
    sweep=logs/pipeline/multiruns/${stamp}_${pair/:/_}
    "$bin/eagrl-pipeline" -m "experiment=$EXPERIMENT" "dataset=${pair%%:*}" "task=${pair##*:}" "${overrides[@]}" \
      "hydra.sweep.dir=$sweep" "${user[@]}"
    sweeps+=("$sweep")
  done
  "$bin/eagrl-aggregate" "${sweeps[@]}" --layout paper --benchmarks BENCHMARKS.md --section "$section" \
    --csv "${sweeps[0]}/$section.csv" \
    --command "EXPERIMENT=$EXPERIMENT DATASET_TASKS=\"$DATASET_TASKS\" $command ${user[*]}"
}
