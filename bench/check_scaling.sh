#!/bin/bash
# Benchmark: `nnc check` time against model size. Generates a model of N
# dense layers (plus the data and train blocks of a small regression) for
# each N and times `nnc check` on it; the front end and IR construction
# should stay near-linear (docs/performance.md has the figures).
#
#   bench/check_scaling.sh [N...]   (default: 1000 2000 4000 8000 16000;
#                                    NNC=path/to/nnc, default build/tools/nnc)
set -euo pipefail
cd "$(dirname "$0")/.."
NNC=$(realpath "${NNC:-build/tools/nnc}")
[ -x "$NNC" ] || { echo "bench: $NNC not built" >&2; exit 1; }
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
sizes=("$@")
[ ${#sizes[@]} -gt 0 ] || sizes=(1000 2000 4000 8000 16000)
printf '%8s %10s %14s\n' layers seconds us_per_layer
for n in "${sizes[@]}"; do
  f=$out/deep$n.nn
  {
    echo 'data points = csv("data/linear.csv", header = true, label = -1)'
    echo 'model deep(x: f32[1]) -> f32[1] {'
    echo '  h = dense(x, 4)'
    for ((i = 1; i < n; i++)); do echo '  h = relu(dense(h, 4))'; done
    echo '  return dense(h, 1)'
    echo '}'
    echo 'train { model = deep  data = points.train  loss = mse  optimizer = sgd(lr = 0.1)'
    echo '        batch = 32  epochs = 1  seed = 1 }'
  } > "$f"
  t0=$(date +%s.%N)
  "$NNC" check "$f"
  t1=$(date +%s.%N)
  awk -v n="$n" -v a="$t0" -v b="$t1" 'BEGIN { printf "%8d %10.3f %14.1f\n", n, b - a, (b - a) / n * 1e6 }'
done
