"""Trains a small model with DistributedDataParallel on CPU, on "gloo" or "oxccl".

    torchrun --nproc-per-node 3 python/examples/train_ddp.py --backend oxccl --steps 20
    torchrun --nproc-per-node 3 python/examples/train_ddp.py --backend gloo --steps 20

--model cnn: a ResNet-style CNN on CIFAR-shaped images (3x32x32, 10 classes);
--model transformer: a small GPT-style language model on token sequences.
The data is synthetic, generated from --seed (each rank its own shard), so nothing is
downloaded and both backends see the same numbers: their losses agree to rounding.

Each step prints rank 0's loss and its time:
- comm_ms: the gradient all-reduces, each bucket's from its launch (DDP's communication
  hook) to its completion, added up; this includes waiting for the slowest rank to launch
  the same bucket (their backward passes drift apart, more so on a loaded machine);
- comm_mean_ms: comm_ms averaged over the ranks (rank 0's alone swings with whether rank 0
  happened to be the slowest rank of the step; gathered after the step, out of its time);
- xfer_ms: the same from the last rank's launch of each bucket to this rank's completion
  (the ranks' launch times are gathered after the step, out of its time; one host only,
  where every process reads the same monotonic clock): the collective's own time;
- compute_ms: the rest of the step (forward, backward, optimizer): step_ms - comm_ms.
  DDP overlaps the all-reduces with the backward pass, so this is the step's time not spent
  waiting on a bucket's all-reduce only when the overlap is small.
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


def gather_step(launches, comm, world):
    """Each bucket's latest launch time over the ranks (DDP launches buckets in the same order
    on every rank), and the ranks' mean comm time, gathered with one all_gather outside the
    step's timing."""
    mine = torch.zeros(MAX_BUCKETS + 1, dtype=torch.float64)
    n = min(len(launches), MAX_BUCKETS)
    mine[:n] = torch.tensor([t0 for t0, _ in launches[:n]], dtype=torch.float64)
    mine[MAX_BUCKETS] = comm
    every = [torch.zeros_like(mine) for _ in range(world)]
    dist.all_gather(every, mine)
    every = torch.stack(every)
    return every[:, :n].max(0).values.tolist(), every[:, MAX_BUCKETS].mean().item()


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
    comm_s = []
    launches = []  # (launch, completion) of each bucket this step, perf_counter seconds

    def timed_allreduce(_state, bucket):
        """DDP's default all-reduce hook (average the bucket), timed."""
        t0 = time.perf_counter()
        grad = bucket.buffer().div_(world)
        fut = dist.all_reduce(grad, async_op=True).get_future()

        def done(f):
            t1 = time.perf_counter()
            comm_s.append(t1 - t0)
            launches.append((t0, t1))
            return f.value()[0]

        return fut.then(done)

    model.register_comm_hook(None, timed_allreduce)
    opt = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9)
    rows = []
    for step in range(args.steps):
        comm_s.clear()
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
        comm = sum(comm_s)
        last, comm_mean = gather_step(launches, comm, world)
        xfer = sum(max(done - t, 0.0) for t, done in zip(last, (d for _, d in launches)))
        row = {"step": step, "loss": loss.item() * args.accum, "step_ms": step_s * 1e3,
               "comm_ms": comm * 1e3, "comm_mean_ms": comm_mean * 1e3, "xfer_ms": xfer * 1e3,
               "compute_ms": max(step_s - comm, 0.0) * 1e3}
        rows.append(row)
        if rank == 0:
            print(f"step {step:3d}  loss {row['loss']:.8f}  step_ms {row['step_ms']:8.2f}  "
                  f"comm_ms {row['comm_ms']:8.2f}  comm_mean_ms {row['comm_mean_ms']:8.2f}  xfer_ms {row['xfer_ms']:8.2f}  "
                  f"compute_ms {row['compute_ms']:8.2f}", flush=True)

    timed = rows[args.warmup:] or rows
    keys = ("step_ms", "comm_ms", "comm_mean_ms", "xfer_ms", "compute_ms")
    summary = {k: statistics.median(r[k] for r in timed) for k in keys}
    if rank == 0:
        print(f"{args.backend} {args.model} {world} ranks: median step_ms {summary['step_ms']:.2f}  "
              f"comm_ms {summary['comm_ms']:.2f}  comm_mean_ms {summary['comm_mean_ms']:.2f}  xfer_ms {summary['xfer_ms']:.2f}  "
              f"compute_ms {summary['compute_ms']:.2f}", flush=True)
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
