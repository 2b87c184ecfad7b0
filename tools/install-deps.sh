#!/bin/sh
# Installs what nnc needs on Debian bookworm (see docs/dependencies.md for why
# each package is there). Runs apt-get as root, through sudo when not root.
# clang-19 compiles the deployed C in the tests, python3-onnx and python3-opencv
# check the ONNX export (--emit=onnx); with --fuzz also its
# sanitizer/libFuzzer runtimes, for the fuzz targets (cmake -DNNC_FUZZ=ON,
# docs/fuzzing.md; CI builds them). Open MPI is optional for building (data-
# parallel training, docs/distributed.md) but installed so CI tests it.
# libdnnl-dev (oneDNN's headers; its library comes with python3-torch) only
# builds the benchmark peer bench/onednn_conv; nnc never links it.
set -e
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO=sudo
PKGS="build-essential cmake pkg-config flex bison llvm-19-dev zlib1g-dev libdeflate-dev libcmocka-dev
      libprotobuf-c-dev protobuf-c-compiler
      dataset-fashion-mnist python3-numpy python3-torch libopenblas0-pthread libdnnl-dev clang-19
      python3-onnx python3-opencv libopenmpi-dev openmpi-bin"
[ "${1:-}" = --fuzz ] && PKGS="$PKGS libclang-rt-19-dev"
missing=""
for p in $PKGS; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
  $SUDO apt-get update -q
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q $missing
fi
