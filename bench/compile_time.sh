#!/bin/bash
# Benchmark: compile time of the CNN and the MLP, two nnc builds
# interleaved (A B A B ...): `nnc run --compile-only` (compiles to machine
# code as a run does, then stops; a build older than the flag: `--epochs 0`,
# which compiles and then stops at the bad value, when NNC_DEBUG is set;
# the "compiled ... in ... ms" line, the user CPU time and each
# of the JIT's parts' thread CPU time, "parts cpu P0/P1/... ms": the threads
# take the parts in turn, so the wall time on a quiet machine is about
# their sum over the cores) and `nnc FILE -o` (user CPU and wall time, the
# C link included). On a shared machine compare the user CPU times and the
# parts' CPU; wall times need a quiet one. Before the rounds, and again
# after them, B compiles the CNN on one thread pinned to each of the first
# two CPUs (taskset): virtual CPUs of one machine have run this 1.5x apart,
# and the two-thread compile depends on it (docs/performance.md,
# "parts pulled by threads").
#
#   bench/compile_time.sh [ROUNDS]   (default 3; NNC_A, NNC_B: the two nnc
#                                     builds, default build-rel/tools/nnc for both)
set -euo pipefail
cd "$(dirname "$0")/.."
A=$(realpath "${NNC_A:-build-rel/tools/nnc}")
B=$(realpath "${NNC_B:-build-rel/tools/nnc}")
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
# B's CNN compile on one thread, on CPU 0 and on CPU 1.
per_cpu() {
  command -v taskset >/dev/null && [ "$(nproc)" -ge 2 ] || return 0
  local line="one thread:"
  for c in 0 1; do
    local ms
    ms=$(taskset -c $c env NNC_DEBUG=1 "$B" run examples/fashion_cnn.nn --compile-only 2>&1 |
      grep -o "compiled [^ ]* in [0-9.]* ms" | sed 's/compiled .* in //' || true)
    line="$line CPU $c ${ms:-?}"
  done
  echo "$line"
}
per_cpu
for ((r = 0; r < ${1:-3}; r++)); do
  for m in fashion_cnn fashion_mlp; do
    for v in A B; do
      nnc=$A
      [ $v = B ] && nnc=$B
      stop=--compile-only
      "$nnc" --help | grep -q -- --compile-only || stop="--epochs 0"
      log=$({ NNC_DEBUG=1 /usr/bin/time -f "user %U s" "$nnc" run "examples/$m.nn" $stop; } 2>&1 || true)
      run=$(grep -o "compiled [^ ]* in [0-9.]* ms\|user [0-9.]* s" <<<"$log" | sed 's/compiled .* in //' |
        tr '\n' ' ' || true)
      cpu=$(grep -o "; cpu [0-9.]* ms" <<<"$log" | grep -o "[0-9.]*" | paste -sd/ || true)
      [ -n "$cpu" ] && run="$run| parts cpu $cpu ms "
      build=$({ /usr/bin/time -f "user %U s, wall %e s" "$nnc" "examples/$m.nn" -o "$out/t"; } 2>&1 | tail -1)
      echo "$m $v: run $run| -o $build | load $(cut -d' ' -f1 /proc/loadavg)"
    done
  done
done
per_cpu
