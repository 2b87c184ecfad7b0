#!/bin/bash
# Benchmark: an example model trained by nnc and by PyTorch on the same data,
# the same machine and the same two cores, in one run. Prints each one's
# training throughput, test accuracy, time from command to first step and
# peak memory, and the ratio nnc/PyTorch. See docs/performance.md.
#
#   bench/compare.sh [mlp|cnn] [EPOCHS]   (default: mlp 1; build first with
#                                          the README's first command)
#
# mlp: examples/fashion_mlp.nn (784-256-256-10, ReLU, Adam 1e-3, batch 64);
# cnn: examples/fashion_cnn.nn. The PyTorch peer is bench/torch_peer.py, in
# its fastest thread settings for each (DESIGN.md, reference figures).
set -euo pipefail
cd "$(dirname "$0")/.."
MODEL=${1:-mlp}
EPOCHS=${2:-1}
NNC=${NNC:-build/tools/nnc}
case $MODEL in
mlp) TORCH_ENV=() TORCH_THREADS=1 ;;
cnn) TORCH_ENV=(OPENBLAS_NUM_THREADS=1) TORCH_THREADS=2 ;;
*) echo "bench: unknown model '$MODEL' (mlp or cnn)" >&2; exit 2 ;;
esac
[ -x "$NNC" ] || { echo "bench: $NNC not built (run the README's first command)" >&2; exit 1; }
NNC=$(realpath "$NNC")
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT

field() { sed -n "s/.*[ ]$2=\([^ ]*\).*/\1/p" "$1" | tail -1; }
rss_mb() { awk '/Maximum resident set size/ {printf "%.0f", $6/1024}' "$1"; }

echo "== nnc: $MODEL, $EPOCHS epoch(s), 2 threads"
# In a scratch folder: the CNN example writes its checkpoint and log there.
src=$PWD
(cd "$out" && /usr/bin/time -v "$NNC" run "$src/examples/fashion_$MODEL.nn" --epochs "$EPOCHS" \
  --threads 2 --report >"$out/nnc.txt" 2>"$out/nnc.err") || { cat "$out/nnc.err" >&2; exit 1; }
grep -E "^(test|trained|RESULT)" "$out/nnc.txt" || true
grep -E "compiled in" "$out/nnc.err" || true

echo "== PyTorch: $MODEL, $EPOCHS epoch(s), $TORCH_THREADS torch thread(s) ${TORCH_ENV[*]}, flush-denormal"
env "${TORCH_ENV[@]}" /usr/bin/time -v /usr/bin/python3 bench/torch_peer.py --model "$MODEL" \
  --threads "$TORCH_THREADS" --epochs "$EPOCHS" >"$out/torch.txt" 2>"$out/torch.err" ||
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
