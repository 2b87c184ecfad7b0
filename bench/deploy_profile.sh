#!/bin/bash
# Where a deployed model's time goes: the float object and the int8 object
# (--quantize int8) of one checkpoint at one batch, each linked into
# examples/deploy/classify.c and run over the Fashion-MNIST test images
# under `perf record` (cycle samples: CPU time, which a shared machine
# disturbs less than wall time), alternating float and int8 for ROUNDS
# rounds; prints each round's samples per kernel and the ratio of the
# totals (float / int8: the int8 object's throughput against the float
# one's). See docs/performance.md (int8) and docs/deploy.md.
#
#   bench/deploy_profile.sh [mlp|cnn] [BATCH] [ROUNDS] [CHECKPOINT]
#
# Without a checkpoint it trains the model for 1 epoch first.
set -euo pipefail
cd "$(dirname "$0")/.."
MODEL=${1:-cnn}
BATCH=${2:-64}
ROUNDS=${3:-3}
CKPT=${4:-}
NNC=${NNC:-build-rel/tools/nnc}
CC=${CC:-gcc}
DATA=${DATA:-/usr/share/datasets/fashion-mnist}
case $MODEL in mlp | cnn) ;; *) echo "bench: unknown model '$MODEL' (mlp or cnn)" >&2; exit 2 ;; esac
[ -x "$NNC" ] || { echo "bench: $NNC not built" >&2; exit 1; }
command -v perf >/dev/null || { echo "bench: needs perf" >&2; exit 1; }
NNC=$(realpath "$NNC")
[ -n "$CKPT" ] && CKPT=$(realpath "$CKPT")
src=$PWD
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
cd "$out"
if [ -z "$CKPT" ]; then
  echo "== training $MODEL for 1 epoch (for a checkpoint)"
  "$NNC" run "$src/examples/fashion_$MODEL.nn" --epochs 1 --threads 2 --checkpoint ck.safetensors --quiet
  CKPT=ck.safetensors
fi
IMG="$DATA/t10k-images-idx3-ubyte.gz"
LAB="$DATA/t10k-labels-idx1-ubyte.gz"
for kind in float int8; do
  q=""
  [ $kind = int8 ] && q="--quantize int8"
  "$NNC" "$src/examples/fashion_$MODEL.nn" --emit=obj -o $kind/model.o --name model --weights "$CKPT" --batch "$BATCH" $q
  $CC -std=c99 -O2 -I $kind -o $kind/classify "$src/examples/deploy/classify.c" $kind/model.o -lz -lm -lpthread
done
for r in $(seq "$ROUNDS"); do
  echo "== round $r ($(uptime | sed 's/.*load/load/'))"
  for kind in float int8; do
    perf record -q -o $kind.data -F 2000 $kind/classify "$IMG" "$LAB" >$kind.out 2>/dev/null
    # samples per kernel of the program and in main (the copies in and out);
    # a float product's kernel is called nnc.gemm.eval.kN...
    perf report -i $kind.data --stdio --sort symbol -F overhead,sample,sym 2>/dev/null |
      awk '$3 == "[.]" { s = $4; sub(/^nnc\.gemm\./, "", s) }
           $3 == "[.]" && (s ~ /^eval\.k/ || s == "main") { n[s] += $2; t += $2 }
           END { for (k in n) printf "%s %d\n", k, n[k]; printf "TOTAL %d\n", t }' |
      sort >$kind.$r.txt
    echo "  $kind: $(head -1 $kind.out)"
  done
  join -a1 -a2 -e0 -o 0,1.2,2.2 float.$r.txt int8.$r.txt | grep -v '^TOTAL' |
    awk '{ printf "  %-36s float %6d  int8 %6d\n", $1, $2, $3 }'
  join float.$r.txt int8.$r.txt | awk '$1 == "TOTAL" { printf "  %-36s float %6d  int8 %6d\n", "total", $2, $3 }'
  awk '$1 == "TOTAL" { print $2 }' float.$r.txt int8.$r.txt | paste -sd' ' |
    awk '{ printf "  float / int8 samples: %.2fx\n", $1 / $2 }'
done
