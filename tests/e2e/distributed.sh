#!/usr/bin/env bash
# distributed.sh NNC E2E_TOOL SOURCE_DIR MPIRUN|none [SANITIZE]: data-parallel
# training end to end (docs/distributed.md); SANITIZE=1: an ASan build. Sections (DIST_ONLY="a b" runs some):
#   linreg   examples/linear_regression.nn -o trainer: mpirun -np 2 and -np 4
#            write the same checkpoint tensors as one process with
#            --data-parallel and as one plain process (the ordinary step),
#            and so do nnc run alone and under mpirun -np 2
#   mlp      examples/fashion_mlp.nn on generated IDX data, 2 epochs: -np 2
#            and -np 4 (oversubscribed) = one process, plain (1 and 3
#            threads; nnc run with NNC_FUSE_UPDATES=1, its Adam updates
#            fused into the weight gradients' products) and --data-parallel,
#            bit for bit; the printed results too; rank 0 alone writes the log
#   penalty  the MLP with l1 and l2 penalties (added once, after the
#            micro-batches' sum): one plain process = -np 2, bit for bit
#   dropout  the MLP with dropout after both hidden layers (each micro-batch
#            draws its masks with its own seed, in the ordinary step too):
#            one plain process (1 and 3 threads) = --data-parallel = -np 2
#   cnn      synchronised batch norm: a small CNN with batch norm after a
#            convolution and a dense layer, dropout and hflip, on generated
#            data: one plain process (1 and 3 threads) = -np 2 = -np 4 =
#            nnc run under -np 2, bit for bit; resumed from -np 2 under
#            -np 4 and one process; -np 3 refused; examples/fashion_cnn.nn
#            plain = -np 2
#   resume   an -np 2 checkpoint after 1 epoch resumed under -np 4 and
#            under one process to 2 epochs = 2 epochs straight under -np 2
#   errors   -np 3 (does not divide 4 micro-batches) is refused; a data error
#            on rank 1 alone ends both ranks with rank 1's message (exit 1);
#            an unwritable checkpoint folder is refused before training
#   kill     SIGKILL one rank mid-training: mpirun ends the run within
#            seconds with a nonzero status
#   nompi    (MPIRUN=none: a build without MPI) a trainer started as one of
#            2 processes by a launcher refuses with a message that says so
# Exit 0: all passed; 1: a failure (printed); 77: nothing to run here.
set -u

NNC=$(realpath "$1")
TOOL=$(realpath "$2")
SRC=$(realpath "$3")
MPIRUN=$4
SANITIZE=${5:-0}
EX=$SRC/examples
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
# The ranks share this machine's cores with ctest -j: no binding, and
# Open MPI's yield-when-idle so that waiting ranks do not spin.
export OMPI_MCA_hwloc_base_binding_policy=none OMPI_MCA_mpi_yield_when_idle=1

TMP=$(mktemp -d "${TMPDIR:-/tmp}/nnc_dist.XXXXXX")
if [ -z "${DIST_KEEP:-}" ]; then trap 'rm -rf "$TMP"' EXIT; else echo "keeping $TMP"; fi
cd "$TMP" || exit 1

# Under LeakSanitizer, the ranks of mpirun report what Open MPI's plug-ins
# (unloaded at exit, so unnamed in the stacks) keep until exit: leak checks
# are off for the ranks; the one-process --data-parallel runs of the same
# code keep them.
if [ "$SANITIZE" = 1 ]; then
  MPIRUN_ENV=(env "ASAN_OPTIONS=${ASAN_OPTIONS:-}:detect_leaks=0")
else
  MPIRUN_ENV=()
fi

