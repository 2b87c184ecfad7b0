#!/bin/bash
# Benchmark: an example's training step as a fraction of this machine's f32
# FMA peak, both measured in this run. Alternates the peak probe
# (build-rel/bench/fma_peak, zmm FMA chains on THREADS threads) with
# training runs of examples/fashion_<model>.nn on THREADS threads, and
# divides the best step rate's FLOP/s by the best peak. The FLOPs of a
# step are counted from the shapes of the compiled products (the MxNxK in
# the NNC_PROFILE kernel names, 2*M*N*K each: forward, input and weight
# gradients) plus 12 per parameter for Adam's update (the parameters are
# those of the forward products: K*N weights and N biases); elementwise
# work (bias, ReLU, loss) is not counted. See docs/performance.md.
#
#   NNC=build-rel/tools/nnc bench/peak.sh [mlp|cnn] [EPOCHS] [REPEATS] [THREADS]
#   (defaults: mlp 1 3 2; the probe is PEAK=build-rel/bench/fma_peak, and
#   PINGPONG=build-rel/bench/core_pingpong times the cores' round trip)
set -euo pipefail
cd "$(dirname "$0")/.."
MODEL=${1:-mlp}
EPOCHS=${2:-1}
REPEATS=${3:-3}
THREADS=${4:-2}
NNC=${NNC:-build-rel/tools/nnc}
PEAK=${PEAK:-build-rel/bench/fma_peak}
[ -x "$NNC" ] || { echo "bench: $NNC not built" >&2; exit 1; }
[ -x "$PEAK" ] || { echo "bench: $PEAK not built (a Release build with AVX-512)" >&2; exit 1; }
[ -f "examples/fashion_$MODEL.nn" ] || { echo "bench: no examples/fashion_$MODEL.nn" >&2; exit 2; }
NNC=$(realpath "$NNC")
src=$PWD
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
field() { sed -n "s/.*[ ]$2=\([^ ]*\).*/\1/p" "$1" | tail -1; }
run_nnc() { # $1: output file; the rest: environment
  local o=$1
  shift
  (cd "$out" && env "$@" "$NNC" run "$src/examples/fashion_$MODEL.nn" --epochs "$EPOCHS" \
    --threads "$THREADS" --no-checkpoint --no-log --quiet --report >"$o" 2>"$o.err") ||
    { cat "$o.err" >&2; exit 1; }
}

# FLOPs of one training step, from one profiled run's product shapes.
run_nnc "$out/profile.txt" NNC_PROFILE=1
read -r batch prod params < <(sed -n '/^profile train/,/^profile eval/p' "$out/profile.txt.err" |
  awk '{ for (i = NF; i > 0; i--) if ($i ~ /^[0-9]+x[0-9]+x[0-9]+$/) break }
       i > 0 {
         split($i, s, "x"); prod += 2 * s[1] * s[2] * s[3]
         if ($0 ~ / fwd /) { batch = s[1]; params += s[3] * s[2] + s[2] }
       }
       END { printf "%d %.0f %.0f\n", batch, prod, params }')
[ "$batch" -gt 0 ] || { echo "bench: no products in the profile" >&2; exit 1; }
flops=$(awk -v p="$prod" -v n="$params" 'BEGIN { printf "%.0f", p + 12 * n }')
echo "== $MODEL: batch $batch, $params parameters; per step $(awk -v f="$prod" 'BEGIN{printf "%.1f", f/1e6}') MFLOP" \
  "in products + $(awk -v n="$params" 'BEGIN{printf "%.1f", 12*n/1e6}') in Adam = $(awk -v f="$flops" 'BEGIN{printf "%.1f", f/1e6}') MFLOP"
echo "== $REPEATS rounds of: peak probe on $THREADS thread(s), $EPOCHS epoch(s) of training on $THREADS thread(s)"
best_peak=0
best_sps=0
# The two cores' round trip (bench/core_pingpong) before and after each
# training round, where there are two threads: the step's handoffs between
# the cores cost ~4x more in one placement of the machine's virtual CPUs
# than in the other (docs/performance.md).
PINGPONG=${PINGPONG:-build-rel/bench/core_pingpong}
pingpong() {
  if [ "$THREADS" -ge 2 ] && [ -x "$PINGPONG" ]; then
    "$PINGPONG" 20000 | sed -n 's/.*round_trip_ns=\([0-9.]*\).*/\1/p'
  fi
}
for r in $(seq "$REPEATS"); do
  pk=$("$PEAK" "$THREADS" | sed -n 's/.*gflops=\([0-9.]*\) .*/\1/p')
  rt0=$(pingpong)
  run_nnc "$out/run.$r.txt"
  rt1=$(pingpong)
  sps=$(field "$out/run.$r.txt" samples_per_s)
  frac=$(awk -v f="$flops" -v s="$sps" -v b="$batch" -v p="$pk" 'BEGIN { printf "%.3f", f * s / b * 1e-9 / p }')
  echo "round $r: peak $pk GFLOP/s, $sps samples/s = $frac of it;${rt0:+ round trip between the cores $rt0/$rt1 ns;}" \
    "($(uptime | sed 's/.*load/load/'))"
  best_peak=$(awk -v a="$best_peak" -v b="$pk" 'BEGIN { print (b > a) ? b : a }')
  best_sps=$(awk -v a="$best_sps" -v b="$sps" 'BEGIN { print (b > a) ? b : a }')
done
awk -v f="$flops" -v s="$best_sps" -v b="$batch" -v p="$best_peak" -v t="$THREADS" 'BEGIN {
  g = f * s / b * 1e-9
  printf "best: %.0f samples/s = %.1f GFLOP/s; FMA peak on %d thread(s) %.1f GFLOP/s\n", s, g, t, p
  printf "PEAK_FRACTION model_gflops=%.1f peak_gflops=%.1f fraction=%.3f\n", g, p, g / p
}'
