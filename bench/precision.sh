#!/bin/bash
# Benchmark: an example trained by nnc with precision = f32 and = bf16, in
# one run, alternating (f32, bf16, f32, bf16, ...), so both see the same
# machine load. Prints each run's samples/s and test accuracy, then the
# median of each and the ratio bf16/f32. See docs/performance.md.
#
#   NNC=build-rel/tools/nnc bench/precision.sh [mlp|cnn] [EPOCHS] [REPEATS] [THREADS]
#   (defaults: mlp 1 3 2)
set -euo pipefail
cd "$(dirname "$0")/.."
MODEL=${1:-mlp}
EPOCHS=${2:-1}
REPEATS=${3:-3}
THREADS=${4:-2}
NNC=${NNC:-build-rel/tools/nnc}
[ -x "$NNC" ] || { echo "bench: $NNC not built" >&2; exit 1; }
NNC=$(realpath "$NNC")
src=$PWD
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
field() { sed -n "s/.*[ ]$2=\([^ ]*\).*/\1/p" "$1" | tail -1; }
echo "== $MODEL, $EPOCHS epoch(s), $THREADS thread(s), $REPEATS runs of each precision"
for r in $(seq "$REPEATS"); do
  for p in f32 bf16; do
    (cd "$out" && "$NNC" run "$src/examples/fashion_$MODEL.nn" --precision "$p" --epochs "$EPOCHS" \
      --threads "$THREADS" --no-checkpoint --no-log --report >"$out/$p.$r.txt" 2>"$out/$p.$r.err") ||
      { cat "$out/$p.$r.err" >&2; exit 1; }
    sps=$(field "$out/$p.$r.txt" samples_per_s)
    acc=$(field "$out/$p.$r.txt" test_acc)
    echo "$p run $r: $sps samples/s, test accuracy $acc"
    echo "$sps" >>"$out/$p.sps"
  done
done
median() { sort -g "$1" | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
f=$(median "$out/f32.sps")
b=$(median "$out/bf16.sps")
awk -v f="$f" -v b="$b" 'BEGIN { printf "median samples/s: f32 %.0f, bf16 %.0f, bf16/f32 %.2fx\n", f, b, b / f }'
