#!/usr/bin/env bash
# e2e_cli.sh NNC E2E_TOOL SOURCE_DIR [SANITIZE]: the `nnc` command line end
# to end (SANITIZE=1: a -DNNC_SANITIZE=ON build).
#
# Each section trains something real and asserts values, not only exit codes:
#   linreg     examples/linear_regression.nn recovers w = 2, b = 1 (from its checkpoint)
#   logreg     examples/logistic_regression.nn: validation accuracy, loss falls
#   fashion    examples/fashion_mlp.nn, 1 epoch on Fashion-MNIST: nnc run (1 thread)
#              and the -o trainer (all cores) give the same log and result;
#              accuracy >= 0.83; no libLLVM
#   data       the same problem from NPY (f4/i8), NPY (f8/u1) and CSV trains
#              identically, and learns
#   resume     -o trainer: 1 epoch + resume to 3 = 3 epochs straight, bit for bit;
#              --threads 1 = --threads 2
#   kill       SIGKILL the trainer at random moments: the checkpoint always loads
#              and resuming reaches the uninterrupted run's final tensors
#   transfer   examples/fashion_cnn.nn then examples/transfer.nn (on generated
#              IDX data): frozen tensors bit-identical to the CNN's, head trained
#   copyloops  the CNN's im2col kernels as LLVM IR: no gathers or scatters
#   compile    nnc run --compile-only compiles (no data needed), prints the
#              compiled line, exits 0; a bad model still fails
#   cpu        -o trainers for x86-64 (no AVX in them) and x86-64-v3 (no
#              AVX-512) train; an unknown --cpu is refused
#   bf16       a --precision bf16 trainer (vdpbf16ps in it): resume bit for
#              bit, 1 thread = 2 threads, not f32's bits, learns; with the
#              CPU's avx512_bf16 hidden (NNC_CPU_DISABLE) the trainer and
#              nnc run name it and exit 1; wrong --precision, --cpu x86-64-v4
#   deploy     examples/fashion_mlp.nn, 1 epoch on Fashion-MNIST, emitted as C
#              (gcc and clang, -std=c99 -pedantic -Werror), as C with
#              --extern-weights and as an object: each parity test passes;
#              examples/deploy/classify.c on the raw IDX test images gives
#              nnc run's test accuracy, the C's logits are within 1e-4 of the
#              object's (which are nnc's evaluation bit for bit), two threads
#              with a workspace each agree, the C under AddressSanitizer with
#              a workspace of exactly WORKSPACE_SIZE bytes; the header is C++;
#              errors
#   deploy_cnn examples/fashion_cnn.nn, tests/e2e/data/bn_relu.nn (batch
#              norm after ReLU, standardised images) and ops_mix.nn (exp, log,
#              tanh, erf, sigmoid, softmax, layernorm, pools, a residual) on
#              generated IDX data: the same, at batch 1 and 4
#   onnx       --emit=onnx of examples/fashion_mlp.nn (1 epoch on Fashion-MNIST)
#              and, on generated IDX data, of fashion_cnn.nn, bn_relu.nn (each
#              with batch norm as BatchNormalization and with --fold-bn) and
#              ops_mix.nn: onnx.checker passes; OpenCV's DNN module loads the
#              MLP and the CNNs and reproduces nnc's logits (the object's,
#              which are nnc's evaluation bit for bit) within 1e-4
#              (tests/e2e/onnx_check.py); errors
#   int8       --quantize int8: examples/fashion_mlp.nn (1 epoch on Fashion-MNIST)
#              as C and as an object: the int8 test accuracy nnc prints is
#              within 1 point of the float one and is what classify.c gets;
#              the C (gcc and clang) and the object give the same logits bit
#              for bit; parity tests; --keep-float; errors. On generated
#              data: fashion_cnn.nn, bn_relu.nn, ops_mix.nn at batch 1, 3 and 4
#              (the CNN's convolutions store bytes through a requantising
#              epilogue, and its C is the object bit for bit)
#   errors     exit status and message of a bad .nn, a missing data file, a
#              truncated IDX file, a wrong --batch, a non-finite loss (and the
#              checkpoint before it still loads)
#   workflow   a CSV regression and classifier as a Keras user runs them:
#              --epochs stretches cosine(), the validation split is evaluated
#              by default, resume (more epochs, after early stopping, nothing
#              left), nnc eval and predict equal nnc run's test results,
#              nnc summary of fashion_mlp, and the errors of common mistakes
#
# Runs use --threads 1 unless threads are the point: the pool spins while
# waiting, so several multi-threaded trainers on few cores (ctest -j) crawl.
# E2E_ONLY="kill resume" runs only those sections; E2E_KEEP=1 keeps the
# temporary folder. Exit 0: all passed; 1: a failure (printed); 77: skipped.
set -u

NNC=$(realpath "$1")
TOOL=$(realpath "$2")
SRC=$(realpath "$3")
EX=$SRC/examples
DATA=$SRC/tests/e2e/data
SANITIZE=${4:-0}
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1}

TMP=$(mktemp -d "${TMPDIR:-/tmp}/nnc_e2e.XXXXXX")
if [ -z "${E2E_KEEP:-}" ]; then trap 'rm -rf "$TMP"' EXIT; else echo "keeping $TMP"; fi
cd "$TMP" || exit 1

FAILED=0
SECTION=""
SECTIONS=0 # sections run
SKIPPED=0  # of which skipped
fail() {
  echo "FAIL [$SECTION]: $*" >&2
  FAILED=1
}
# run NAME CMD...: runs CMD with stdout/stderr in NAME.out/NAME.err; its status in $RC.
run() {
  local name=$1
  shift
  "$@" >"$name.out" 2>"$name.err"
  RC=$?
}
expect_rc() { # expect_rc NAME WANT: the last run's status
  if [ "$RC" != "$2" ]; then
    fail "$1: exit status $RC, expected $2"
    sed 's/^/    | /' "$1.err" >&2
    return 1
  fi
}
expect_grep() { # expect_grep FILE PATTERN (fixed string)
  if ! grep -qF -- "$2" "$1"; then
    fail "$1 lacks '$2'; it has:"
    sed 's/^/    | /' "$1" >&2
    return 1
  fi
}
# check "DESCRIPTION" AWK_CONDITION VAR=VALUE...: a numeric assertion.
check() {
  local what=$1 cond=$2
  shift 2
  local args=() kv
  for kv in "$@"; do args+=(-v "$kv"); done
  if awk "${args[@]}" "BEGIN { exit !($cond) }"; then
    echo "  ok: $what ($*)"
  else
    fail "$what: ($cond) is false for $*"
  fi
}
# result_field FILE KEY: a field of the RESULT line.
result_field() { sed -n "s/^RESULT .*[ ]$2=\([^ ]*\).*/\1/p" "$1"; }
# log_col FILE COLUMN: a column of a CSV metrics log's epoch rows, by name.
log_col() {
  awk -F, -v col="$2" 'NR == 1 { for (i = 1; i <= NF; i++) if ($i == col) c = i; next }
                       $1 == "epoch" { print $c }' "$1"
}
# The training columns of a log: everything but throughput and wall time.
log_training() {
  awk -F, 'NR == 1 { for (i = 1; i <= NF; i++) if ($i != "samples_per_s" && $i != "wall_s") keep[i] = 1 }
           { line = ""; for (i = 1; i <= NF; i++) if (i in keep) line = line $i ","; print line }' "$1"
}
want() { [ -z "${E2E_ONLY:-}" ] || [[ " $E2E_ONLY " == *" $1 "* ]]; }
now() { date +%s.%N; }
begin() {
  SECTION=$1
  SECTIONS=$((SECTIONS + 1))
  T0=$(now)
  echo "== $1"
}
end() { awk -v a="$T0" -v b="$(now)" -v s="$SECTION" 'BEGIN { printf "   (%s: %.1f s)\n", s, b - a }'; }