FAILED=0
SECTION=""
fail() {
  echo "FAIL [$SECTION]: $*" >&2
  FAILED=1
}
run() { # run NAME CMD...: stdout/stderr in NAME.out/NAME.err, status in $RC
  local name=$1
  shift
  "$@" >"$name.out" 2>"$name.err"
  RC=$?
}
expect_rc() {
  if [ "$RC" != "$2" ]; then
    fail "$1: exit status $RC, expected $2"
    sed 's/^/    | /' "$1.err" >&2
    return 1
  fi
}
expect_grep() {
  if ! grep -qF -- "$2" "$1"; then
    fail "$1 lacks '$2'; it has:"
    sed 's/^/    | /' "$1" >&2
    return 1
  fi
}
same() { # same A B: identical tensors (data, shapes, names)
  if "$TOOL" same "$1" "$2" >same.log 2>&1 && "$TOOL" same "$2" "$1" >>same.log 2>&1; then
    echo "  ok: $1 = $2, bit for bit"
  else
    fail "$1 and $2 differ:"
    sed 's/^/    | /' same.log >&2
  fi
}
mpi() { "${MPIRUN_ENV[@]}" "$MPIRUN" --oversubscribe -np "$@"; }
want() { [ -z "${DIST_ONLY:-}" ] || [[ " $DIST_ONLY " == *" $1 "* ]]; }
begin() {
  SECTION=$1
  echo "== $1"
}

if [ "$MPIRUN" = none ]; then
  if want nompi; then
    begin nompi
    run build "$NNC" "$EX/linear_regression.nn" -o lin
    expect_rc build 0
    run launched env OMPI_COMM_WORLD_SIZE=2 ./lin --quiet
    expect_rc launched 1 && expect_grep launched.err "built without MPI"
    run alone ./lin --quiet --data-parallel --no-checkpoint
    expect_rc alone 0
  fi
  exit $FAILED
fi

mkdir gen && "$TOOL" idx gen 1024 256 >/dev/null || exit 1

if want linreg; then
  begin linreg
  run build "$NNC" "$EX/linear_regression.nn" -o lin && expect_rc build 0
  run one ./lin --quiet --threads 1 --data-parallel --checkpoint one.st && expect_rc one 0
  for n in 2 4; do
    run np$n mpi $n ./lin --quiet --threads 1 --checkpoint np$n.st && expect_rc np$n 0 &&
      same one.st np$n.st
  done
  run jit mpi 2 "$NNC" run "$EX/linear_regression.nn" --quiet --threads 1 --checkpoint jit.st &&
    expect_rc jit 0 && same one.st jit.st
  # The ordinary step of one process (no flag) sums in the same order.
  run plain ./lin --quiet --threads 1 --checkpoint plain.st && expect_rc plain 0 &&
    same one.st plain.st
  run jitplain "$NNC" run "$EX/linear_regression.nn" --quiet --threads 2 --checkpoint jitplain.st &&
    expect_rc jitplain 0 && same one.st jitplain.st
fi

if want mlp; then
  begin mlp
  run build "$NNC" "$EX/fashion_mlp.nn" -o mlp && expect_rc build 0
  common=(--data gen --epochs 2 --threads 1 --quiet)
  run one ./mlp "${common[@]}" --data-parallel --checkpoint one.st --log one.csv &&
    expect_rc one 0
  # One plain process (the ordinary step, no flag), at 1 and 3 threads.
  for t in 1 3; do
    run plain$t ./mlp "${common[@]}" --threads $t --checkpoint plain$t.st --no-log &&
      expect_rc plain$t 0 && same one.st plain$t.st
    diff <(grep '^test:' one.out) <(grep '^test:' plain$t.out) >/dev/null ||
      fail "plain$t prints other results than --data-parallel"
  done
  # NNC_FUSE_UPDATES=1: the ordinary step with the three weights' Adam
  # updates fused into their gradients' products (codegen/lower_update.c),
  # the same bits as --data-parallel's update passes on their own.
  run fused env NNC_FUSE_UPDATES=1 NNC_PROFILE=1 "$NNC" run "$EX/fashion_mlp.nn" "${common[@]}" \
    --checkpoint fused.st --no-log && expect_rc fused 0 && same one.st fused.st
  [ "$(grep -c ' matmul .* +k[0-9]* update\.adam\.m\.mlp\.dense[123]\.weight' fused.err)" = 3 ] ||
    fail "fashion_mlp's step does not fuse its three weight updates: $(grep -c ' +k' fused.err)"
  for n in 2 4; do
    rm -f np$n.csv
    run np$n mpi $n ./mlp "${common[@]}" --checkpoint np$n.st --log np$n.csv &&
      expect_rc np$n 0 && same one.st np$n.st
    # The same printed results, once (rank 0 alone prints).
    if ! diff <(grep '^test:' one.out) <(grep '^test:' np$n.out) >/dev/null ||
      [ "$(grep -c '^test:' np$n.out)" != 1 ]; then
      fail "np$n prints other results:"
      sed 's/^/    | /' np$n.out >&2
    fi
    [ -f np$n.csv ] || fail "np$n: no log"
  done
