#!/usr/bin/python3
"""PyTorch's inference peer for bench/deploy.sh: the models of
examples/fashion_mlp.nn and examples/fashion_cnn.nn (as bench/torch_peer.py
builds them) in eval mode under torch.no_grad(), on the Fashion-MNIST test
images already scaled (and, for the MLP, standardised): PyTorch gets its
input prepared for free, the deployed code prepares its own.

Measures batch-1 latency (one image per call, --samples of them) and
batch-64 throughput (the whole test set) for each thread count of
--threads, and prints one line per setting and a final line with the
fastest:
  RESULT framework=pytorch model=mlp us_per_sample_b1=... samples_per_s_b64=...
The weights are random: the speed of these models does not depend on them."""
import argparse
import time

import numpy as np
import torch

from torch_peer import load_idx  # the IDX reader of the training peer


def model_of(name):
    nn = torch.nn
    if name == "mlp":
        return nn.Sequential(nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(),
                             nn.Linear(256, 10))
    return nn.Sequential(
        nn.Conv2d(1, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Dropout(0.25), nn.Linear(3136, 128), nn.ReLU(), nn.Linear(128, 10))


def best_of(repeat, fn):
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="/usr/share/datasets/fashion-mnist")
    ap.add_argument("--model", choices=["mlp", "cnn"], default="mlp")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--samples", type=int, default=2000, help="batch-1 calls timed")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    torch.set_flush_denormal(True)
    torch.manual_seed(1)
    x = torch.from_numpy(load_idx(f"{args.data}/t10k-images-idx3-ubyte.gz").astype(np.float32) / 255)
    x = x.reshape(-1, 784) if args.model == "mlp" else x.reshape(-1, 1, 28, 28)
    model = model_of(args.model).eval()
    best = (float("inf"), 0.0)
    with torch.no_grad():
        for threads in [int(t) for t in args.threads.split(",")]:
            torch.set_num_threads(threads)
            model(x[:64])  # warm up

            def one_by_one():
                for i in range(args.samples):
                    model(x[i:i + 1])

            def batches():
                for i in range(0, x.shape[0], 64):
                    model(x[i:i + 64])

            us_b1 = 1e6 * best_of(args.repeat, one_by_one) / args.samples
            sps_b64 = x.shape[0] / best_of(args.repeat, batches)
            print(f"pytorch {args.model} threads {threads}: batch 1 {us_b1:.1f} us per sample, "
                  f"batch 64 {sps_b64:.0f} samples/s", flush=True)
            best = (min(best[0], us_b1), max(best[1], sps_b64))
    print(f"RESULT framework=pytorch model={args.model} us_per_sample_b1={best[0]:.2f} "
          f"samples_per_s_b64={best[1]:.0f} torch={torch.__version__}")


if __name__ == "__main__":
    main()
