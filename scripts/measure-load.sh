#!/usr/bin/env bash
# The figures of `master load` in BENCHMARKS.md ("The bank running free"):
#
#   scripts/measure-load.sh throughput   5 runs each: mem with 16 nodes, pipe and tcp
#                                        with 8, a snapshot every 10 ms, 5 s a run
#   scripts/measure-load.sh overhead     10 alternating pairs per transport, 8 nodes,
#                                        3 s a run: a snapshot every 10 ms, then none
#   scripts/measure-load.sh memory       one 60 s run per transport, resident memory
#                                        sampled every second
#
# Each run's JSON summary goes to a line of $OUT (default: load-results.jsonl in a
# temporary directory, printed at the end), and a table of medians is printed.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q -p bank-app
master=$PWD/target/release/master
work=$(mktemp -d)
out=${OUT:-$work/load-results.jsonl}

one() { # LABEL ARGS...: one run, its summary labelled
  local label=$1
  shift
  "$master" load --json "$@" |
    python3 -c "import json, sys; d = json.load(sys.stdin); d['label'] = sys.argv[1]; print(json.dumps(d))" "$label" >> "$out"
}

table() {
  python3 - "$out" <<'PY'
import json, statistics as st, sys
rows = [json.loads(line) for line in open(sys.argv[1])]
by = {}
for r in rows:
    by.setdefault(r["label"], []).append(r)
for label, runs in by.items():
    rates = [r["transfers_per_s"] / 1e6 for r in runs]
    done = [r for r in runs if r["snapshots"]["completed"]]
    line = f"{label:14} {len(runs):2} runs  {st.median(rates):6.2f} M transfers/s [{min(rates):.2f}-{max(rates):.2f}]"
    if done:
        line += "  latency p50 %.2f ms, p99 %.2f ms" % (
            st.median(r["latency_ms"]["p50"] for r in done),
            st.median(r["latency_ms"]["p99"] for r in done))
    line += "  snapshots %d, failed %d, aborted %d" % tuple(
        sum(r["snapshots"][k] for r in runs) for k in ("completed", "failed", "aborted"))
    print(line)
for t in ("mem", "pipe", "tcp"):
    w, wo = by.get(t + "-with"), by.get(t + "-without")
    if w and wo:
        ratios = [a["transfers_per_s"] / b["transfers_per_s"] for a, b in zip(w, wo)]
        print(f"{t}: with / without, pair by pair: median {st.median(ratios):.3f} [{min(ratios):.3f}-{max(ratios):.3f}]")
PY
}

case ${1:-} in
throughput)
  for seed in 1 2 3 4 5; do
    one mem16 --nodes 16 --transport mem --snapshot-every 10ms --duration 5s --seed "$seed"
    one pipe8 --nodes 8 --transport pipe --snapshot-every 10ms --duration 5s --seed "$seed"
    one tcp8 --nodes 8 --transport tcp --snapshot-every 10ms --duration 5s --seed "$seed"
  done
  table
  ;;
overhead)
  for transport in mem pipe tcp; do
    for seed in 1 2 3 4 5 6 7 8 9 10; do
      one "$transport-with" --nodes 8 --transport "$transport" --snapshot-every 10ms --duration 3s --seed "$seed"
      one "$transport-without" --nodes 8 --transport "$transport" --snapshot-every off --duration 3s --seed "$seed"
    done
  done
  table
  ;;
memory)
  for spec in "mem 16" "pipe 8" "tcp 8"; do
    read -r transport nodes <<< "$spec"
    "$master" load --nodes "$nodes" --transport "$transport" --snapshot-every 10ms \
      --duration 60s --seed 1 --json > "$work/$transport.json" &
    pid=$!
    printf '%s, resident memory (KiB) after 1, 10, 30 and 59 s:' "$transport"
    for second in $(seq 1 59); do
      sleep 1
      rss=$(awk '/VmRSS/ {print $2}' "/proc/$pid/status" 2>/dev/null || true)
      case $second in 1 | 10 | 30 | 59) printf ' %s' "$rss" ;; esac
    done
    wait "$pid"
    echo
  done
  ;;
*)
  sed -n '2,12p' "$0"
  exit 2
  ;;
esac
echo "results: $out"
