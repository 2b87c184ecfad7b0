#!/usr/bin/python3
"""torch_ref.py: PyTorch's numbers for tests/e2e/test_e2e_torch.c.

For every case below (a model, an optimizer, penalties, clipping and a
schedule, each written twice: as the case's .nn file beside this script and
as PyTorch code here) it trains 30 steps in float64 from initial weights
that are f32 values, on batches both sides generate from the same integer
recipe (batch() below and batch_value() in the C test), and writes
<case>.ref: the initial weights under nnc's tensor names, the data loss of
every step (PyTorch's loss.item(), before the step's update) and the final
weights. Lines are `name count v1 v2 ...`.

Debian's python3-torch (1.13) lives in /usr/bin/python3:

    cd tests/e2e/torch && /usr/bin/python3 torch_ref.py

The images of the cnn cases are zero outside a 4x4 patch, so after
conv -> batchnorm -> relu many 2x2 pooling windows hold tied maxima:
PyTorch routes such a window's gradient to its first maximum.
"""
import math

import torch
import torch.nn.functional as F

torch.set_default_dtype(torch.float64)
STEPS = 30
MASK = (1 << 64) - 1


def stream(seed):
    """Values k / 2^24, k in [0, 2^24): exact in f32 (the C test's LCG)."""
    state = seed
    while True:
        state = (state * 6364136223846793005 + 1442695040888963407) & MASK
        yield state >> 40


def batch(step, batch_size, shape, classes, patch):
    """Inputs in [-1, 1) and labels of step `step` (0-based)."""
    g = stream(1000003 * (step + 1))
    n = 1
    for d in shape:
        n *= d
    xs, ys = [], []
    for _ in range(batch_size):
        x = [2.0 * next(g) / (1 << 24) - 1.0 for _ in range(n)]
        if patch:  # images [1, H, W]: zero but for the centre 4x4
            h, w = shape[1], shape[2]
            for i in range(n):
                r, c = i // w % h, i % w
                if not (h // 2 - 2 <= r < h // 2 + 2 and w // 2 - 2 <= c < w // 2 + 2):
                    x[i] = 0.0
        xs.append(x)
        ys.append(next(g) % classes)
    return (torch.tensor(xs).reshape(batch_size, *shape), torch.tensor(ys))


class MLP(torch.nn.Module):
    names = ["mlp.dense1.weight", "mlp.dense1.bias", "mlp.dense2.weight", "mlp.dense2.bias"]

    def __init__(self):
        super().__init__()
        self.d1 = torch.nn.Linear(8, 12)
        self.d2 = torch.nn.Linear(12, 3)

    def forward(self, x):
        return self.d2(torch.relu(self.d1(x)))


class CNN(torch.nn.Module):
    names = ["cnn.conv1.weight", "cnn.conv1.bias", "cnn.bn1.gamma", "cnn.bn1.beta",
             "cnn.dense1.weight", "cnn.dense1.bias"]

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 4, 3, padding=1)
        self.bn = torch.nn.BatchNorm2d(4)
        self.d = torch.nn.Linear(64, 3)

    def forward(self, x):
        h = F.max_pool2d(torch.relu(self.bn(self.conv(x))), 2)
        return self.d(torch.flatten(h, 1))


def warmup_cosine(warm, period):
    """nnc's warmup(warm, cosine(period)) per step, as a LambdaLR factor."""
    def f(t):
        after = max(t - warm, 0)
        return (1 + math.cos(math.pi * after / period)) / 2 * min(1.0, t / warm)
    return f


# name: (model, optimizer, l1, l2, clip_norm, clip_value, schedule)
CASES = {
    "sgd_l2": (MLP, lambda p: torch.optim.SGD(p, lr=0.1), 0, 1e-2, 0, 0, None),
    "momentum_clip_norm": (MLP, lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9),
                           0, 0, 0.5, 0, None),
    "nesterov_wd_clip_value": (MLP, lambda p: torch.optim.SGD(
        p, lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-3), 0, 0, 0, 0.05, None),
    "adam_step": (MLP, lambda p: torch.optim.Adam(p, lr=0.01), 0, 0, 0, 0,
                  lambda o: torch.optim.lr_scheduler.StepLR(o, 10, 0.5)),
    "adamw_warmup_cosine": (MLP, lambda p: torch.optim.AdamW(p, lr=0.01, weight_decay=0.05),
                            0, 0, 0, 0,
                            lambda o: torch.optim.lr_scheduler.LambdaLR(o, warmup_cosine(5, 20))),
    "rmsprop_exponential": (MLP, lambda p: torch.optim.RMSprop(p, lr=0.005, momentum=0.5),
                            0, 0, 0, 0.1,
                            lambda o: torch.optim.lr_scheduler.ExponentialLR(o, 0.95)),
    "adagrad_l1": (MLP, lambda p: torch.optim.Adagrad(p, lr=0.05), 1e-3, 0, 0, 0, None),
    "cnn_adam": (CNN, lambda p: torch.optim.Adam(p, lr=0.01), 0, 0, 0, 0, None),
    "cnn_momentum": (CNN, lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9), 0, 0, 0, 0, None),
}


def emit(out, name, t):
    vals = t.detach().reshape(-1).tolist()
    out.write(f"{name} {len(vals)} " + " ".join(f"{v:.17g}" for v in vals) + "\n")


def run(name, case):
    cls, make_opt, l1, l2, clip_norm, clip_value, make_sched = case
    torch.manual_seed(0)
    model = cls()
    for p in model.parameters():  # start from f32 values, train in f64
        p.data = p.data.float().double()
    params = list(model.parameters())
    weights = [p for p in params if p.dim() >= 2]
    opt = make_opt(params)
    sched = make_sched(opt) if make_sched else None
    cnn = cls is CNN
    shape, patch = ((1, 8, 8), True) if cnn else ((8,), False)
    with open(f"{name}.ref", "w") as out:
        out.write(f"# torch_ref.py case {name}: name count values...\n")
        for n, p in zip(cls.names, params):
            emit(out, n, p)
        losses = []
        for s in range(STEPS):
            x, y = batch(s, 8, shape, 3, patch)
            opt.zero_grad()
            loss = F.cross_entropy(model(x), y)
            total = loss
            if l1:
                total = total + l1 * sum(w.abs().sum() for w in weights)
            if l2:
                total = total + l2 / 2 * sum((w * w).sum() for w in weights)
            total.backward()
            if clip_norm:
                torch.nn.utils.clip_grad_norm_(params, clip_norm)
            if clip_value:
                torch.nn.utils.clip_grad_value_(params, clip_value)
            opt.step()
            if sched:
                sched.step()
            losses.append(loss.item())
        emit(out, "losses", torch.tensor(losses))
        for n, p in zip(cls.names, params):
            emit(out, "final." + n, p)


if __name__ == "__main__":
    for name, case in CASES.items():
        run(name, case)