# ---- linear regression: w = 2, b = 1 -------------------------------------
if want linreg; then
  begin linreg
  run lin "$NNC" run "$EX/linear_regression.nn" --checkpoint lin.safetensors --threads 1 --quiet
  if expect_rc lin 0; then
    w=$("$TOOL" get lin.safetensors linreg.w)
    b=$("$TOOL" get lin.safetensors linreg.b)
    check "w recovered" "w - 2 < 0.05 && 2 - w < 0.05" w="$w"
    check "b recovered" "b - 1 < 0.05 && 1 - b < 0.05" b="$b"
    check "50 epochs of 8 steps" "step == 400" step="$("$TOOL" meta lin.safetensors step)"
    # nnc show lists the same values (6 significant digits) and the position.
    run show "$NNC" show lin.safetensors 'linreg.*'
    if expect_rc show 0; then
      expect_grep show.out "epoch 50, step 400, seed 1"
      expect_grep show.out "$(printf 'F32  [1, 1]                      1  = %.6g' "$w")"
    fi
    run show_none "$NNC" show lin.safetensors 'cnn.*'
    expect_rc show_none 1 && expect_grep show_none.err "no tensor matches 'cnn.*'"
    run show_bad "$NNC" show "$EX/linear_regression.nn"
    expect_rc show_bad 1 && expect_grep show_bad.err "linear_regression.nn: byte 0:"
  fi
  end
fi

# ---- logistic regression ---------------------------------------------------
if want logreg; then
  begin logreg
  run logreg "$NNC" run "$EX/logistic_regression.nn" --log logreg.csv --threads 1 --quiet
  if expect_rc logreg 0; then
    first=$(log_col logreg.csv loss | head -1)
    last=$(log_col logreg.csv loss | tail -1)
    vacc=$(log_col logreg.csv val_accuracy | tail -1)
    tacc=$(log_col logreg.csv accuracy | tail -1)
    echo "  logistic regression: train loss $first -> $last, train acc $tacc, validation acc $vacc"
    check "30 epochs logged" "n == 30" n="$(log_col logreg.csv loss | wc -l)"
    check "loss falls" "last < 0.5 * first" first="$first" last="$last"
    check "validation accuracy" "acc >= 0.95" acc="$vacc"
    check "training accuracy" "acc >= 0.93" acc="$tacc"
    [ -s logreg.svg ] || fail "no logreg.svg next to the log"
  fi
  end
fi

