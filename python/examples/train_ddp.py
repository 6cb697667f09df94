"""Trains a small model with DistributedDataParallel on CPU, on "gloo" or "oxccl".

    torchrun --nproc-per-node 3 python/examples/train_ddp.py --backend oxccl --steps 20
    torchrun --nproc-per-node 3 python/examples/train_ddp.py --backend gloo --steps 20

--model cnn: a ResNet-style CNN on CIFAR-shaped images (3x32x32, 10 classes);
--model transformer: a small GPT-style language model on token sequences.
The data is synthetic, generated from --seed (each rank its own shard), so nothing is
downloaded and both backends see the same numbers: their losses agree to rounding.

Each step prints rank 0's loss and its time split into communication and compute. DDP calls
its communication hook once per gradient bucket when the bucket's gradients are ready, and the
last bucket at the end of the backward pass; the ranks' launch and completion times of every
bucket (one monotonic clock on one host) are gathered after the step, out of its time, and:
- comm_ms: the communication the step waits for beyond compute: from the moment the slowest
  rank has launched its last bucket (every rank's backward is done; nothing is left to hide
  behind) to this rank's completion of its last bucket, averaged over the ranks. Buckets
  that complete while a rank still computes cost nothing here, as they cost the step nothing;
- skew_ms: how long a rank waits for the slowest rank's backward (its last launch to the
  slowest rank's), averaged over the ranks: compute imbalance, not communication, though a
  backend that slowed some ranks' compute would show here and in fwdbwd_ms and step_ms;
- wait_ms: each bucket's time from its launch to its completion, added up, averaged over the
  ranks: what a hook-side timer sees, the skew and the overlapped part included;
- fwdbwd_ms: a rank's step start to its last launch (forward + backward), averaged over ranks;
- compute_ms: step_ms - comm_ms (the skew counts as compute: it is the slowest rank's).
The same hook, clocks and formulas serve every backend.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel as DDP


class Block(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.c1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.b1 = nn.BatchNorm2d(cout)
        self.c2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.b2 = nn.BatchNorm2d(cout)
        self.skip = (
            nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
            if stride != 1 or cin != cout
            else nn.Identity()
        )

    def forward(self, x):
        y = F.relu(self.b1(self.c1(x)))
        return F.relu(self.b2(self.c2(y)) + self.skip(x))


class ResNet(nn.Module):
    """A ResNet-style CNN for 32x32 images: stem, three stages of two residual blocks."""

    def __init__(self, width=32, classes=10):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU())
        layers, cin = [], width
        for i, cout in enumerate([width, 2 * width, 4 * width]):
            layers += [Block(cin, cout, 1 if i == 0 else 2), Block(cout, cout, 1)]
            cin = cout
        self.layers = nn.Sequential(*layers)
        self.fc = nn.Linear(cin, classes)

    def forward(self, x):
        return self.fc(self.layers(self.stem(x)).mean((2, 3)))


class GPT(nn.Module):
    """A small GPT-style decoder: token and position embeddings, pre-norm causal blocks."""

    def __init__(self, vocab=512, seq=64, dim=256, layers=4, heads=4):
        super().__init__()
        self.tok = nn.Embedding(vocab, dim)
        self.pos = nn.Parameter(torch.randn(seq, dim) * 0.02)
        block = nn.TransformerEncoderLayer(dim, heads, 4 * dim, dropout=0.0, batch_first=True, norm_first=True)
        self.blocks = nn.TransformerEncoder(block, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, vocab, bias=False)
        self.register_buffer("mask", nn.Transformer.generate_square_subsequent_mask(seq))

    def forward(self, idx):
        x = self.tok(idx) + self.pos[: idx.size(1)]
        x = self.blocks(x, mask=self.mask[: idx.size(1), : idx.size(1)], is_causal=True)
        return self.head(self.norm(x))


def batch(model, step, rank, args):
    """This rank's synthetic batch of `step`: a function of (seed, step, rank) only."""
    g = torch.Generator().manual_seed(args.seed * 1_000_003 + step * 1009 + rank)
    if model == "cnn":
        y = torch.randint(0, 10, (args.batch,), generator=g)
        # Class-dependent means make the task learnable.
        x = torch.randn(args.batch, 3, 32, 32, generator=g) + y.view(-1, 1, 1, 1) * 0.1
        return x, y
    seq, vocab = 64, 512
    # Sequences of an affine recurrence mod vocab with a random start: predictable.
    start = torch.randint(0, vocab, (args.batch, 1), generator=g)
    mult = torch.randint(1, 8, (args.batch, 1), generator=g)
    t = (start + mult * torch.arange(seq + 1)) % vocab
    return t[:, :-1], t[:, 1:]


def loss_of(model_kind, out, y):
    if model_kind == "cnn":
        return F.cross_entropy(out, y)
    return F.cross_entropy(out.reshape(-1, out.size(-1)), y.reshape(-1))


MAX_BUCKETS = 256
KEYS = ("step_ms", "comm_ms", "skew_ms", "wait_ms", "fwdbwd_ms", "compute_ms")


