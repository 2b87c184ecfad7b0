#!/bin/bash
# install_check.sh CMAKE BUILD_DIR SOURCE_DIR: `cmake --install` into a
# fresh prefix, then, from another folder with nothing set, the installed
# nnc says it uses the installed runtime, builds a trainer from an example
# that trains, and a C program builds against the runtime with pkg-config.
set -euo pipefail
cmake=$1 build=$2 src=$3
tmp=$(mktemp -d /tmp/nnc-install-XXXXXX)
trap 'rm -rf "$tmp"' EXIT
prefix=$tmp/prefix
"$cmake" --install "$build" --prefix "$prefix" >/dev/null
for f in bin/nnc lib/libnnc_runtime.a lib/libnnc_train_main.a include/nnc/nnc_rt.h \
         lib/pkgconfig/nnc-runtime.pc; do
  [ -f "$prefix/$f" ] || { echo "not installed: $f"; exit 1; }
done
mkdir "$tmp/work"
cp "$src/examples/linear_regression.nn" "$tmp/work/"
cp -r "$src/examples/data" "$tmp/work/"
cd "$tmp/work"
env -i PATH=/usr/bin:/bin HOME="$tmp" "$prefix/bin/nnc" --version > version.txt
grep -q "installed beside this nnc" version.txt || { cat version.txt; exit 1; }
grep -q "$prefix/bin/../lib/libnnc_runtime.a" version.txt || { cat version.txt; exit 1; }
env -i PATH=/usr/bin:/bin HOME="$tmp" "$prefix/bin/nnc" linear_regression.nn -o train
./train --epochs 3 --quiet > out.txt
grep -q "^trained 3 epochs" out.txt || { cat out.txt; exit 1; }
# The runtime as a library: a C program that links it through pkg-config.
cat > use.c <<'C'
#include <nnc_rt.h>
#include <stdio.h>
int main(void) {
  nnc_rt_rng r;
  nnc_rt_rng_seed(&r, 1);
  printf("%d\n", nnc_rt_rng_uniform(&r) < 1.0);
  return 0;
}
C
if command -v pkg-config >/dev/null; then
  flags=$(PKG_CONFIG_PATH="$prefix/lib/pkgconfig" pkg-config --cflags --libs --static nnc-runtime)
  san=""
  [ "${4:-0}" = 1 ] && san="-fsanitize=address,undefined"
  cc $san use.c $flags -o use
  [ "$(./use)" = 1 ]
fi
echo "install check passed"
