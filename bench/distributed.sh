#!/bin/bash
# Benchmark of data-parallel training (docs/distributed.md): one example's
# -o trainer on Fashion-MNIST, in one run on the same two cores, as
#   fused   one process x 2 threads, the ordinary step (./train alone)
#   dp1     one process x 2 threads, the data-parallel step (--data-parallel;
#           a model with batch norm runs the ordinary step in one process)
#   np2     2 processes x 1 thread under mpirun (the same bits as dp1 and
#           fused; with batch norm the ranks synchronise its statistics),
#           yielding when idle, not bound to cores
# Prints each one's samples/s (training steps only), test loss and accuracy,
# and whether np2's final checkpoint equals dp1's and fused's tensor for
# tensor.
#
#   bench/distributed.sh [mlp|cnn] [EPOCHS]   (default: mlp 1; build first:
#   cmake -S . -B build-rel -DCMAKE_BUILD_TYPE=Release && cmake --build build-rel -j2)
set -euo pipefail
cd "$(dirname "$0")/.."
MODEL=${1:-mlp}
EPOCHS=${2:-1}
NNC=$(realpath "${NNC:-build-rel/tools/nnc}")
TOOL=$(realpath "${E2E_TOOL:-build-rel/tests/e2e/e2e_tool}")
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
# On a shared machine the ranks must not spin while they wait for each
# other, nor be pinned to a core another program is using.
export OMPI_MCA_mpi_yield_when_idle=1 OMPI_MCA_hwloc_base_binding_policy=none
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
"$NNC" "examples/fashion_$MODEL.nn" -o "$out/train"
cd "$out"
common=(--epochs "$EPOCHS" --quiet --no-log --report)
show() {
  sed -n 's/^RESULT .*samples_per_s=\([^ ]*\) test_acc=\([^ ]*\) test_loss=\([^ ]*\).*/samples\/s \1  test accuracy \2  test loss \3/p' "$2" |
    sed "s/^/$1: /"
}
./train "${common[@]}" --threads 2 --checkpoint fused.st >fused.txt
show "fused (1 process x 2 threads)" fused.txt
./train "${common[@]}" --threads 2 --data-parallel --checkpoint dp1.st >dp1.txt
show "dp1   (1 process x 2 threads, --data-parallel)" dp1.txt
mpirun --oversubscribe -np 2 ./train "${common[@]}" --threads 1 --checkpoint np2.st >np2.txt
show "np2   (2 processes x 1 thread)" np2.txt
for one in dp1 fused; do
  if "$TOOL" same $one.st np2.st >/dev/null; then
    echo "np2 checkpoint = $one checkpoint, bit for bit"
  else
    echo "np2 checkpoint differs from $one's"
  fi
done
