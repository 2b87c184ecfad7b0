#!/bin/bash
# Benchmark: start-up and memory of a standalone trainer. Compiles an
# example model with `nnc FILE -o train` and runs the trainer for one epoch
# (no checkpoint, no log) REPEATS times, printing for each run the time
# from main() to the first training step (`--report`'s
# start_to_first_step_s), the peak RSS, the user and system CPU seconds
# and the training throughput, then the medians. See docs/performance.md.
#
#   bench/startup.sh [mlp|cnn] [REPEATS] [THREADS]   (default: mlp 5 0)
#
# THREADS 0 is the trainer's default (all cores). With NNC_BASE=OTHER_NNC,
# a trainer built by that nnc (e.g. main's) runs alternately with this one
# (A B A B ...), so both see the same machine; compare the two medians.
set -euo pipefail
cd "$(dirname "$0")/.."
MODEL=${1:-mlp}
REPEATS=${2:-5}
THREADS=${3:-0}
NNC=${NNC:-build/tools/nnc}
case $MODEL in
mlp | cnn) ;;
*) echo "bench: unknown model '$MODEL' (mlp or cnn)" >&2; exit 2 ;;
esac
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
names=(nnc)
"$NNC" "examples/fashion_$MODEL.nn" -o "$out/nnc"
if [ -n "${NNC_BASE:-}" ]; then
  names+=(base)
  "$NNC_BASE" "examples/fashion_$MODEL.nn" -o "$out/base"
fi
echo "== $MODEL trainer, 1 epoch, --threads $THREADS, $REPEATS runs; $(uptime | sed 's/.*load/load/')"
printf '%-6s %16s %12s %8s %8s %12s\n' "" "start->1st step s" "peak RSS MB" "user s" "sys s" "samples/s"
for ((i = 0; i < REPEATS; i++)); do
  for n in "${names[@]}"; do
    (cd "$out" && /usr/bin/time -f "%M %U %S" -o "$out/$n.time" "./$n" --epochs 1 --report \
      --quiet --no-checkpoint --no-log --threads "$THREADS" >"$out/$n.txt")
    read -r kb user sys <"$out/$n.time"
    first=$(sed -n 's/.*start_to_first_step_s=\([^ ]*\).*/\1/p' "$out/$n.txt")
    sps=$(sed -n 's/.*samples_per_s=\([^ ]*\).*/\1/p' "$out/$n.txt")
    printf '%-6s %16s %12.1f %8s %8s %12s\n' "$n" "$first" "$(echo "$kb / 1024" | bc -l)" \
      "$user" "$sys" "$sps" | tee -a "$out/$n.rows"
  done
done
median() { sort -n | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
echo "== medians"
for n in "${names[@]}"; do
  printf '%-6s %16s %12s %8s %8s %12s\n' "$n" "$(awk '{print $2}' "$out/$n.rows" | median)" \
    "$(awk '{print $3}' "$out/$n.rows" | median)" "$(awk '{print $4}' "$out/$n.rows" | median)" \
    "$(awk '{print $5}' "$out/$n.rows" | median)" "$(awk '{print $6}' "$out/$n.rows" | median)"
done
