#!/usr/bin/python3
"""onnx_check.py MODEL.onnx IMAGES LOGITS [--count N] [--tolerance T] [--checker-only]

Checks an ONNX model written by `nnc --emit=onnx`: Debian's onnx package
validates it (onnx.checker, full check with shape inference, opset 13 or
later), and OpenCV's DNN module loads it and runs it on the first N images
of an IDX file (gzip or raw), fed as the file holds them (pixel values
0..255): every output must be within T of LOGITS, the outputs nnc computed
for the same images (one line per image, as examples/deploy/classify.c
--logits writes them). Exit 0: passed; 1: failed; 77: onnx or cv2 missing.
"""
import argparse
import gzip
import sys

import numpy as np


def read_idx(path):
    with open(path, "rb") as f:
        data = f.read()
    if data[:2] == b"\x1f\x8b":
        data = gzip.decompress(data)
    if data[0] != 0 or data[1] != 0 or data[2] != 8:
        raise ValueError(f"{path}: not an IDX file of unsigned bytes")
    rank = data[3]
    dims = [int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(rank)]
    return np.frombuffer(data, np.uint8, offset=4 + 4 * rank).reshape(dims)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("images")
    ap.add_argument("logits")
    ap.add_argument("--count", type=int, default=200)
    ap.add_argument("--tolerance", type=float, default=1e-4)
    ap.add_argument("--checker-only", action="store_true", help="onnx.checker alone")
    a = ap.parse_args()
    try:
        import cv2
        import onnx
    except ImportError as e:
        print(f"onnx_check: skipped: {e} (tools/install-deps.sh installs python3-onnx and "
              "python3-opencv)")
        return 77

    model = onnx.load(a.model)
    onnx.checker.check_model(model, full_check=True)
    opset = max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
    if opset < 13:
        print(f"onnx_check: opset {opset}, expected 13 or later")
        return 1
    shape = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    batch, sample = shape[0], shape[1:]
    ops = sorted({n.op_type for n in model.graph.node})
    print(f"onnx_check: onnx.checker ok (opset {opset}, input {shape}); ops: {' '.join(ops)}")
    if a.checker_only:
        return 0

    images = read_idx(a.images).astype(np.float32)
    want = np.loadtxt(a.logits, dtype=np.float64, ndmin=2)
    count = min(a.count, len(images), len(want)) // batch * batch
    net = cv2.dnn.readNetFromONNX(a.model)
    worst = 0.0
    for s in range(0, count, batch):
        x = images[s:s + batch].reshape([batch] + sample)
        net.setInput(np.ascontiguousarray(x))
        got = np.asarray(net.forward(), np.float64).reshape(batch, -1)
        diff = np.abs(got - want[s:s + batch])
        worst = max(worst, float(np.nan_to_num(diff, nan=np.inf).max()))
    ok = count > 0 and worst <= a.tolerance
    print(f"onnx_check: OpenCV {cv2.__version__}, {count} images, largest difference {worst:g} "
          f"(tolerance {a.tolerance:g}): {'ok' if ok else 'FAILED'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
