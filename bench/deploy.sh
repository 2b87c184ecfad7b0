#!/bin/bash
# Benchmark of deployment: a trained example model emitted as an object
# (--emit=obj) and as C (--emit=c, compiled with gcc -O3 -march=native),
# each linked into examples/deploy/classify.c, against PyTorch's eval
# (bench/torch_infer.py: torch.no_grad(), its fastest thread setting) in
# the same run: batch-1 latency (us per sample) and batch-64 throughput
# (samples/s) over the Fashion-MNIST test images, one thread, plus code and
# weight sizes; and the int8 object (--quantize int8) against the float one
# (its test accuracy beside the float one's, as nnc prints them). See
# docs/performance.md and docs/deploy.md.
#
#   bench/deploy.sh [mlp|cnn]   (NNC=build-rel/tools/nnc by default)
#
# Trains the model for 1 epoch first (the speed does not depend on the
# weights, but emitting needs a checkpoint).
set -euo pipefail
cd "$(dirname "$0")/.."
MODEL=${1:-mlp}
NNC=${NNC:-build-rel/tools/nnc}
CC=${CC:-gcc}
DATA=${DATA:-/usr/share/datasets/fashion-mnist}
case $MODEL in mlp | cnn) ;; *) echo "bench: unknown model '$MODEL' (mlp or cnn)" >&2; exit 2 ;; esac
[ -x "$NNC" ] || { echo "bench: $NNC not built" >&2; exit 1; }
NNC=$(realpath "$NNC")
src=$PWD
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
cd "$out"
echo "== training $MODEL for 1 epoch (for a checkpoint)"
"$NNC" run "$src/examples/fashion_$MODEL.nn" --epochs 1 --threads 2 --checkpoint ck.safetensors --quiet --report | grep RESULT
IMG="$DATA/t10k-images-idx3-ubyte.gz"
LAB="$DATA/t10k-labels-idx1-ubyte.gz"
REPEAT=3
[ "$MODEL" = cnn ] && REPEAT=1
row() { printf '%-28s %14s %18s\n' "$@"; }
results=()
for b in 1 64; do
  for kind in obj c obj8; do
    dir=${kind}_b$b
    if [ $kind = obj8 ]; then
      "$NNC" "$src/examples/fashion_$MODEL.nn" --emit=obj -o $dir/model.o --name model --weights ck.safetensors --batch $b --quantize int8 | tee $dir.acc
      model=$dir/model.o
    elif [ $kind = obj ]; then
      "$NNC" "$src/examples/fashion_$MODEL.nn" --emit=obj -o $dir/model.o --name model --weights ck.safetensors --batch $b
      model=$dir/model.o
    else
      "$NNC" "$src/examples/fashion_$MODEL.nn" --emit=c -o $dir/model --name model --weights ck.safetensors --batch $b
      $CC -std=c99 -O3 -march=native -c -o $dir/model_c.o $dir/model.c
      model=$dir/model_c.o
    fi
    $CC -std=c99 -O2 -I $dir -o $dir/classify "$src/examples/deploy/classify.c" $model -lz -lm -lpthread
    line=$($dir/classify "$IMG" "$LAB" --repeat $REPEAT | head -1)
    us=$(echo "$line" | sed -n 's/.*, \([0-9.]*\) us per sample.*/\1/p')
    echo "  $kind batch $b: $line"
    results+=("$kind $b $us")
    if [ $b = 1 ]; then
      size "$model" | tail -1 | awk -v k=$kind '{ printf "  %s: text %d bytes, data %d bytes (weights in .rodata: see text)\n", k, $1, $2 }'
    fi
  done
