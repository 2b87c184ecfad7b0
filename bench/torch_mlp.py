#!/usr/bin/python3
"""PyTorch peer for bench/mlp.sh: the benchmark MLP (784-256-256-10, ReLU,
cross-entropy, Adam lr 1e-3, batch 64) trained on Fashion-MNIST, in
PyTorch's fastest settings on this machine (DESIGN.md, reference figures):
one torch thread, OpenBLAS's own threads, flush-denormal on.

Prints one line per epoch and a final line
  RESULT framework=pytorch samples_per_s=... test_acc=... start_to_first_step_s=...
Peak memory is measured by the caller (/usr/bin/time -v)."""
import argparse
import gzip
import os
import time

T0 = time.perf_counter()
import numpy as np  # noqa: E402
import torch  # noqa: E402


def load_idx(path):
    with gzip.open(path, "rb") as f:
        data = f.read()
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="/usr/share/datasets/fashion-mnist")
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--seed", type=int, default=42)
    args = ap.parse_args()

    torch.set_num_threads(1)
    torch.set_flush_denormal(True)
    torch.manual_seed(args.seed)
    d = args.data
    xtr = torch.from_numpy(load_idx(f"{d}/train-images-idx3-ubyte.gz").reshape(-1, 784).astype(np.float32) / 255)
    ytr = torch.from_numpy(load_idx(f"{d}/train-labels-idx1-ubyte.gz").astype(np.int64))
    xte = torch.from_numpy(load_idx(f"{d}/t10k-images-idx3-ubyte.gz").reshape(-1, 784).astype(np.float32) / 255)
    yte = torch.from_numpy(load_idx(f"{d}/t10k-labels-idx1-ubyte.gz").astype(np.int64))

    model = torch.nn.Sequential(
        torch.nn.Linear(784, 256), torch.nn.ReLU(),
        torch.nn.Linear(256, 256), torch.nn.ReLU(),
        torch.nn.Linear(256, 10))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    lossf = torch.nn.CrossEntropyLoss()
    n = xtr.shape[0] // args.batch * args.batch
    first_step = None
    train_s = 0.0
    for epoch in range(args.epochs):
        perm = torch.randperm(xtr.shape[0])
        t = time.perf_counter()
        for i in range(0, n, args.batch):
            idx = perm[i:i + args.batch]
            opt.zero_grad(set_to_none=True)
            loss = lossf(model(xtr[idx]), ytr[idx])
            loss.backward()
            opt.step()
            if first_step is None:
                first_step = time.perf_counter() - T0
        dt = time.perf_counter() - t
        train_s += dt
        with torch.no_grad():
            acc = (model(xte).argmax(1) == yte).float().mean().item()
        print(f"epoch {epoch + 1}: {n / dt:.0f} samples/s, test acc {acc:.4f}", flush=True)
    print(f"RESULT framework=pytorch samples_per_s={n * args.epochs / train_s:.0f} "
          f"test_acc={acc:.4f} start_to_first_step_s={first_step:.3f} "
          f"threads=torch:1,openblas:{os.environ.get('OPENBLAS_NUM_THREADS', 'default')}")


if __name__ == "__main__":
    main()