fi

if want penalty; then
  begin penalty
  sed 's/^  metrics .*/&\n  l1 = 1e-5   l2 = 1e-3/' "$EX/fashion_mlp.nn" >pen.nn
  grep -q 'l2 = 1e-3' pen.nn || fail "pen.nn has no penalty"
  run build "$NNC" pen.nn -o pen && expect_rc build 0
  common=(--data gen --epochs 1 --threads 1 --quiet --no-log)
  run plain ./pen "${common[@]}" --checkpoint plain.st && expect_rc plain 0
  run np2 mpi 2 ./pen "${common[@]}" --checkpoint np2.st && expect_rc np2 0 && same plain.st np2.st
fi

if want dropout; then
  begin dropout
  sed -e 's/^  h = relu(dense(\(.\), 256))$/  h = dropout(relu(dense(\1, 256)), 0.25)/' \
    "$EX/fashion_mlp.nn" >drop.nn
  [ "$(grep -c 'dropout(relu' drop.nn)" = 2 ] || fail "drop.nn lacks its two dropouts"
  run build "$NNC" drop.nn -o drop && expect_rc build 0
  common=(--data gen --epochs 1 --quiet --no-log)
  run one ./drop "${common[@]}" --threads 1 --data-parallel --checkpoint one.st && expect_rc one 0
  for t in 1 3; do
    run plain$t ./drop "${common[@]}" --threads $t --checkpoint plain$t.st &&
      expect_rc plain$t 0 && same one.st plain$t.st
  done
  run np2 mpi 2 ./drop "${common[@]}" --threads 1 --checkpoint np2.st && expect_rc np2 0 &&
    same one.st np2.st
fi

if want cnn; then
  begin cnn
  # Synchronised batch norm: each rank's step sums its part of the batch
  # statistics, the ranks' parts added inside the step as the top of the
  # ordinary step's tree. A small CNN (batch norm after a convolution and
  # after a dense layer, dropout, random flips), 1 epoch: one plain process
  # (1 and 3 threads) = -np 2 = -np 4 = nnc run under -np 2; resumed across
  # N; 3 processes refused.
  cat >small.nn <<'NN'
data d = idx("fashion-mnist") {
  scale = 1/255
  augment = [hflip(p = 0.5)]
}
model c(x: f32[1, 28, 28]) -> f32[10] {
  h = relu(batchnorm(conv2d(x, 8, kernel = 3, padding = 1)))
  h = maxpool(h, 4)
  h = dropout(flatten(h), 0.25)
  h = relu(batchnorm(dense(h, 32)))
  return dense(h, 10)
}
train {
  model = c   data = d.train   validate = d.test   loss = cross_entropy
  optimizer = adam(lr = 1e-3)   metrics = [loss, accuracy]
  batch = 32   epochs = 1   seed = 7
}
NN
  run build "$NNC" small.nn -o small && expect_rc build 0
  common=(--data gen --threads 1 --quiet --no-log)
  run one ./small "${common[@]}" --checkpoint one.st && expect_rc one 0
  run three ./small "${common[@]}" --threads 3 --checkpoint three.st && expect_rc three 0 &&
    same one.st three.st
  for n in 2 4; do
    run np$n mpi $n ./small "${common[@]}" --checkpoint np$n.st && expect_rc np$n 0 &&
      same one.st np$n.st
    diff <(grep '^test:' one.out) <(grep '^test:' np$n.out) >/dev/null ||
      fail "np$n prints other results than one process"
  done
  run jit mpi 2 "$NNC" run small.nn "${common[@]}" --checkpoint jit.st && expect_rc jit 0 &&
    same one.st jit.st
  # 1 epoch under -np 2, on to 2 epochs under -np 4 and in one process =
  # 2 epochs in one process
  run straight ./small "${common[@]}" --epochs 2 --checkpoint straight.st && expect_rc straight 0
  run r4 mpi 4 ./small "${common[@]}" --epochs 2 --resume np2.st --checkpoint r4.st &&
    expect_rc r4 0 && same straight.st r4.st
  run r1 ./small "${common[@]}" --epochs 2 --resume np2.st --checkpoint r1.st &&
    expect_rc r1 0 && same straight.st r1.st
  run np3 mpi 3 ./small "${common[@]}" --no-checkpoint
  expect_rc np3 1 && expect_grep np3.err "3 processes cannot share a batch of 32 with batch norm"
  # examples/fashion_cnn.nn (batch norm, dropout, flips): -np 2 = one process
  run build "$NNC" "$EX/fashion_cnn.nn" -o cnn && expect_rc build 0
  run plain ./cnn "${common[@]}" --checkpoint plain.st && expect_rc plain 0
  run cnp2 mpi 2 ./cnn "${common[@]}" --checkpoint cnp2.st && expect_rc cnp2 0 &&
    same plain.st cnp2.st
