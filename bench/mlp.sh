#!/bin/bash
# Benchmark: the Fashion-MNIST MLP (examples/fashion_mlp.nn: 784-256-256-10,
# ReLU, Adam 1e-3, batch 64) trained by nnc and by PyTorch on the same data,
# the same machine and the same two cores, in one run. Prints each one's
# training throughput, test accuracy, time from command to first step and
# peak memory, and the ratio nnc/PyTorch. See docs/performance.md.
#
#   bench/mlp.sh [EPOCHS]        (default 1; build first: README's first command)
set -euo pipefail
cd "$(dirname "$0")/.."
EPOCHS=${1:-1}
NNC=${NNC:-build/tools/nnc}
[ -x "$NNC" ] || { echo "bench: $NNC not built (run the README's first command)" >&2; exit 1; }
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT

field() { sed -n "s/.*[ ]$2=\([^ ]*\).*/\1/p" "$1" | tail -1; }
rss_mb() { awk '/Maximum resident set size/ {printf "%.0f", $6/1024}' "$1"; }

echo "== nnc ($EPOCHS epoch(s), 2 threads)"
/usr/bin/time -v "$NNC" run examples/fashion_mlp.nn --epochs "$EPOCHS" --threads 2 --report \
  >"$out/nnc.txt" 2>"$out/nnc.err" || { cat "$out/nnc.err" >&2; exit 1; }
grep -E "^(test|trained|RESULT)" "$out/nnc.txt" || true
grep -E "compiled in" "$out/nnc.err" || true

echo "== PyTorch ($EPOCHS epoch(s), 1 torch thread + OpenBLAS threads, flush-denormal)"
/usr/bin/time -v /usr/bin/python3 bench/torch_mlp.py --epochs "$EPOCHS" >"$out/torch.txt" 2>"$out/torch.err" ||
  { cat "$out/torch.err" >&2; exit 1; }
grep RESULT "$out/torch.txt"

n_sps=$(field "$out/nnc.txt" samples_per_s)
t_sps=$(field "$out/torch.txt" samples_per_s)
printf '\n%-10s %14s %10s %18s %14s\n' "" "samples/s" "test acc" "start→1st step s" "peak RSS MB"
printf '%-10s %14s %10s %18s %14s\n' nnc "$n_sps" "$(field "$out/nnc.txt" test_acc)" \
  "$(field "$out/nnc.txt" start_to_first_step_s)" "$(rss_mb "$out/nnc.err")"
printf '%-10s %14s %10s %18s %14s\n' pytorch "$t_sps" "$(field "$out/torch.txt" test_acc)" \
  "$(field "$out/torch.txt" start_to_first_step_s)" "$(rss_mb "$out/torch.err")"
awk -v a="$n_sps" -v b="$t_sps" 'BEGIN { printf "ratio nnc/pytorch: %.2fx training throughput\n", a / b }'
