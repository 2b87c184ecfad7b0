"""safetensors_interop.py: the NumPy side of test_rt_safetensors_interop.

Run by the C test program with Debian's /usr/bin/python3:
  safetensors_interop.py write PATH   write a safetensors file by hand
                                      (struct + json + ndarray.tobytes), the
                                      way the reference implementation lays it
                                      out: u64 header length, JSON header
                                      padded with spaces to 8 bytes, data
  safetensors_interop.py check PATH   parse a file nnc wrote with NumPy only
                                      and check every value and metadata key
Exit status 0 on success; a message and status 1 otherwise.
"""
import json
import struct
import sys

import numpy as np


def expected_numpy_tensors():
    # Names are sorted like the reference writer does; one f64, one scalar.
    return {
        "enc.b": np.array([0.5, -1.25, 3.0, 1e-3], dtype="<f8"),
        "enc.scale": np.array(2.5, dtype="<f4"),
        "enc.w": (np.arange(12, dtype="<f4") * 0.5 - 1.0).reshape(3, 4),
    }


def write(path):
    tensors = expected_numpy_tensors()
    header, data, offset = {"__metadata__": {"format": "pt"}}, b"", 0
    for name in sorted(tensors):
        a = np.asarray(tensors[name], order="C")  # (ascontiguousarray makes 0-d 1-d)
        raw = a.tobytes()
        header[name] = {
            "dtype": {"<f4": "F32", "<f8": "F64"}[a.dtype.str],
            "shape": list(a.shape),
            "data_offsets": [offset, offset + len(raw)],
        }
        data += raw
        offset += len(raw)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text + data)


def read(path):
    with open(path, "rb") as f:
        blob = f.read()
    (n,) = struct.unpack("<Q", blob[:8])
    header = json.loads(blob[8 : 8 + n])
    meta = header.pop("__metadata__", {})
    data = blob[8 + n :]
    out = {}
    for name, info in header.items():
        dtype = {"F32": "<f4", "F64": "<f8"}[info["dtype"]]
        b, e = info["data_offsets"]
        out[name] = np.frombuffer(data[b:e], dtype=dtype).reshape(info["shape"])
    return out, meta


def check(path):
    tensors, meta = read(path)
    # What test_safetensors_interop.c saved: w[i] = i / 4 - 3, b = -i,
    # opt.w.m = 0.125 everywhere.
    want = {
        "net.w": (np.arange(6, dtype="<f4") / 4 - 3).reshape(2, 3),
        "net.b": -np.arange(3, dtype="<f4"),
        "opt.net.w.m": np.full((2, 3), 0.125, dtype="<f4"),
    }
    if sorted(tensors) != sorted(want):
        raise SystemExit(f"tensors {sorted(tensors)}, expected {sorted(want)}")
    for name, a in want.items():
        got = tensors[name]
        if got.dtype != np.float32 or got.shape != a.shape or not np.array_equal(got, a):
            raise SystemExit(f"{name}: got {got!r}, expected {a!r}")
    expect_meta = {
        "format": "nnc-checkpoint/1",
        "model_hash": "interop",
        "step": "120",
        "epoch": "5",
        "seed": "9",
    }
    for key, value in expect_meta.items():
        if meta.get(key) != value:
            raise SystemExit(f"metadata {key}: {meta.get(key)!r}, expected {value!r}")
    rng = meta["rng_shuffle"].split()
    if len(rng) != 4 or int(rng[1], 16) != 0xDEADBEEF:
        raise SystemExit(f"rng_shuffle {meta['rng_shuffle']!r}")
    print(f"numpy read {len(tensors)} tensors and {len(meta)} metadata keys from {path}")


if __name__ == "__main__":
    {"write": write, "check": check}[sys.argv[1]](sys.argv[2])