done
echo "== PyTorch"
/usr/bin/python3 "$src/bench/torch_infer.py" --model "$MODEL" --data "$DATA" | tee torch.txt
t_b1=$(sed -n 's/.*us_per_sample_b1=\([0-9.]*\).*/\1/p' torch.txt)
t_b64=$(sed -n 's/.*samples_per_s_b64=\([0-9.]*\).*/\1/p' torch.txt)
echo
row "$MODEL, 1 thread" "batch 1 us/sample" "batch 64 samples/s"
for kind in obj c; do
  b1=$(printf '%s\n' "${results[@]}" | awk -v k=$kind '$1 == k && $2 == 1 { print $3 }')
  b64=$(printf '%s\n' "${results[@]}" | awk -v k=$kind '$1 == k && $2 == 64 { printf "%.0f", 1e6 / $3 }')
  row "nnc $kind" "$b1" "$b64"
done
b1=$(printf '%s\n' "${results[@]}" | awk '$1 == "obj8" && $2 == 1 { print $3 }')
b64=$(printf '%s\n' "${results[@]}" | awk '$1 == "obj8" && $2 == 64 { printf "%.0f", 1e6 / $3 }')
row "nnc obj int8" "$b1" "$b64"
row "pytorch (fastest threads)" "$t_b1" "$t_b64"
ob1=$(printf '%s\n' "${results[@]}" | awk '$1 == "obj" && $2 == 1 { print $3 }')
ob64=$(printf '%s\n' "${results[@]}" | awk '$1 == "obj" && $2 == 64 { print 1e6 / $3 }')
cb1=$(printf '%s\n' "${results[@]}" | awk '$1 == "c" && $2 == 1 { print $3 }')
cb64=$(printf '%s\n' "${results[@]}" | awk '$1 == "c" && $2 == 64 { print 1e6 / $3 }')
awk -v o1="$ob1" -v o64="$ob64" -v c1="$cb1" -v c64="$cb64" -v t1="$t_b1" -v t64="$t_b64" 'BEGIN {
  printf "object / pytorch: %.1fx at batch 1, %.1fx at batch 64\n", t1 / o1, o64 / t64
  printf "C / object time: %.2fx at batch 1, %.2fx at batch 64\n", c1 / o1, o64 / c64 }'
q1=$(printf '%s\n' "${results[@]}" | awk '$1 == "obj8" && $2 == 1 { print $3 }')
q64=$(printf '%s\n' "${results[@]}" | awk '$1 == "obj8" && $2 == 64 { print 1e6 / $3 }')
awk -v o1="$ob1" -v o64="$ob64" -v q1="$q1" -v q64="$q64" 'BEGIN {
  printf "int8 object / float object: %.2fx at batch 1, %.2fx the throughput at batch 64\n", o1 / q1, q64 / o64 }'
echo "int8 accuracy: $(cat obj8_b64.acc)"
"$NNC" "$src/examples/fashion_$MODEL.nn" --emit=c -o w/model --name model --weights ck.safetensors --extern-weights
wb=$(sed -n 's/^#define MODEL_WEIGHTS_SIZE \([0-9]*\).*/\1/p' w/model.h)
$CC -std=c99 -O3 -march=native -c -o w/model.o w/model.c
for kind in obj c obj8; do
  o=obj_b1/model.o
  [ $kind = c ] && o=c_b1/model_c.o
  if [ $kind = obj8 ]; then
    size obj8_b1/model.o | tail -1 | awk '{ printf "obj8 batch 1: %d bytes of text + rodata (int8 weights, offsets, scales, the float tensors left, code)\n", $1 + $2 }'
    continue
  fi
  size "$o" | tail -1 | awk -v k=$kind -v w="$wb" '{ printf "%s batch 1: %d bytes of text + rodata, of which %d weights (%d code and constants)\n", k, $1 + $2, w, $1 + $2 - w }'
done
size w/model.o | tail -1 | awk '{ printf "c --extern-weights: %d bytes of code\n", $1 + $2 }'
for b in 1 64; do
  echo "workspace at batch $b: $(sed -n 's/^#define MODEL_WORKSPACE_SIZE \([0-9]*\).*/\1/p' c_b$b/model.h) bytes"
done
