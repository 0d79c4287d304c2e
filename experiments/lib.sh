# Helpers shared by the stage scripts (sourced): a run directory, timed stages, artifact lookups.
# shellcheck shell=bash
bin=.venv/bin
run_dir=logs/$1/runs/$(date +%Y-%m-%d_%H-%M-%S)
mkdir -p "$run_dir"

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
