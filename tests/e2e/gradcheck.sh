#!/bin/bash
# gradcheck.sh NNC FILE EXPECT: runs `NNC gradcheck FILE` and requires exit
# status EXPECT (or, with EXPECT = usage, checks the command line's errors): 0 with a last line "gradcheck: ok" and every tensor "ok";
# 1 with "gradcheck: FAILED" and the tensor named by $FAILS (if set) marked
# FAILED. Exit 77 (skipped) for a Fashion-MNIST example when the data set
# is not installed.
nnc=$1 file=$2 expect=$3
if [ "$expect" = usage ]; then # command-line mistakes: exit 2; a glob matching nothing: 1
  "$nnc" gradcheck --bogus "$file" 2>/dev/null
  [ $? = 2 ] || { echo "FAIL: --bogus"; exit 1; }
  "$nnc" gradcheck 2>/dev/null
  [ $? = 2 ] || { echo "FAIL: no file"; exit 1; }
  "$nnc" gradcheck "$file" --batch 0 2>/dev/null
  [ $? = 2 ] || { echo "FAIL: --batch 0"; exit 1; }
  msg=$("$nnc" gradcheck "$file" --tensors 'nothing*' 2>&1)
  [ $? = 1 ] && echo "$msg" | grep -q "no trainable tensor matches nothing\*" ||
    { echo "FAIL: --tensors matching nothing: $msg"; exit 1; }
  echo "passed"
  exit 0
fi
if grep -q 'idx("fashion-mnist")' "$file" && [ ! -d /usr/share/datasets/fashion-mnist ] &&
  [ ! -d "$(dirname "$file")/fashion-mnist" ]; then
  echo "skipped: no Fashion-MNIST"
  exit 77
fi
out=$("$nnc" gradcheck "$file" 2>&1)
status=$?
echo "$out"
fail() {
  echo "FAIL: $*"
  exit 1
}
[ "$status" = "$expect" ] || fail "exit status $status, expected $expect"
lines=$(echo "$out" | grep -c ' f32 .* finite diff\. ')
[ "$lines" -gt 0 ] || fail "no line per tensor"
if [ "$expect" = 0 ]; then
  [ "$(echo "$out" | tail -n 1)" = "gradcheck: ok" ] || fail "no 'gradcheck: ok'"
  [ "$(echo "$out" | grep -c ' finite diff\. .* ok$')" = "$lines" ] || fail "a tensor is not ok"
else
  [ "$(echo "$out" | tail -n 1)" = "gradcheck: FAILED" ] || fail "no 'gradcheck: FAILED'"
  [ -z "$FAILS" ] || echo "$out" | grep -q "^$FAILS .*FAILED$" || fail "$FAILS not FAILED"
fi
echo "passed"
