#!/usr/bin/python3
"""PyTorch peer for bench/compare.sh: the same model as examples/fashion_mlp.nn
(--model mlp: 784-256-256-10, ReLU, each pixel standardised) or
examples/fashion_cnn.nn (--model cnn:
conv 32 3x3 pad 1, batch norm, ReLU, max pool 2, conv 64, batch norm, ReLU,
max pool 2, dropout 0.25, dense 128, ReLU, dense 10; random horizontal flips
with p = 0.5), cross-entropy, Adam lr 1e-3, batch 64, trained on
Fashion-MNIST in PyTorch's fastest settings on this machine (DESIGN.md,
reference figures): one torch thread, OpenBLAS's own threads (the MLP) or
OPENBLAS_NUM_THREADS=1 and two torch threads for oneDNN's convolutions (the
CNN; the caller sets the environment), flush-denormal on.

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
    ap.add_argument("--model", choices=["mlp", "cnn"], default="mlp")
    ap.add_argument("--threads", type=int, default=1, help="torch.set_num_threads")
    ap.add_argument("--bf16", action="store_true",
                    help="forward and loss under torch.autocast('cpu', dtype=torch.bfloat16)")
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)
    torch.manual_seed(args.seed)
    d = args.data
    xtr = torch.from_numpy(load_idx(f"{d}/train-images-idx3-ubyte.gz").reshape(-1, 784).astype(np.float32) / 255)
    ytr = torch.from_numpy(load_idx(f"{d}/train-labels-idx1-ubyte.gz").astype(np.int64))
    xte = torch.from_numpy(load_idx(f"{d}/t10k-images-idx3-ubyte.gz").reshape(-1, 784).astype(np.float32) / 255)
    yte = torch.from_numpy(load_idx(f"{d}/t10k-labels-idx1-ubyte.gz").astype(np.int64))

    if args.model == "mlp":  # standardize = true: per pixel, the training set's
        # mean and population std (a constant pixel keeps std 1), as nnc's runtime;
        # in double, 10,000 rows at a time to keep peak memory down
        def rows():
            return (xtr[i:i + 10000].double() for i in range(0, xtr.shape[0], 10000))
        mean = sum(r.sum(0) for r in rows()) / xtr.shape[0]
        std = (sum(((r - mean) ** 2).sum(0) for r in rows()) / xtr.shape[0]).sqrt()
        std = torch.where(std > 0, std, torch.ones_like(std))
        mean, std = mean.float(), std.float()
        xtr.sub_(mean).div_(std)  # in place: no second copy of the data
        xte.sub_(mean).div_(std)

    nn = torch.nn
    if args.model == "mlp":
        model = nn.Sequential(
            nn.Linear(784, 256), nn.ReLU(),
            nn.Linear(256, 256), nn.ReLU(),
            nn.Linear(256, 10))
    else:
        xtr, xte = xtr.reshape(-1, 1, 28, 28), xte.reshape(-1, 1, 28, 28)
        model = nn.Sequential(
            nn.Conv2d(1, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(), nn.Dropout(0.25),
            nn.Linear(3136, 128), nn.ReLU(),
            nn.Linear(128, 10))
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
            x = xtr[idx]
            if args.model == "cnn":  # horizontal flips, p = 0.5 per image
                flip = torch.rand(x.shape[0]) < 0.5
                x = torch.where(flip[:, None, None, None], x.flip(-1), x)
            opt.zero_grad(set_to_none=True)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.bf16):
                loss = lossf(model(x), ytr[idx])
            loss.backward()
            opt.step()
            if first_step is None:
                first_step = time.perf_counter() - T0
        dt = time.perf_counter() - t
        train_s += dt
        model.eval()
        with torch.no_grad():
            acc = (model(xte).argmax(1) == yte).float().mean().item()
        model.train()
        print(f"epoch {epoch + 1}: {n / dt:.0f} samples/s, test acc {acc:.4f}", flush=True)
    print(f"RESULT framework=pytorch samples_per_s={n * args.epochs / train_s:.0f} "
          f"test_acc={acc:.4f} start_to_first_step_s={first_step:.3f} "
          f"model={args.model} bf16={int(args.bf16)} threads=torch:{args.threads},"
          f"openblas:{os.environ.get('OPENBLAS_NUM_THREADS', 'default')}")


if __name__ == "__main__":
    main()
