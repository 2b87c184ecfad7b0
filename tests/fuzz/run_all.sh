#!/bin/bash
# run_all.sh BUILD_DIR [SECONDS|RUNSr] [TARGET...]: runs each libFuzzer
# target of an -DNNC_FUZZ=ON build for SECONDS (default 30), or, written as
# e.g. 20000r, for exactly that many inputs from a fixed seed (FUZZ_SEED,
# default 1): the same inputs on every run, which is what CI uses so that its
# verdict does not depend on the draw. Either way it starts from its seed corpus
# (tests/fuzz/corpus/NAME; new inputs go to a scratch folder, not the repo)
# plus its regression inputs (tests/fuzz/regressions/NAME, run first, each
# must pass). Stops at the first target that finds a crash, leak, timeout or
# sanitizer report; the input is kept as fuzz-artifacts/NAME-crash-...
# (see docs/fuzzing.md for turning it into a regression input).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
build=$(cd "$1" && pwd)
secs=${2:-30}
if [[ $secs == *r ]]; then
  budget=(-runs="${secs%r}" -seed="${FUZZ_SEED:-1}")
  what="${secs%r} inputs, seed ${FUZZ_SEED:-1}"
else
  budget=(-max_total_time="$secs")
  what="$secs s"
fi
shift $(($# < 2 ? $# : 2))
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(check passes idx csv npy safetensors spec)
scratch=$(mktemp -d /tmp/nnc-fuzz-XXXXXX)
trap 'rm -rf "$scratch"' EXIT
mkdir -p fuzz-artifacts
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
for t in "${targets[@]}"; do
  bin=$build/tests/fuzz/fuzz_$t
  [ -x "$bin" ] || { echo "run_all: $bin not built (cmake --build $build --target fuzz)" >&2; exit 1; }
  if [ -d "$here/regressions/$t" ] && [ -n "$(ls -A "$here/regressions/$t")" ]; then
    echo "== fuzz_$t: regression inputs"
    TMPDIR=$scratch "$bin" -runs=0 "$here/regressions/$t"/* > "$scratch/$t-regress.log" 2>&1 ||
      { cat "$scratch/$t-regress.log"; echo "fuzz_$t: a regression input fails" >&2; exit 1; }
  fi
  echo "== fuzz_$t: $what"
  mkdir -p "$scratch/$t"
  TMPDIR=$scratch "$bin" "${budget[@]}" -timeout=10 -rss_limit_mb=2048 -max_len=65536 \
    -print_final_stats=1 -artifact_prefix="fuzz-artifacts/$t-" "$scratch/$t" "$here/corpus/$t" \
    > "$scratch/$t.log" 2>&1 || { tail -60 "$scratch/$t.log"; echo "fuzz_$t found a problem" >&2; exit 1; }
  grep -E "stat::number_of_executed_units|Done [0-9]+ runs" "$scratch/$t.log" | tail -1
done