fi

if want resume; then
  begin resume
  [ -x mlp ] || { run build "$NNC" "$EX/fashion_mlp.nn" -o mlp && expect_rc build 0; }
  common=(--data gen --threads 1 --quiet --no-log)
  run straight mpi 2 ./mlp "${common[@]}" --epochs 2 --checkpoint straight.st &&
    expect_rc straight 0
  run first mpi 2 ./mlp "${common[@]}" --epochs 1 --checkpoint first.st && expect_rc first 0
  run np4 mpi 4 ./mlp "${common[@]}" --epochs 2 --resume first.st --checkpoint np4.st &&
    expect_rc np4 0 && same straight.st np4.st
  run one ./mlp "${common[@]}" --epochs 2 --data-parallel --resume first.st --checkpoint one.st &&
    expect_rc one 0 && same straight.st one.st
fi

if want errors; then
  begin errors
  [ -x lin ] || { run build "$NNC" "$EX/linear_regression.nn" -o lin && expect_rc build 0; }
  run np3 mpi 3 ./lin --quiet --threads 1 --no-checkpoint
  expect_rc np3 1 && expect_grep np3.err "3 processes cannot share the 4 micro-batches"
  [ "$(grep -c 'error' np3.err)" = 1 ] || fail "np3: not one message (rank 0 alone prints)"
  # Rank 1 alone reads a file that does not exist.
  run data "${MPIRUN_ENV[@]}" "$MPIRUN" --oversubscribe -np 1 ./lin --quiet --threads 1 --no-checkpoint : \
    -np 1 ./lin --quiet --threads 1 --no-checkpoint --data nope.csv
  expect_rc data 1 && expect_grep data.err "rank 1: data file 'nope.csv' not found"
  run folder mpi 2 ./lin --quiet --threads 1 --checkpoint no/such/folder.st
  expect_rc folder 1 && expect_grep folder.err "cannot write into folder"
fi

if want kill; then
  begin kill
  [ -x mlp ] || { run build "$NNC" "$EX/fashion_mlp.nn" -o mlp && expect_rc build 0; }
  "${MPIRUN_ENV[@]}" "$MPIRUN" --oversubscribe -np 2 ./mlp --data gen --epochs 1000 --threads 1 --quiet --no-log \
    --no-checkpoint >kill.out 2>kill.err &
  job=$!
  victim=""
  for _ in $(seq 100); do # the ranks' processes, children of mpirun
    victim=$(pgrep -P "$job" -x mlp | tail -1)
    [ -n "$victim" ] && break
    sleep 0.1
  done
  sleep 2
  if [ -z "$victim" ]; then
    fail "no rank process found"
    kill "$job" 2>/dev/null
  else
    kill -9 "$victim"
    t0=$(date +%s)
    rc=0
    for _ in $(seq 300); do kill -0 "$job" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$job" 2>/dev/null; then
      fail "mpirun still runs 30 s after a rank was killed"
      kill -9 "$job"
    fi
    wait "$job"
    rc=$?
    echo "  mpirun ended $(($(date +%s) - t0)) s after the kill, status $rc"
    [ "$rc" != 0 ] || fail "status 0 after a rank was killed"
    [ -z "$(pgrep -P "$job" -x mlp)" ] || fail "a rank outlived mpirun"
    expect_grep kill.err "exited on signal 9"
  fi
fi

exit $FAILED
