#!/usr/bin/env bash
# Commands per second of the bank's `master`, end to end (process start to exit), on a
# seeded 8-node script of 10,000+ commands. Prints the median, min and max of RUNS runs
# for each transport given (default: mem). The transports take turns, run by run
# (mem, tcp, mem, tcp, ...), so that each sees the same load.
#
# Besides mem, pipe and tcp, `tcp-tls` is `--transport tcp --tls`: every connection
# TLS 1.3, with certificates the master makes for the run.
#
#   scripts/measure-bank.sh [TRANSPORT...]     RUNS=11 NODES=8 COMMANDS=10000 SEED=1
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${RUNS:-11} nodes=${NODES:-8} commands=${COMMANDS:-10000} seed=${SEED:-1}
target=${CARGO_TARGET_DIR:-target}
cargo build --release -q -p bank-app --bins --examples
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
script=$work/workload.script
"$target/release/examples/workload" "$nodes" "$commands" "$seed" > "$script"
lines=$(grep -c . "$script")
echo "script: $nodes nodes, $lines commands (workload $nodes $commands $seed)"
transports=("${@:-mem}")
declare -A rates
for transport in "${transports[@]}"; do
  case $transport in
    mem | pipe | tcp | tcp-tls) ;;
    *) echo "measure-bank.sh: unknown transport $transport (mem, pipe, tcp, tcp-tls)" >&2; exit 2 ;;
  esac
done
for _ in $(seq "$runs"); do
  for transport in "${transports[@]}"; do
    case $transport in
      tcp-tls) args=(--transport tcp --tls) ;;
      *) args=(--transport "$transport") ;;
    esac
    start=$(date +%s%N)
    "$target/release/master" "${args[@]}" --seed 1 "$script" > "$work/out"
    end=$(date +%s%N)
    rates[$transport]+="$(( lines * 1000000000 / (end - start) )) "
  done
done
for transport in "${transports[@]}"; do
  sorted=$(printf '%s\n' ${rates[$transport]} | sort -n)
  median=$(sed -n "$(( (runs + 1) / 2 ))p" <<< "$sorted")
  echo "$transport: median $median commands/s (min $(head -1 <<< "$sorted"), max $(tail -1 <<< "$sorted"), $runs runs)"
done
