#!/usr/bin/env bash
# Commands per second of the bank's `master`, end to end (process start to exit), on a
# seeded 8-node script of 10,000+ commands. Prints the median, min and max of RUNS runs
# for each transport given (default: mem).
#
#   scripts/measure-bank.sh [TRANSPORT...]     RUNS=11 NODES=8 COMMANDS=10000 SEED=1
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${RUNS:-11} nodes=${NODES:-8} commands=${COMMANDS:-10000} seed=${SEED:-1}
cargo build --release -q -p bank-app --bins --examples
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
script=$work/workload.script
target/release/examples/workload "$nodes" "$commands" "$seed" > "$script"
lines=$(grep -c . "$script")
echo "script: $nodes nodes, $lines commands (workload $nodes $commands $seed)"
for transport in "${@:-mem}"; do
  rates=()
  for _ in $(seq "$runs"); do
    start=$(date +%s%N)
    target/release/master --transport "$transport" --seed 1 "$script" > "$work/out"
    end=$(date +%s%N)
    rates+=("$(( lines * 1000000000 / (end - start) ))")
  done
  sorted=$(printf '%s\n' "${rates[@]}" | sort -n)
  median=$(sed -n "$(( (runs + 1) / 2 ))p" <<< "$sorted")
  echo "$transport: median $median commands/s (min $(head -1 <<< "$sorted"), max $(tail -1 <<< "$sorted"), $runs runs)"
done
