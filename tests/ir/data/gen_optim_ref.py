#!/usr/bin/python3
"""gen_optim_ref.py: PyTorch reference numbers for tests/ir/test_optim.c.

Runs torch.optim (Debian's python3-torch 1.13: use /usr/bin/python3) in
float64 on the tiny problem the C test builds as graph IR:

    W: [2,3] (a weight), b: [3] (a bias), A, T: [2,3], c: [3] constants
    loss = sum(A * (W - T)^2) + sum(c * tanh(b))

and prints, per case, the parameter values (W then b, row-major) after 3
optimizer steps; per schedule case, the learning rate used by each of the
first 6 steps (scheduler.step() after every optimizer step). Output format,
one case per line:  <case> <v1> <v2> ...

    /usr/bin/python3 tests/ir/data/gen_optim_ref.py > tests/ir/data/optim_ref.txt
"""
import torch

torch.set_default_dtype(torch.float64)

W0 = [[0.5, -0.3, 0.8], [-1.2, 0.1, 0.4]]
B0 = [0.2, -0.5, 0.3]
A = torch.tensor([[1.0, 2.0, 0.5], [1.5, 0.3, 3.0]])
T = torch.tensor([[0.1, 0.2, -0.4], [0.6, -0.1, 0.9]])
C = torch.tensor([1.0, -2.0, 0.5])
STEPS = 3


def loss_of(W, b):
    return (A * (W - T) ** 2).sum() + (C * torch.tanh(b)).sum()


def run(make_opt, l1=0.0, l2=0.0, clip_norm=0.0, clip_value=0.0):
    W = torch.tensor(W0, requires_grad=True)
    b = torch.tensor(B0, requires_grad=True)
    opt = make_opt([W, b])
    for _ in range(STEPS):
        opt.zero_grad()
        loss = loss_of(W, b)
        # penalties on weights (rank >= 2) only, as nnc does
        loss = loss + l1 * W.abs().sum() + l2 / 2 * (W ** 2).sum()
        loss.backward()
        if clip_norm:
            torch.nn.utils.clip_grad_norm_([W, b], clip_norm)
        if clip_value:
            torch.nn.utils.clip_grad_value_([W, b], clip_value)
        opt.step()
    return W.detach().flatten().tolist() + b.detach().tolist()


O = torch.optim
CASES = [
    ("sgd", lambda p: O.SGD(p, lr=0.1), {}),
    ("sgd_wd", lambda p: O.SGD(p, lr=0.1, weight_decay=0.01), {}),
    ("momentum", lambda p: O.SGD(p, lr=0.1, momentum=0.9), {}),
    ("nesterov_wd", lambda p: O.SGD(p, lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.01), {}),
    ("adam", lambda p: O.Adam(p, lr=0.1), {}),
    ("adam_wd", lambda p: O.Adam(p, lr=0.1, weight_decay=0.01), {}),
    ("adamw", lambda p: O.AdamW(p, lr=0.1, weight_decay=0.1), {}),
    ("rmsprop", lambda p: O.RMSprop(p, lr=0.01), {}),
    ("rmsprop_momentum", lambda p: O.RMSprop(p, lr=0.01, momentum=0.9), {}),
    ("adagrad", lambda p: O.Adagrad(p, lr=0.1), {}),
    ("sgd_clip_norm", lambda p: O.SGD(p, lr=0.1), {"clip_norm": 1.0}),
    ("sgd_clip_value", lambda p: O.SGD(p, lr=0.1), {"clip_value": 0.5}),
    ("sgd_l1_l2", lambda p: O.SGD(p, lr=0.1), {"l1": 0.05, "l2": 0.1}),
]

S = O.lr_scheduler
SCHEDULES = [
    ("sched_step", lambda o: S.StepLR(o, step_size=2, gamma=0.5)),
    ("sched_multistep", lambda o: S.MultiStepLR(o, milestones=[2, 3, 5], gamma=0.1)),
    ("sched_exponential", lambda o: S.ExponentialLR(o, gamma=0.9)),
    ("sched_cosine", lambda o: S.CosineAnnealingLR(o, T_max=4, eta_min=0.01)),
    ("sched_warmup_step", lambda o: S.SequentialLR(
        o, [S.LinearLR(o, start_factor=0.1, total_iters=2), S.StepLR(o, step_size=2, gamma=0.5)],
        milestones=[2])),
    ("sched_warmup_cosine", lambda o: S.SequentialLR(
        o, [S.LinearLR(o, start_factor=0.1, total_iters=2),
            S.CosineAnnealingLR(o, T_max=4, eta_min=0.01)], milestones=[2])),
]


def lrs(make_sched, n=6):
    p = torch.zeros(1, requires_grad=True)
    opt = O.SGD([p], lr=0.1)
    sched = make_sched(opt)
    out = []
    for _ in range(n):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return out


def main():
    for name, make, kw in CASES:
        print(name, " ".join("%.17g" % v for v in run(make, **kw)))
    for name, make in SCHEDULES:
        print(name, " ".join("%.17g" % v for v in lrs(make)))


if __name__ == "__main__":
    main()