def gather_step(start, launches, world):
    """The step's communication times, averaged over the ranks (see the module's doc), from
    every rank's step start and buckets' (launch, completion), gathered with one all_gather
    outside the step's timing. DDP launches the buckets in the same order on every rank."""
    n = min(len(launches), MAX_BUCKETS)
    mine = torch.zeros(2 * MAX_BUCKETS + 2, dtype=torch.float64)
    mine[0], mine[1] = start, n
    if n:
        mine[2: 2 + 2 * n] = torch.tensor(sorted(launches)[:n], dtype=torch.float64).flatten()
    every = [torch.zeros_like(mine) for _ in range(world)]
    dist.all_gather(every, mine)
    return step_times(every)


def step_times(every):
    """comm, skew, wait and fwdbwd (seconds, means over the ranks) from each rank's row:
    [step start, bucket count, launch 0, completion 0, launch 1, ...]."""
    n = min(int(e[1]) for e in every)
    if n == 0:
        return {"comm": 0.0, "skew": 0.0, "wait": 0.0, "fwdbwd": 0.0}
    rows = [(e[0].item(), e[2: 2 + 2 * n].view(n, 2)) for e in every]
    ready = max(b[n - 1, 0].item() for _, b in rows)  # the slowest rank's last launch
    comm = [max(b[:, 1].max().item() - ready, 0.0) for _, b in rows]
    skew = [ready - b[n - 1, 0].item() for _, b in rows]
    wait = [(b[:, 1] - b[:, 0]).sum().item() for _, b in rows]
    fwdbwd = [b[n - 1, 0].item() - t0 for t0, b in rows]
    return {k: statistics.mean(v) for k, v in
            (("comm", comm), ("skew", skew), ("wait", wait), ("fwdbwd", fwdbwd))}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", choices=["cnn", "transformer"], default="cnn")
    ap.add_argument("--backend", choices=["gloo", "oxccl"], default="oxccl")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--batch", type=int, default=16, help="samples per rank per micro-batch")
    ap.add_argument("--accum", type=int, default=1,
                    help="micro-batches per step; all but the last run under no_sync()")
    ap.add_argument("--lr", type=float, default=0.05)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--bucket-cap-mb", type=float, default=25.0)
    ap.add_argument("--warmup", type=int, default=2, help="steps left out of the summary")
    ap.add_argument("--json", help="write the per-step losses and times here (rank 0)")
    args = ap.parse_args()

    if args.backend == "oxccl":
        import oxccl.torch  # noqa: F401  (registers the backend)
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    dist.init_process_group(args.backend)
    rank, world = dist.get_rank(), dist.get_world_size()

    torch.manual_seed(args.seed)
    net = ResNet() if args.model == "cnn" else GPT()
    model = DDP(net, bucket_cap_mb=args.bucket_cap_mb)
    launches = []  # (launch, completion) of each bucket this step, perf_counter seconds

    def timed_allreduce(_state, bucket):
        """DDP's default all-reduce hook (average the bucket), timed."""
        t0 = time.perf_counter()
        grad = bucket.buffer().div_(world)
        fut = dist.all_reduce(grad, async_op=True).get_future()

        def done(f):
            launches.append((t0, time.perf_counter()))
            return f.value()[0]

        return fut.then(done)

    model.register_comm_hook(None, timed_allreduce)
    opt = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9)
    rows = []
    for step in range(args.steps):
        launches.clear()
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        for micro in range(args.accum):
            x, y = batch(args.model, step * args.accum + micro, rank, args)
            if micro < args.accum - 1:
                with model.no_sync():
                    loss = loss_of(args.model, model(x), y) / args.accum
                    loss.backward()
            else:
                loss = loss_of(args.model, model(x), y) / args.accum
                loss.backward()
        opt.step()
        step_s = time.perf_counter() - t0
        t = gather_step(t0, launches, world)
        row = {"step": step, "loss": loss.item() * args.accum, "step_ms": step_s * 1e3,
               **{f"{k}_ms": v * 1e3 for k, v in t.items()},
               "compute_ms": max(step_s - t["comm"], 0.0) * 1e3}
        rows.append(row)
        if rank == 0:
            print(f"step {step:3d}  loss {row['loss']:.8f}  "
                  + "  ".join(f"{k} {row[k]:8.2f}" for k in KEYS), flush=True)

    timed = rows[args.warmup:] or rows
    summary = {k: statistics.median(r[k] for r in timed) for k in KEYS}
    if rank == 0:
        print(f"{args.backend} {args.model} {world} ranks: median "
              + "  ".join(f"{k} {summary[k]:.2f}" for k in KEYS), flush=True)
        if args.json:
            with open(args.json, "w") as f:
                json.dump({"args": vars(args), "world": world, "steps": rows, "median": summary}, f)
    # Every rank done before any tears its connections down: gloo aborts a process whose peer
    # closes while it is still shutting its own pairs ("terminate called without an active
    # exception", seen once in CI rehearsal on the gloo side).
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