# ---- Fashion-MNIST MLP: nnc run and -o train agree -------------------------
if want fashion; then
  begin fashion
  if [ ! -d /usr/share/datasets/fashion-mnist ] && [ ! -d "$EX/fashion-mnist" ]; then
    echo "  skipped: no Fashion-MNIST (tools/install-deps.sh fetches it)"
    SKIPPED=$((SKIPPED + 1))
  else
    run build "$NNC" "$EX/fashion_mlp.nn" -o "$TMP/train_mlp"
    if expect_rc build 0; then
      if ldd "$TMP/train_mlp" | grep -qi llvm; then fail "the trainer links LLVM: $(ldd "$TMP/train_mlp" | grep -i llvm)"; fi
      run help "$TMP/train_mlp" --help
      expect_rc help 0 && expect_grep help.out "--epochs"
      run mlp_a "$TMP/train_mlp" --epochs 1 --log a.csv --report --quiet
      run mlp_b "$NNC" run "$EX/fashion_mlp.nn" --epochs 1 --log b.csv --checkpoint b.safetensors --threads 1 --report --quiet
      if expect_rc mlp_a 0 && expect_rc mlp_b 0; then
        acc_a=$(result_field mlp_a.out test_acc)
        acc_b=$(result_field mlp_b.out test_acc)
        loss_a=$(result_field mlp_a.out test_loss)
        loss_b=$(result_field mlp_b.out test_loss)
        echo "  fashion_mlp 1 epoch: ./train acc $acc_a loss $loss_a; nnc run acc $acc_b loss $loss_b"
        [ -n "$acc_a" ] && [ "$acc_a" = "$acc_b" ] && [ "$loss_a" = "$loss_b" ] ||
          fail "test results differ: ./train (all threads) $acc_a/$loss_a, nnc run --threads 1 $acc_b/$loss_b"
        if ! cmp -s <(log_training a.csv) <(log_training b.csv); then
          fail "logs differ between ./train (all threads) and nnc run --threads 1:"
          diff <(log_training a.csv) <(log_training b.csv) | sed 's/^/    | /' >&2
        fi
        check "Fashion-MNIST MLP, 1 epoch" "acc >= 0.83" acc="$acc_b"
        check "one epoch of 937 steps" "s == 937" s="$(log_col a.csv step)"
        # nnc eval of the checkpoint prints nnc run's test line; predict's
        # classes are the columns of eval's confusion matrix.
        run mlp_ev "$NNC" eval "$EX/fashion_mlp.nn" --weights b.safetensors --threads 1
        run mlp_pr "$NNC" predict "$EX/fashion_mlp.nn" --weights b.safetensors -o b_pred.csv --threads 1
        if expect_rc mlp_ev 0 && expect_rc mlp_pr 0; then
          [ "$(grep '^test:' mlp_b.out)" = "$(grep '^test:' mlp_ev.out)" ] ||
            fail "eval '$(grep '^test:' mlp_ev.out)' differs from run '$(grep '^test:' mlp_b.out)'"
          cols=$(awk '/^confusion/ { m = 1; next } /^accuracy per class/ { m = 0 }
                      m && m++ > 1 { for (i = 2; i <= NF; i++) c[i - 2] += $i }
                      END { for (j = 0; j < 10; j++) printf "%d ", c[j] }' mlp_ev.out)
          preds=$(awk -F, 'NR > 1 { c[$1]++ } END { for (j = 0; j < 10; j++) printf "%d ", c[j] }' b_pred.csv)
          [ "$cols" = "$preds" ] || fail "predicted classes $preds differ from the confusion matrix's columns $cols"
          check "10000 predictions" "n == 10000" n="$(($(wc -l <b_pred.csv) - 1))"
        fi
      fi
    fi
  fi
  end
fi

# ---- CSV and NPY data --------------------------------------------------------
if want data; then
  begin data
  mkdir -p data && cp "$DATA/npy_clf.nn" "$DATA/csv_clf.nn" data/
  "$TOOL" npy data 1024 8 3 1 || fail "e2e_tool npy"
  run npy "$NNC" run data/npy_clf.nn --log npy.csv --threads 1 --report --quiet
  run npy64 "$NNC" run data/npy_clf.nn --data data/x64.npy,data/yu8.npy --log npy64.csv --threads 1 --report --quiet
  run csv "$NNC" run data/csv_clf.nn --log csv.csv --threads 1 --report --quiet
  if expect_rc npy 0 && expect_rc npy64 0 && expect_rc csv 0; then
    first=$(log_col npy.csv loss | head -1)
    last=$(log_col npy.csv loss | tail -1)
    acc=$(result_field npy.out test_acc)
    echo "  npy: loss $first -> $last, test accuracy $acc"
    check "NPY data: loss falls" "last < 0.3 * first" first="$first" last="$last"
    check "NPY data: test accuracy" "acc >= 0.9" acc="$acc"
    for other in npy64 csv; do
      cmp -s <(log_training npy.csv) <(log_training $other.csv) ||
        fail "training on $other differs from training on the <f4 .npy files (same values)"
      [ "$(result_field $other.out test_loss)" = "$(result_field npy.out test_loss)" ] ||
        fail "test loss on $other differs from the <f4 .npy files"
    done
  fi
  end
fi

# ---- checkpoint and resume through the -o trainer --------------------------
mk_ckpt_model() { # the trainer of ckpt_mlp.nn with its data, in ck/
  [ -x ck/train ] && return 0
  mkdir -p ck && cp "$DATA/ckpt_mlp.nn" ck/ && "$TOOL" npy ck 2048 32 4 2 || fail "e2e_tool npy"
  run ckbuild "$NNC" ck/ckpt_mlp.nn -o ck/train
  expect_rc ckbuild 0
}
if want resume; then
  begin resume
  if mk_ckpt_model; then
    run straight ck/train --epochs 3 --checkpoint c1.safetensors --threads 1 --report --quiet
    run part1 ck/train --epochs 1 --checkpoint c2.safetensors --threads 1 --quiet
    run part2 ck/train --resume c2.safetensors --epochs 3 --checkpoint c2.safetensors --threads 1 --report --quiet
    if expect_rc straight 0 && expect_rc part1 0 && expect_rc part2 0; then
      "$TOOL" same c1.safetensors c2.safetensors >same.out 2>&1 || { fail "resumed run differs:"; cat same.out >&2; }
      "$TOOL" differ c1.safetensors c2.safetensors 'net.dense*' >/dev/null 2>&1 &&
        fail "e2e_tool differ finds a difference between identical files"
      for k in step epoch seed rng_shuffle; do
        [ "$("$TOOL" meta c1.safetensors $k)" = "$("$TOOL" meta c2.safetensors $k)" ] ||
          fail "metadata $k: $("$TOOL" meta c1.safetensors $k) vs $("$TOOL" meta c2.safetensors $k)"
      done
      [ "$(result_field straight.out test_loss)" = "$(result_field part2.out test_loss)" ] ||
        fail "test loss after resuming differs"
      check "3 epochs of 64 steps" "s == 192" s="$("$TOOL" meta c2.safetensors step)"
      check "the model learns" "acc >= 0.85" acc="$(result_field part2.out test_acc)"
      # Results do not depend on the number of threads.
      run t1 ck/train --epochs 1 --checkpoint t1.safetensors --threads 1 --quiet
      run t2 ck/train --epochs 1 --checkpoint t2.safetensors --threads 2 --quiet
      expect_rc t1 0 && expect_rc t2 0 &&
        { "$TOOL" same t1.safetensors t2.safetensors >/dev/null 2>same.err || fail "1 and 2 threads differ: $(cat same.err)"; }
    fi
  fi
  end
fi

# ---- SIGKILL during training and checkpointing -----------------------------
if want kill; then
  begin kill
  if mk_ckpt_model; then
    E=24
    t0=$(now)
    run kref ck/train --epochs $E --checkpoint kref.safetensors --threads 1 --quiet
    T=$(awk -v a="$t0" -v b="$(now)" 'BEGIN { print b - a }')
    if expect_rc kref 0; then
      echo "  uninterrupted $E epochs: $T s"
      # Kill at random moments until 4 kills have landed mid-run (after the
      # first checkpoint, before the end), at most 10 tries: timing on a
      # loaded machine varies.
      mid=0
      tries=0
      while [ $mid -lt 4 ] && [ $tries -lt 10 ]; do
        tries=$((tries + 1))
        d=$(awk -v t="$T" -v r="$RANDOM" 'BEGIN { printf "%.3f", t * (0.1 + 0.85 * r / 32768) }')
        rm -f k.safetensors k.safetensors.tmp.*
        ck/train --epochs $E --checkpoint k.safetensors --threads 1 --quiet >/dev/null 2>&1 &
        pid=$!
        sleep "$d"
        kill -KILL $pid 2>/dev/null
        wait $pid 2>/dev/null
        if [ ! -e k.safetensors ]; then
          echo "  killed after $d s: before the first checkpoint"
          continue
        fi
        ep=$("$TOOL" meta k.safetensors epoch) || { fail "killed after $d s: the checkpoint does not parse"; continue; }
        [ "$ep" -lt "$E" ] && mid=$((mid + 1))
        # Killed after the last checkpoint: nothing is left to resume (an
        # error), and the checkpoint is already the finished run's.
        if [ "$ep" -ge "$E" ]; then
          "$TOOL" same kref.safetensors k.safetensors >same.out 2>&1 ||
            { fail "killed after $d s at the end: the checkpoint differs"; head -5 same.out >&2; }
          continue
        fi
        run kres ck/train --resume k.safetensors --epochs $E --checkpoint k.safetensors --threads 1 --quiet
        if expect_rc kres 0; then
          if "$TOOL" same kref.safetensors k.safetensors >same.out 2>&1; then
            echo "  killed after $d s at epoch $ep; resumed to $E: identical"
          else
            fail "killed after $d s at epoch $ep: resumed run differs"
            head -5 same.out >&2
          fi
        fi
      done
      check "kills that left a checkpoint mid-run" "mid >= 2" mid=$mid
    fi
  fi
  end
fi

# ---- transfer learning: fashion_cnn.nn -> transfer.nn ---------------------
if want transfer; then
  begin transfer
  # The examples as they are, on a small generated IDX set named like the
  # real one (the .nn files look for "fashion-mnist" next to themselves).
  mkdir -p tl/fashion-mnist && cp "$EX/fashion_cnn.nn" "$EX/transfer.nn" tl/
  "$TOOL" idx tl/fashion-mnist 512 128 || fail "e2e_tool idx"
  (cd tl && "$NNC" run fashion_cnn.nn --epochs 1 --threads 1 --quiet >../cnn.out 2>../cnn.err)
  RC=$?
  if expect_rc cnn 0 && [ -s tl/fashion_cnn.safetensors ]; then
    (cd tl && "$NNC" run transfer.nn --epochs 1 --checkpoint tr1.safetensors --threads 1 --report >../tr1.out 2>../tr1.err)
    RC=$?
    if expect_rc tr1 0; then
      cat tr1.out tr1.err >tr1.all
      expect_grep tr1.all "loaded 12 tensors from"
      (cd tl && "$NNC" run transfer.nn --resume tr1.safetensors --epochs 2 --checkpoint tr2.safetensors --threads 1 --report >../tr2.out 2>../tr2.err)
      RC=$?
      if expect_rc tr2 0; then
        for ck in tr1 tr2; do
          "$TOOL" same tl/fashion_cnn.safetensors tl/$ck.safetensors --prefix transfer. 'cnn.conv*' 'cnn.bn*' >same.out 2>&1 ||
            { fail "frozen layers in $ck differ from the CNN's checkpoint:"; cat same.out >&2; }
        done
        "$TOOL" differ tl/tr1.safetensors tl/tr2.safetensors 'transfer.head*' >differ.out 2>&1 ||
          { fail "the head did not train in epoch 2:"; cat differ.out >&2; }
        grep -q '"adam\.[mv]\.transfer\.cnn' tl/tr2.safetensors && fail "frozen tensors have optimizer state"
        check "transfer: test accuracy (4 generated classes)" "acc >= 0.9" acc="$(result_field tr2.out test_acc)"
      fi
    fi
  fi
  end
fi

# ---- copy loops stay loops: im2col's rows vectorised along the row ----------
# (llvm.c keeps a copy loop nested in another loop a loop; fully unrolled,
# the vectoriser ran across rows with gathers and scatters: 2,000 lines of
# IR for the CNN's first im2col, a quarter of the compile time.)
if want copyloops; then
  begin copyloops
  run cnn_ll "$NNC" --emit=llvm "$EX/fashion_cnn.nn" -o cnn.ll
  if expect_rc cnn_ll 0; then
    awk '/^define .*im2col\(/ { f = 1 } f { print } f && /^}/ { f = 0 }' cnn.ll >im2col.ll
    n=$(grep -c '^define' im2col.ll)
    echo "  $n im2col kernels, $(wc -l <im2col.ll) lines of LLVM IR"
    if [ "$n" -eq 0 ]; then
      echo "  skipped: the CNN has no im2col kernel"
    elif grep -qE 'masked\.(scatter|gather)|x ptr>' im2col.ll; then
      fail "an im2col kernel gathers or scatters: $(grep -m1 -E 'masked\.(scatter|gather)|x ptr>' im2col.ll)"
    fi
  fi
  end
fi

# ---- trainers for other CPUs (--cpu) -----------------------------------------
if want cpu; then
  begin cpu
  flags=$(grep -m1 '^flags' /proc/cpuinfo)
  levels="x86-64"
  [[ " $flags " == *" avx2 "* && " $flags " == *" fma "* ]] && levels="$levels x86-64-v3"
  for lv in $levels; do
    run "build_$lv" "$NNC" "$EX/linear_regression.nn" -o "train_$lv" --cpu "$lv"
    expect_rc "build_$lv" 0 || continue
    if command -v objdump >/dev/null; then
      # Functions of the runtime named *_avx512 run only where cpuid says
      # AVX-512 is there (runtime/dataset.c); the rest must not need it.
      objdump -d "train_$lv" | awk '/^[0-9a-f]+ <.*>:$/ { skip = $2 ~ /_avx512>:$/ } !skip' >"train_$lv.s"
      if [ "$lv" = x86-64 ] && grep -qE 'ymm|zmm|vfmadd' "train_$lv.s"; then
        fail "the x86-64 trainer uses AVX: $(grep -m1 -E 'ymm|zmm|vfmadd' "train_$lv.s")"
      fi
      if [ "$lv" = x86-64-v3 ] && grep -q zmm "train_$lv.s"; then
        fail "the x86-64-v3 trainer uses AVX-512: $(grep -m1 zmm "train_$lv.s")"
      fi
    fi
    run "lin_$lv" "./train_$lv" --checkpoint "lin_$lv.safetensors" --threads 1 --quiet
    if expect_rc "lin_$lv" 0; then
      w=$("$TOOL" get "lin_$lv.safetensors" linreg.w)
      check "$lv trainer recovers w" "w - 2 < 0.05 && 2 - w < 0.05" w="$w"
    fi
  done
  run cpu_bad "$NNC" "$EX/linear_regression.nn" -o t --cpu pentium
  expect_rc cpu_bad 2 && expect_grep cpu_bad.err "unknown --cpu 'pentium'"
  [ ! -e t ] || fail "a trainer was written for an unknown --cpu"
  run cpu_ir "$NNC" --emit=ir "$EX/linear_regression.nn" --cpu x86-64
  expect_rc cpu_ir 2 && expect_grep cpu_ir.err "takes no -o, --batch or --cpu"
  end
fi

# ---- precision = bf16 -------------------------------------------------------
if want bf16; then
  begin bf16
  if ! grep -qw avx512_bf16 /proc/cpuinfo; then
    echo "  skipped: this CPU has no avx512_bf16"
    SKIPPED=$((SKIPPED + 1))
  elif mk_ckpt_model; then
    run bfbuild "$NNC" ck/ckpt_mlp.nn --precision bf16 -o ck/train_bf16
    if expect_rc bfbuild 0; then
      if command -v objdump >/dev/null; then
        objdump -d ck/train_bf16 | grep -q vdpbf16ps || fail "the bf16 trainer has no vdpbf16ps"
      fi
      run bstraight ck/train_bf16 --epochs 3 --checkpoint b1.safetensors --threads 1 --report --quiet
      run bpart1 ck/train_bf16 --epochs 1 --checkpoint b2.safetensors --threads 1 --quiet
      run bpart2 ck/train_bf16 --resume b2.safetensors --epochs 3 --checkpoint b2.safetensors --threads 1 --quiet
      run bthreads ck/train_bf16 --epochs 3 --checkpoint b3.safetensors --threads 2 --quiet
      run bf32 ck/train --epochs 3 --checkpoint f1.safetensors --threads 1 --quiet
      if expect_rc bstraight 0 && expect_rc bpart1 0 && expect_rc bpart2 0 && expect_rc bthreads 0 &&
        expect_rc bf32 0; then
        "$TOOL" same b1.safetensors b2.safetensors >same.out 2>&1 || { fail "bf16: resumed run differs:"; cat same.out >&2; }
        "$TOOL" same b1.safetensors b3.safetensors >same.out 2>&1 || { fail "bf16: 1 and 2 threads differ:"; cat same.out >&2; }
        "$TOOL" same b1.safetensors f1.safetensors >/dev/null 2>&1 && fail "bf16 trains bit for bit like f32"
        check "the bf16 model learns" "acc >= 0.85" acc="$(result_field bstraight.out test_acc)"
      fi
    fi
    # A CPU without AVX512-BF16 (detection forced off): the trainer and nnc run say so.
    run bnocpu env NNC_CPU_DISABLE=avx512_bf16 ck/train_bf16 --threads 1 --quiet
    expect_rc bnocpu 1 && expect_grep bnocpu.err "compiled with precision = bf16, which needs a CPU with AVX512-BF16 (cpuid feature avx512_bf16); this CPU lacks it"
    run bnojit env NNC_CPU_DISABLE=avx512_bf16 "$NNC" run ck/ckpt_mlp.nn --precision bf16 --threads 1 --quiet
    expect_rc bnojit 1 && expect_grep bnojit.err "precision = bf16 needs a CPU with AVX512-BF16 (cpuid feature avx512_bf16)"
    run bwrong ck/train_bf16 --precision f32
    expect_rc bwrong 2 && expect_grep bwrong.err "this program was compiled with precision = bf16"
    run bbad "$NNC" run ck/ckpt_mlp.nn --precision fp16
    expect_rc bbad 2 && expect_grep bbad.err "--precision needs f32 or bf16, got 'fp16'"
    run bv4 "$NNC" ck/ckpt_mlp.nn --precision bf16 --cpu x86-64-v4 -o ck/t_v4
    expect_rc bv4 1 && expect_grep bv4.err "the target CPU 'x86-64-v4' has no avx512bf16"
  fi
  end
fi

# ---- deployment: --emit=c and --emit=obj -------------------------------------
# Compilers for the emitted C: gcc, and clang-19 or clang where present.
deploy_ccs() {
  local c
  echo gcc
  [ -n "${GCC_ONLY:-}" ] && return
  for c in clang-19 clang; do
    if command -v $c >/dev/null; then
      echo $c
      return
    fi
  done
}
STRICT="-std=c99 -O2 -Wall -Wextra -Werror -pedantic"
# deploy_check DIR NAME KIND: compiles DIR/NAME_test.c with DIR/NAME.c (KIND
# c, with each compiler) or DIR/NAME.o (KIND obj) and runs it (extra args:
# the test's arguments).
deploy_check() {
  local dir=$1 name=$2 kind=$3 cc
  shift 3
  for cc in $(deploy_ccs); do
    local obj="$dir/$name.c"
    [ "$kind" = obj ] && obj="$dir/$name.o"
    run "cc_${name}_${kind}_$cc" $cc $STRICT -o "$dir/test_$cc" "$dir/${name}_test.c" "$obj" -lm
    expect_rc "cc_${name}_${kind}_$cc" 0 || continue
    run "t_${name}_${kind}_$cc" "$dir/test_$cc" "$@"
    expect_rc "t_${name}_${kind}_$cc" 0 && expect_grep "t_${name}_${kind}_$cc.out" "(tolerance ${TOL:-0.0001}): ok" &&
      echo "  $kind $name ($cc): $(cat "t_${name}_${kind}_$cc.out")"
    [ "$kind" = obj ] && break # the object does not depend on the compiler
  done
}
# deploy_classify DIR TAG IMAGES LABELS ACC: classify.c with DIR/model.{c,o}
# on an IDX set: nnc run's accuracy ACC, two threads agree; logits to TAG.txt.
deploy_classify() {
  local dir=$1 tag=$2 images=$3 labels=$4 acc=$5 model=$1/model.c
  [ -e "$dir/model.o" ] && model=$dir/model.o
  run "cls_build_$tag" gcc $STRICT -I "$dir" -o "$dir/classify" "$SRC/examples/deploy/classify.c" "$model" -lz -lm -lpthread
  expect_rc "cls_build_$tag" 0 || return 1
  run "cls_$tag" "$dir/classify" "$images" "$labels" --threads 2 --logits "$tag.txt"
  expect_rc "cls_$tag" 0 || return 1
  echo "  $tag: $(head -1 "cls_$tag.out")"
  expect_grep "cls_$tag.out" "2 threads, a workspace each: same outputs"
  local got
  got=$(sed -n 's/^accuracy \([0-9.]*\) .*/\1/p' "cls_$tag.out")
  check "$tag: the accuracy of nnc run" "got - want <= 0.001 && want - got <= 0.001" got="$got" want="$acc"
  # The C under AddressSanitizer, with a workspace of exactly WORKSPACE_SIZE
  # bytes (classify.c allocates no more): no access outside it or the weights.
  if [ "$model" = "$dir/model.c" ]; then
    run "cls_asan_build_$tag" gcc -std=c99 -O1 -g -fsanitize=address,undefined -fno-sanitize-recover=all \
      -I "$dir" -o "$dir/classify_asan" "$SRC/examples/deploy/classify.c" "$model" -lz -lm -lpthread
    expect_rc "cls_asan_build_$tag" 0 || return 1
    run "cls_asan_$tag" "$dir/classify_asan" "$images" "$labels" --logits "${tag}_asan.txt"
    expect_rc "cls_asan_$tag" 0 && cmp -s "$tag.txt" "${tag}_asan.txt" ||
      fail "$tag: the C under AddressSanitizer gives other outputs"
  fi
}
# logits_close A B: the largest |difference| of two logits files is <= 1e-4.
logits_close() {
  local worst
  worst=$(paste -d' ' "$1" "$2" | awk '{ n = NF / 2; for (i = 1; i <= n; i++) { d = $i - $(i + n); if (d < 0) d = -d; if (d > m) m = d } }
                                      END { printf "%g", m + 0 }')
  check "logits of $1 and $2 agree" "worst <= 1e-4" worst="$worst"
}

if want deploy; then
  begin deploy
  FM=/usr/share/datasets/fashion-mnist
  [ -d "$FM" ] || FM=$EX/fashion-mnist
  if [ ! -d "$FM" ]; then
    echo "  skipped: no Fashion-MNIST (tools/install-deps.sh fetches it)"
    SKIPPED=$((SKIPPED + 1))
  else
    run dtrain "$NNC" run "$EX/fashion_mlp.nn" --epochs 1 --checkpoint mlp.safetensors --threads 1 --report --quiet
    if expect_rc dtrain 0; then
      acc=$(result_field dtrain.out test_acc)
      run emit_c "$NNC" "$EX/fashion_mlp.nn" --emit=c -o dc/model --name model --weights mlp.safetensors --emit-test
      run emit_x "$NNC" "$EX/fashion_mlp.nn" --emit=c -o dx/model --name model --weights mlp.safetensors --emit-test --extern-weights
      run emit_o "$NNC" "$EX/fashion_mlp.nn" --emit=obj -o do/model.o --name model --weights mlp.safetensors --emit-test
      if expect_rc emit_c 0 && expect_rc emit_x 0 && expect_rc emit_o 0; then
        expect_grep dc/model.h "#define MODEL_INPUT_SIZE 784 /* floats per sample */"
        expect_grep dc/model.h "#define MODEL_BATCH 1 /* samples per call */"
        expect_grep dx/model.h "int model_predict_with(const void *weights, const float *input"
        size=$(sed -n 's/^#define MODEL_WEIGHTS_SIZE \([0-9]*\).*/\1/p' dx/model.h)
        check "the weights file has MODEL_WEIGHTS_SIZE bytes" "size == bytes && size > 1000000" size="$size" bytes="$(wc -c <dx/model.weights)"
        if nm do/model.o | grep -q ' U '; then fail "the object needs symbols: $(nm do/model.o | grep ' U ' | tr '\n' ' ')"; fi
        [ "$(nm do/model.o | grep -c ' T ')" = 1 ] || fail "the object exports more than model_predict: $(nm do/model.o | grep ' T ')"
        deploy_check dc model c
        deploy_check dx model c dx/model.weights
        deploy_check do model obj
        if command -v g++ >/dev/null; then
          printf '#include "model.h"\nint main() { return model_predict(nullptr, nullptr, nullptr) == 1 ? 0 : 1; }\n' >hdr.cc
          run hdr_c gcc $STRICT -c -o hdr_model.o dc/model.c
          run hdr g++ -std=c++11 -Wall -Werror -I dc -o hdr hdr.cc hdr_model.o
          expect_rc hdr_c 0 && expect_rc hdr 0 && { ./hdr || fail "predict(NULL, ...) does not return 1"; }
        fi
        deploy_classify dc mlp_c "$FM/t10k-images-idx3-ubyte.gz" "$FM/t10k-labels-idx1-ubyte.gz" "$acc"
        deploy_classify do mlp_o "$FM/t10k-images-idx3-ubyte.gz" "$FM/t10k-labels-idx1-ubyte.gz" "$acc"
        logits_close mlp_c.txt mlp_o.txt
      fi
      # Errors: no checkpoint, a checkpoint of another model, a bad prefix.
      run nockpt "$NNC" "$EX/fashion_mlp.nn" --emit=c -o e/model
      expect_rc nockpt 1 && expect_grep nockpt.err "fashion_mlp.nn: error: no weights to deploy"
      run missing "$NNC" "$EX/fashion_mlp.nn" --emit=c -o e/model --weights nothere.safetensors
      expect_rc missing 1 && expect_grep missing.err "cannot read the checkpoint 'nothere.safetensors'"
      run other "$NNC" "$EX/linear_regression.nn" --emit=c -o e/model --weights mlp.safetensors
      expect_rc other 1 && expect_grep other.err "mlp.safetensors:"
      run badname "$NNC" "$EX/fashion_mlp.nn" --emit=c -o e/model --weights mlp.safetensors --name 9lives
      expect_rc badname 2 && expect_grep badname.err "--name '9lives' is not a C identifier"
      [ ! -e e/model.c ] || fail "a failed emission left e/model.c"
    fi
  fi
  end
fi

# ---- deployment of the CNN and of batch norm after ReLU (generated data) ------
if want deploy_cnn; then
  begin deploy_cnn
  mkdir -p dcnn/fashion-mnist && cp "$EX/fashion_cnn.nn" "$DATA/bn_relu.nn" "$DATA/ops_mix.nn" dcnn/
  "$TOOL" idx dcnn/fashion-mnist 512 128 || fail "e2e_tool idx"
  T10K="$TMP/dcnn/fashion-mnist/t10k-images-idx3-ubyte $TMP/dcnn/fashion-mnist/t10k-labels-idx1-ubyte"
  for model in fashion_cnn bn_relu ops_mix; do
    (cd dcnn && "$NNC" run $model.nn --epochs 1 --threads 1 --report --quiet >../tr_$model.out 2>../tr_$model.err)
    RC=$?
    expect_rc tr_$model 0 || continue
    acc=$(result_field tr_$model.out test_acc)
    for b in 1 4; do
      run emit_${model}_$b "$NNC" dcnn/$model.nn --emit=c -o d_${model}_$b/model --name model --emit-test --batch $b
      run emit_${model}_o$b "$NNC" dcnn/$model.nn --emit=obj -o d_${model}_o$b/model.o --name model --emit-test --batch $b
      only=""
      [ $b != 1 ] && only=1 # batch 4: gcc alone (CI time)
      expect_rc emit_${model}_$b 0 && GCC_ONLY=$only deploy_check d_${model}_$b model c
      expect_rc emit_${model}_o$b 0 && deploy_check d_${model}_o$b model obj
    done
    deploy_classify d_${model}_1 ${model}_c $T10K "$acc"
    deploy_classify d_${model}_o1 ${model}_o $T10K "$acc"
    deploy_classify d_${model}_4 ${model}_c4 $T10K "$acc"
    logits_close ${model}_c.txt ${model}_o.txt
    logits_close ${model}_c4.txt ${model}_o.txt
  done
  end
fi

# ---- ONNX export: --emit=onnx ---------------------------------------------------
# onnx_logits NN TAG IMAGES LABELS: nnc's own logits of NN (trained: its
# checkpoint) on an IDX set, through the object and classify.c, to TAG.txt.
onnx_logits() {
  local nn=$1 tag=$2
  run "ox_emit_$tag" "$NNC" "$nn" --emit=obj -o "ox_$tag/model.o" --name model "${@:5}"
  expect_rc "ox_emit_$tag" 0 || return 1
  run "ox_build_$tag" gcc -std=c99 -O2 -I "ox_$tag" -o "ox_$tag/classify" "$SRC/examples/deploy/classify.c" "ox_$tag/model.o" -lz -lm -lpthread
  expect_rc "ox_build_$tag" 0 || return 1
  run "ox_cls_$tag" "ox_$tag/classify" "$3" "$4" --logits "$tag.txt"
  expect_rc "ox_cls_$tag" 0
}
# onnx_check ONNX IMAGES LOGITS [ARGS]: tests/e2e/onnx_check.py
onnx_check() {
  local tag
  tag=$(basename "$1" .onnx)
  run "oc_$tag" /usr/bin/python3 "$SRC/tests/e2e/onnx_check.py" "$@"
  expect_rc "oc_$tag" 0 || { sed 's/^/    | /' "oc_$tag.out" >&2; return 1; }
  sed "s/^onnx_check:/  $tag:/" "oc_$tag.out"
}
if want onnx; then
  begin onnx
  FM=/usr/share/datasets/fashion-mnist
  [ -d "$FM" ] || FM=$EX/fashion-mnist
  if ! /usr/bin/python3 -c 'import onnx, cv2' 2>/dev/null; then
    echo "  skipped: no python3-onnx or python3-opencv (tools/install-deps.sh installs them)"
    SKIPPED=$((SKIPPED + 1))
  else
    if [ -d "$FM" ]; then
      run otrain "$NNC" run "$EX/fashion_mlp.nn" --epochs 1 --checkpoint mlp.safetensors --threads 1 --quiet
      if expect_rc otrain 0; then
        run oemit "$NNC" "$EX/fashion_mlp.nn" --emit=onnx -o mlp.onnx --weights mlp.safetensors
        expect_rc oemit 0 &&
          onnx_logits "$EX/fashion_mlp.nn" mlp "$FM/t10k-images-idx3-ubyte.gz" "$FM/t10k-labels-idx1-ubyte.gz" --weights mlp.safetensors &&
          onnx_check mlp.onnx "$FM/t10k-images-idx3-ubyte.gz" mlp.txt --count 1000
        run obatch "$NNC" "$EX/fashion_mlp.nn" --emit=onnx -o mlp_b8.onnx --weights mlp.safetensors --batch 8
        expect_rc obatch 0 && onnx_check mlp_b8.onnx "$FM/t10k-images-idx3-ubyte.gz" mlp.txt --count 1000
        run obadflag "$NNC" "$EX/fashion_mlp.nn" --emit=c -o e/model --weights mlp.safetensors --fold-bn
        expect_rc obadflag 2 && expect_grep obadflag.err "--fold-bn goes with --emit=onnx"
      fi
    else
      echo "  (no Fashion-MNIST: the MLP part is skipped)"
    fi
    mkdir -p ocnn/fashion-mnist && cp "$EX/fashion_cnn.nn" "$DATA/bn_relu.nn" "$DATA/ops_mix.nn" ocnn/
    "$TOOL" idx ocnn/fashion-mnist 256 64 || fail "e2e_tool idx"
    I="$TMP/ocnn/fashion-mnist/t10k-images-idx3-ubyte"
    L="$TMP/ocnn/fashion-mnist/t10k-labels-idx1-ubyte"
    for model in fashion_cnn bn_relu ops_mix; do
      (cd ocnn && "$NNC" run $model.nn --epochs 1 --threads 1 --quiet >../otr_$model.out 2>../otr_$model.err)
      RC=$?
      expect_rc otr_$model 0 || continue
      run oe_$model "$NNC" ocnn/$model.nn --emit=onnx -o $model.onnx
      run of_$model "$NNC" ocnn/$model.nn --emit=onnx -o ${model}_folded.onnx --fold-bn
      expect_rc oe_$model 0 && expect_rc of_$model 0 || continue
      if [ $model = ops_mix ]; then
        # OpenCV 4.6 cannot broadcast layernorm's [N,1] statistics in Mul:
        # the checker alone (every op of it is exported generically).
        onnx_check $model.onnx "$I" none --checker-only
        continue
      fi
      onnx_logits ocnn/$model.nn $model "$I" "$L" || continue
      onnx_check $model.onnx "$I" $model.txt --count 64
      onnx_check ${model}_folded.onnx "$I" $model.txt --count 64
    done
    expect_grep oc_fashion_cnn.out "BatchNormalization Conv Gemm MaxPool"
    if grep -q BatchNormalization oc_fashion_cnn_folded.out; then fail "--fold-bn left a BatchNormalization in the CNN"; fi
    expect_grep oc_bn_relu_folded.out "BatchNormalization" # after a ReLU: not foldable
  fi
  end
fi

# ---- int8: --quantize int8 ---------------------------------------------------
if want int8; then
  begin int8
  FM=/usr/share/datasets/fashion-mnist
  [ -d "$FM" ] || FM=$EX/fashion-mnist
  if [ -d "$FM" ]; then
    run qtrain "$NNC" run "$EX/fashion_mlp.nn" --epochs 1 --checkpoint mlp.safetensors --threads 1 --quiet
    if expect_rc qtrain 0; then
      run qc "$NNC" "$EX/fashion_mlp.nn" --emit=c -o qc/model --name model --weights mlp.safetensors --quantize int8 --emit-test
      run qo "$NNC" "$EX/fashion_mlp.nn" --emit=obj -o qo/model.o --name model --weights mlp.safetensors --quantize int8 --emit-test
      if expect_rc qc 0 && expect_rc qo 0; then
        echo "  $(cat qc.out)"
        got=$(sed -n 's/^int8: test accuracy \([0-9.]*\) (float \([0-9.]*\),.*/\1 \2/p' qc.out)
        check "int8 within 1 point of float" "f - q <= 0.01" q="${got% *}" f="${got#* }"
        sed -n 's/.*weights \([0-9]*\) -> \([0-9]*\) bytes/\1 \2/p' qc.out >qbytes.txt
        check "int8 weights about 4x smaller" "f >= 3.5 * q" f="$(cut -d' ' -f1 qbytes.txt)" q="$(cut -d' ' -f2 qbytes.txt)"
        cmp -s qc.out qo.out || fail "the C and the object print other accuracies"
        TOL=0.05 deploy_check qc model c
        TOL=0.05 deploy_check qo model obj
        grep -q "largest difference 0 " t_model_obj_gcc.out || fail "the int8 object is not its reference bit for bit"
        if objdump -d qo/model.o | grep -q vpdpbusd; then echo "  ok: the object uses vpdpbusd"; else fail "no vpdpbusd in the int8 object"; fi
        deploy_classify qc qmlp_c "$FM/t10k-images-idx3-ubyte.gz" "$FM/t10k-labels-idx1-ubyte.gz" "${got% *}"
        deploy_classify qo qmlp_o "$FM/t10k-images-idx3-ubyte.gz" "$FM/t10k-labels-idx1-ubyte.gz" "${got% *}"
        run qclang clang-19 $STRICT -I qc -o qc/classify_clang "$SRC/examples/deploy/classify.c" qc/model.c -lz -lm -lpthread
        if expect_rc qclang 0; then
          qc/classify_clang "$FM/t10k-images-idx3-ubyte.gz" "$FM/t10k-labels-idx1-ubyte.gz" --logits qmlp_clang.txt >/dev/null
          cmp -s qmlp_c.txt qmlp_clang.txt || fail "int8 C: gcc and clang give other logits"
        fi
        cmp -s qmlp_c.txt qmlp_o.txt && echo "  ok: int8 C and object logits bit for bit" || fail "int8 C and object logits differ"
      fi
      run qkeep "$NNC" "$EX/fashion_mlp.nn" --emit=c -o qk/model --weights mlp.safetensors --quantize int8 --keep-float 'mlp.dense3' --calibrate 100
      expect_rc qkeep 0 && expect_grep qkeep.out "2 of 3 products int8, calibrated on 100 training images"
      run qv3 "$NNC" "$EX/fashion_mlp.nn" --emit=obj -o qv3/model.o --weights mlp.safetensors --quantize int8 --cpu x86-64-v3
      expect_rc qv3 1 && expect_grep qv3.err "need a target with AVX512-VNNI"
      run qbad "$NNC" "$EX/fashion_mlp.nn" --emit=c -o qb/model --weights mlp.safetensors --quantize int4
      expect_rc qbad 2 && expect_grep qbad.err "the one scheme is int8"
      run qcal "$NNC" "$EX/fashion_mlp.nn" --emit=c -o qb/model --weights mlp.safetensors --calibrate 10
      expect_rc qcal 2 && expect_grep qcal.err "go with --quantize int8"
    fi
  else
    echo "  (no Fashion-MNIST: the MLP part is skipped)"
  fi
  mkdir -p qcnn/fashion-mnist && cp "$EX/fashion_cnn.nn" "$DATA/bn_relu.nn" "$DATA/ops_mix.nn" qcnn/
  "$TOOL" idx qcnn/fashion-mnist 256 64 || fail "e2e_tool idx"
  for model in fashion_cnn bn_relu ops_mix; do
    (cd qcnn && "$NNC" run $model.nn --epochs 1 --threads 1 --quiet >../qtr_$model.out 2>../qtr_$model.err)
    RC=$?
    expect_rc qtr_$model 0 || continue
    # batch > 1: the convolutions' im2col is stored transposed (trans_a), which
    # the object quantises 16 rows at a time; batch 3 leaves rows past the
    # last block of 16 (the CNN's conv2: 3 * 14 * 14 = 588 = 36 * 16 + 12).
    for b in 1 3 4; do
      run qe_${model}_$b "$NNC" qcnn/$model.nn --emit=c -o q_${model}_$b/model --name model --quantize int8 --calibrate 128 --emit-test --batch $b
      run qeo_${model}_$b "$NNC" qcnn/$model.nn --emit=obj -o qo_${model}_$b/model.o --name model --quantize int8 --calibrate 128 --emit-test --batch $b
      expect_rc qe_${model}_$b 0 && TOL=0.05 GCC_ONLY=1 deploy_check q_${model}_$b model c
      expect_rc qeo_${model}_$b 0 && TOL=0.05 deploy_check qo_${model}_$b model obj
      grep -q "largest difference 0 " t_model_obj_gcc.out || fail "$model: the int8 object is not its reference bit for bit"
      # the convolutions' im2col stores their products' input in bytes
      grep -q '((unsigned char \*)b[0-9]*)\[.*_quantize(' q_${model}_$b/model.c ||
        fail "$model batch $b: no kernel stores a product's input quantised"
      # pool1 takes maxima of bytes, conv2's im2col copies bytes
      [ $model != fashion_cnn ] || [ "$(grep -c '(float)((const unsigned char \*)b' q_${model}_$b/model.c)" -ge 2 ] ||
        fail "$model batch $b: no kernel computes on bytes"
      # the convolutions' products store the bytes their batch norm + ReLU
      # stored (a requantising epilogue), and those kernels are not run; with
      # no float kernel left between the products, the C is the object (and
      # nnc's int8 evaluation) bit for bit. bn_relu's batch norm follows its
      # ReLU: not folded.
      if [ $model = fashion_cnn ]; then
        [ "$(grep -c 'unsigned char \*restrict out, unsigned char \*restrict aq' q_${model}_$b/model.c)" = 2 ] ||
          fail "$model batch $b: the convolutions' products do not store bytes"
        ! grep -Eq 'static void eval_k[0-9]+_relu\(' q_${model}_$b/model.c ||
          fail "$model batch $b: a batch norm + ReLU kernel is left"
        grep -q "largest difference 0 " t_model_c_gcc.out || fail "$model batch $b: the int8 C is not its reference bit for bit"
      elif [ $model = bn_relu ]; then
        ! grep -q 'unsigned char \*restrict out, unsigned char \*restrict aq' q_${model}_$b/model.c ||
          fail "$model batch $b: a batch norm after a ReLU folded into a product"
      fi
      # every product int8 at every batch: as many as at batch 1 (the
      # convolutions too), all of them
      n=$(sed -n 's/.* \([0-9]*\) of \([0-9]*\) products int8.*/\1 \2/p' qe_${model}_$b.out)
      [ $b = 1 ] && n1=${n% *}
      check "$model batch $b: all products int8 ($n)" "q == p && q == q1 && q > 0" q="${n% *}" p="${n#* }" q1="$n1"
    done
    echo "  $model: $(cat qe_${model}_1.out)"
  done
  end
fi

# ---- nnc run --compile-only: the whole compile, then stop ---------------------
if want compile; then
  begin compile
  # no data anywhere (csv_clf.nn's x.csv is missing): compiles, loads
  # nothing, exit 0, the "compiled" line; the session's flags are not read
  mkdir -p co && cp "$DATA/csv_clf.nn" co/
  run co "$NNC" run co/csv_clf.nn --compile-only --epochs 0
  expect_rc co 0 && expect_grep co.err "nnc: compiled co/csv_clf.nn in "
  ! grep -q "not found" co.err || fail "--compile-only looked for the data"
  ! grep -q "beside loading the data" co.err || fail "--compile-only's line speaks of data it did not load"
  # NNC_DEBUG=1: the JIT's parts were compiled (their times printed)
  run codbg env NNC_DEBUG=1 "$NNC" run "$EX/fashion_cnn.nn" --compile-only
  expect_rc codbg 0 && expect_grep codbg.err "codegen: part 1: llvm ir" &&
    expect_grep codbg.err "nnc: compiled $EX/fashion_cnn.nn in "
  # a bad model still fails (exit 1), and the help names the flag
  printf 'model m(x: f32[4]) -> f32[2] {\n  return dense(x, 2, activaton = relu)\n}\n' >cobad.nn
  run cobad "$NNC" run cobad.nn --compile-only
  expect_rc cobad 1 && expect_grep cobad.err "unknown argument 'activaton'"
  run cohelp "$NNC" --help
  expect_rc cohelp 0 && expect_grep cohelp.out "--compile-only"
  end
fi

# ---- error paths -------------------------------------------------------------
if want errors; then
  begin errors
  printf 'model m(x: f32[4]) -> f32[2] {\n  h = relu(dense(x, 8, activaton = relu))\n  return dense(h, 2)\n}\n' >bad.nn
  run bad "$NNC" run bad.nn
  expect_rc bad 1 && expect_grep bad.err "bad.nn:2:24: error: unknown argument 'activaton'"

  mkdir -p err && cp "$DATA/csv_clf.nn" err/
  run missing "$NNC" run err/csv_clf.nn
  expect_rc missing 1 && expect_grep missing.err "data file 'x.csv' not found"

  mkdir -p trunc && "$TOOL" idx trunc 64 16 && head -c 5000 trunc/train-images-idx3-ubyte >trunc/cut &&
    mv trunc/cut trunc/train-images-idx3-ubyte
  run trunc "$NNC" run "$EX/fashion_mlp.nn" --data trunc
  expect_rc trunc 1 && expect_grep trunc.err "train-images-idx3-ubyte: byte 5000:"

  if mk_ckpt_model; then
    run batch ck/train --batch 7
    expect_rc batch 2 && expect_grep batch.err "compiled for batch 32"
    run epoch ck/train --epoch 2
    expect_rc epoch 2 && expect_grep epoch.err "did you mean '--epochs'"
  fi

  # SGD with lr 2 diverges on linear regression: inf/NaN in epoch 6. The
  # checkpoint of epoch 5 must stay whole and load (resume to 5 epochs: it
  # loads, then nothing is left to train, exit 1).
  mkdir -p nan/data && cp "$EX/data/linear.csv" nan/data/ &&
    sed 's/sgd(lr = 0.1)/sgd(lr = 2)/' "$EX/linear_regression.nn" >nan/lin.nn
  grep -q 'lr = 2)' nan/lin.nn || fail "could not edit linear_regression.nn's learning rate"
  run nan "$NNC" run nan/lin.nn --checkpoint nan.safetensors --threads 1 --quiet
  if expect_rc nan 1 && expect_grep nan.err "loss became NaN/inf at epoch"; then
    ep=$("$TOOL" meta nan.safetensors epoch) || fail "the last checkpoint before the NaN does not parse"
    nanep=$(sed -n 's/.*NaN\/inf at epoch \([0-9]*\).*/\1/p' nan.err)
    check "the checkpoint is the epoch before the NaN" "ep == nanep - 1 && ep >= 1" ep="$ep" nanep="$nanep"
    run nanres "$NNC" run nan/lin.nn --resume nan.safetensors --epochs "$ep" --threads 1 --quiet
    expect_rc nanres 1 && expect_grep nanres.err "nothing to train: nan.safetensors has done $ep epochs"
  fi
  end
fi

# ---- the user's workflow: schedules, validation, resume, eval, predict ----
# reg_data DIR: y = 2a - b + 0.5c + 1 (+ a little noise) on a fixed LCG.
reg_data() {
  awk -v n=400 'function u() { s = (s * 1103515245 + 12345) % 2147483648; return 2 * s / 2147483648 - 1 }
    BEGIN { s = 7; print "a,b,c,y" > "'"$1"'/reg.csv"; print "a,b,c,y" > "'"$1"'/reg_test.csv"
      for (i = 0; i < n; i++) { a = u(); b = u(); c = u(); y = 2 * a - b + 0.5 * c + 1 + 0.01 * u()
        printf "%.6f,%.6f,%.6f,%.6f\n", a, b, c, y > (i < 320 ? "'"$1"'/reg.csv" : "'"$1"'/reg_test.csv") } }'
}
if want workflow; then
  begin workflow
  mkdir -p wf && cp "$DATA/csv_reg.nn" wf/ && reg_data wf
  # --epochs 10 over a file that says 5: cosine() runs over 10 epochs (lr
  # 0.1 (1 + cos(pi t / 10)) / 2: 0.05 at epoch 6, falling to the end).
  # The validation split is evaluated without 'validate =' (val_loss).
  run wf1 "$NNC" run --quiet wf/csv_reg.nn --epochs 10 --log wf1.csv --threads 1
  if expect_rc wf1 0; then
    check "lr at epoch 6 of 10" "lr > 0.0499 && lr < 0.0501" lr="$(log_col wf1.csv lr | sed -n 6p)"
    log_col wf1.csv lr | awk 'NR > 1 && $1 >= prev { bad = 1 } { prev = $1 } END { exit bad }' ||
      fail "lr does not fall over the 10 epochs: $(log_col wf1.csv lr | tr '\n' ' ')"
    check "validation split evaluated" "n == 10" n="$(log_col wf1.csv val_loss | grep -c .)"
  fi
  # Resume for more epochs stretches the schedule too; it says where it
  # resumed; resuming to the epochs already done is an error.
  run wf2 "$NNC" run wf/csv_reg.nn --checkpoint wf.safetensors --log wf2.csv --threads 1
  run wf3 "$NNC" run wf/csv_reg.nn --resume wf.safetensors --epochs 10 --checkpoint wf.safetensors --log wf2.csv --threads 1
  if expect_rc wf2 0 && expect_rc wf3 0; then
    expect_grep wf3.err "resumed from wf.safetensors: epoch 5 of 10 done (step 80)"
    check "resumed epoch 6 follows the 10-epoch cosine" "lr > 0.0499 && lr < 0.0501" lr="$(log_col wf2.csv lr | sed -n 6p)"
    run wf4 "$NNC" run wf/csv_reg.nn --resume wf.safetensors --epochs 10 --threads 1
    expect_rc wf4 1 && expect_grep wf4.err "nothing to train: wf.safetensors has done 10 epochs and the run is for 10 in total"
    # nnc eval on the checkpoint prints nnc run's test line; predict's
    # outputs give the same mean squared error.
    run ev "$NNC" eval wf/csv_reg.nn --weights wf.safetensors --threads 1
    if expect_rc ev 0; then
      grep '^test:' wf3.out >run_test.txt
      [ -s run_test.txt ] && [ "$(cat run_test.txt)" = "$(cat ev.out)" ] ||
        fail "nnc eval differs from nnc run: '$(cat ev.out)' vs '$(cat run_test.txt)'"
    fi
    run pr "$NNC" predict wf/csv_reg.nn --weights wf.safetensors -o pred.csv --threads 1
    if expect_rc pr 0; then
      mse=$(paste -d, <(tail -n +2 wf/reg_test.csv) <(tail -n +2 pred.csv) |
        awk -F, '{ d = $5 - $4; s += d * d; n++ } END { printf "%.4f", s / n }')
      check "predict's outputs give eval's loss" "p == e" p="$mse" \
        e="$(printf '%.4f' "$(sed -n 's/^test: loss \([0-9.e-]*\).*/\1/p' ev.out)")"
      check "one prediction per test row" "n == 80" n="$(($(wc -l <pred.csv) - 1))"
    fi
  fi
  # Classifier: eval's accuracy equals nnc run's, its confusion matrix
  # holds every sample, predict's classes give the same accuracy.
  mkdir -p wfc && cp "$DATA/csv_clf.nn" wfc/ && "$TOOL" npy wfc 512 8 3 1 >/dev/null || fail "e2e_tool npy"
  run clf "$NNC" run wfc/csv_clf.nn --checkpoint clf.safetensors --threads 1 --quiet
  run clfev "$NNC" eval wfc/csv_clf.nn --weights clf.safetensors --threads 1
  run clfpr "$NNC" predict wfc/csv_clf.nn --weights clf.safetensors -o clf.csv --threads 1
  if expect_rc clf 0 && expect_rc clfev 0 && expect_rc clfpr 0; then
    [ "$(grep '^test:' clf.out)" = "$(grep '^test:' clfev.out)" ] ||
      fail "eval '$(grep '^test:' clfev.out)' differs from run '$(grep '^test:' clf.out)'"
    expect_grep clfev.out "confusion matrix (rows: true class, columns: predicted class):"
    n=$(awk '/^confusion/ { m = 1; next } /^accuracy per class/ { m = 0 } m && m++ > 1 { for (i = 2; i <= NF; i++) s += $i } END { print s }' clfev.out)
    check "the confusion matrix counts every test sample" "n == 128" n="$n"
    acc=$(paste -d, <(awk -F, '{ print $NF }' wfc/tx.csv) <(tail -n +2 clf.csv) |
      awk -F, '{ r += ($1 == $2); n++ } END { printf "%.4f", r / n }')
    check "predict's classes give run's accuracy" "p == r" p="$acc" r="$(sed -n 's/^test: .*accuracy \([0-9.]*\).*/\1/p' clf.out)"
  fi
  # A run that early stopping ended resumes with its patience restarted.
  sed 's/early_stop(patience = 3)/early_stop(patience = 2, min_delta = 1000)/' wf/csv_reg.nn >wf/stop.nn
  run st1 "$NNC" run wf/stop.nn --epochs 20 --checkpoint st.safetensors --threads 1
  run st2 "$NNC" run wf/stop.nn --resume st.safetensors --epochs 20 --checkpoint st.safetensors --threads 1
  if expect_rc st1 0 && expect_rc st2 0; then
    expect_grep st1.out "trained 3 epochs"
    expect_grep st2.err "it had stopped early, so early stopping's patience starts over"
    expect_grep st2.out "trained 2 epochs"
  fi
  # restore_best: no epoch improves by 1000, so the run ends on epoch 1's
  # weights; its test loss is that of a 1-epoch run.
  run rb "$NNC" run wf/stop.nn --epochs 20 --set 'early_stop(patience = 2, min_delta = 1000, restore_best = true)' --no-checkpoint --threads 1
  run rb1 "$NNC" run wf/stop.nn --epochs 1 --no-checkpoint --threads 1
  if expect_rc rb 0 && expect_rc rb1 0; then
    expect_grep rb.err "restored the weights of epoch 1 (restore_best)"
    [ "$(grep '^test:' rb.out)" = "$(grep '^test:' rb1.out)" ] ||
      fail "restore_best: '$(grep '^test:' rb.out)' is not epoch 1's '$(grep '^test:' rb1.out)'"
  fi
  # Command-line overrides: --lr, --set (replacing the file's setting), and
  # --no-checkpoint / --no-log over a file that names both; a -o trainer
  # refuses --lr (it is compiled in) and honours the --set it was built with.
  printf '  checkpoint(path = "ovr.safetensors")\n  log = "ovr.csv"\n}\n' >wf/ovr_tail
  sed '$d' wf/csv_reg.nn | cat - wf/ovr_tail >wf/ovr.nn
  run ovr1 "$NNC" run wf/ovr.nn --no-checkpoint --no-log --threads 1 --quiet
  expect_rc ovr1 0 && { [ ! -e ovr.safetensors ] && [ ! -e ovr.csv ] || fail "--no-checkpoint/--no-log wrote files"; }
  run ovr2 "$NNC" run wf/ovr.nn --lr 0.03 --set epochs=2 --set 'early_stop(patience = 1)' --log ovr2.csv --no-checkpoint --threads 1 --quiet
  if expect_rc ovr2 0; then
    check "--lr: the cosine starts at 0.03" "lr == 0.03" lr="$(log_col ovr2.csv lr | head -1)"
    check "--set epochs=2" "n == 2" n="$(log_col ovr2.csv lr | wc -l)"
  fi
  run ovr3 "$NNC" run wf/ovr.nn --set 'epochz = 2'
  expect_rc ovr3 1 && expect_grep ovr3.err "--set:1:9: error: unknown setting 'epochz' in train block; did you mean 'epochs'?"
  run ovr4 "$NNC" wf/ovr.nn -o ovr_train --set epochs=3
  if expect_rc ovr4 0; then
    run ovr5 ./ovr_train --no-log --no-checkpoint --threads 1 --quiet
    expect_rc ovr5 0 && expect_grep ovr5.out "trained 3 epochs"
    run ovr6 ./ovr_train --lr 0.1
    expect_rc ovr6 2 && expect_grep ovr6.err "--lr changes what is compiled into this program; recompile with it"
  fi
  # nnc summary; located or clear errors for the usual mistakes.
  run sum "$NNC" summary "$EX/fashion_mlp.nn"
  if expect_rc sum 0; then
    expect_grep sum.out "parameters: 269,322 (trainable 269,322, frozen 0)"
    expect_grep sum.out "mlp.dense1                   [256]                     200,960"
    expect_grep sum.out "optimizer state                                   2,154,576 bytes"
  fi
  sed 's/loss      = cross_entropy/loss = mse/' "$EX/fashion_mlp.nn" >wf/idx_mse.nn
  run idxmse "$NNC" check wf/idx_mse.nn
  expect_rc idxmse 1 && expect_grep idxmse.err "idx_mse.nn:24:10: error: mse needs float targets, but 'fashion' is IDX data"
  run npydata "$NNC" run wf/csv_reg.nn --data x.npy,y.npy
  expect_rc npydata 1 && expect_grep npydata.err "this model's data is one CSV file"
  run showcsv "$NNC" show wf/reg.csv
  expect_rc showcsv 1 && expect_grep showcsv.err "reg.csv: byte 0: not a safetensors file"
  NNC_DUMP_AFTER=bogus run dump "$NNC" run wf/csv_reg.nn
  expect_rc dump 1 && expect_grep dump.err "NNC_DUMP_AFTER=bogus names no pass"
  end
fi

if [ "$FAILED" != 0 ]; then
  echo "e2e_cli: FAILED" >&2
  exit 1
fi
if [ "$SKIPPED" = "$SECTIONS" ]; then
  echo "e2e_cli: skipped"
  exit 77
fi
echo "e2e_cli: all passed"
