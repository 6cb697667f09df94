"""Where a DDP bucket's communication time goes, per bucket and per rank, on one clock.

    torchrun --nproc-per-node 2 bench/results/issue15/ddp_timeline.py --backend oxccl --json t.json

Trains python/examples/train_ddp.py's CNN with the same DDP setup and the same timed hook
(divide the bucket, all_reduce it, `.then(done)`), and records for every bucket of every
step on every rank, in `time.time()` seconds (one clock for all processes of a host):
hook (the hook entered), div (after `div_`), call (after `all_reduce` returned), done (the
`then` callback ran) and, for oxccl, the native call's `Work.timeline()`: started (the
communicator's worker began it), returned (data done), callback (the worker held the GIL).
The step start (after the previous step's gather) and end are recorded too, so the ranks'
compute drift shows. Rank 0 prints the medians over the steps of each segment:

  launch   hook -> call              (div_ + the backend's Python + the native enqueue)
  queue    call -> started           (oxccl: the worker picks the call up)
  peers    own started -> last rank's started (oxccl) / own call -> last rank's call (gloo)
  data     last rank's started -> returned (oxccl) / last call -> done (gloo: data + delivery)
  gil      returned -> callback      (oxccl: the worker waits for the GIL)
  deliver  callback -> done          (oxccl: _Work._complete, set_result, the then-callback)
  comm     hook -> done              (train_ddp.py's comm_ms per bucket)
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import sys
import time

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP

HERE = os.path.dirname(os.path.abspath(__file__))
EXAMPLE = os.path.join(HERE, "..", "..", "..", "python", "examples", "train_ddp.py")
FIELDS = ("hook", "div", "call", "started", "returned", "callback", "done")
MAX_BUCKETS = 8
SEGMENTS = ("launch", "queue", "peers", "data", "gil", "deliver", "comm")


def load_example():
    spec = importlib.util.spec_from_file_location("train_ddp", EXAMPLE)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def segments(b, ranks, r):
    """Segment lengths (ms) of bucket record `b` of rank `r`; `ranks`: every rank's record."""
    nan = float("nan")
    ms = lambda a, z: (z - a) * 1e3  # noqa: E731
    native = b["started"] == b["started"]  # not NaN: oxccl
    if native:
        last = max(x["started"] for x in ranks)
        peers, data = ms(b["started"], last), ms(last, b["returned"])
        gil, deliver = ms(b["returned"], b["callback"]), ms(b["callback"], b["done"])
        queue = ms(b["call"], b["started"])
    else:
        last = max(x["call"] for x in ranks)
        peers, data = ms(b["call"], last), ms(last, b["done"])
        gil = deliver = queue = nan
    return {"launch": ms(b["hook"], b["call"]), "queue": queue, "peers": peers, "data": data,
            "gil": gil, "deliver": deliver, "comm": ms(b["hook"], b["done"])}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--backend", choices=["gloo", "oxccl"], default="oxccl")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--json")
    args = ap.parse_args()
    ex = load_example()
    natives = []
    if args.backend == "oxccl":
        import oxccl.torch  # noqa: F401
        from oxccl.torch import backend as ob

        plain = ob.OxcclBackend.allreduce

        def allreduce(self, tensors, opts):
            w = plain(self, tensors, opts)
            natives.append(w._native)
            return w

        ob.OxcclBackend.allreduce = allreduce
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    dist.init_process_group(args.backend)
    rank, world = dist.get_rank(), dist.get_world_size()
    torch.manual_seed(0)
    model = DDP(ex.ResNet(), bucket_cap_mb=25.0)
    records = []

    def hook(_state, bucket):
        rec = dict.fromkeys(FIELDS, float("nan"))
        rec["hook"] = time.time()
        grad = bucket.buffer().div_(world)
        rec["div"] = time.time()
        natives.clear()
        fut = dist.all_reduce(grad, async_op=True).get_future()
        rec["call"] = time.time()
        native = natives[0] if natives else None
        records.append(rec)

        def done(f):
            rec["done"] = time.time()
            if native is not None and hasattr(native, "timeline"):
                rec["started"], rec["returned"], rec["callback"] = (
                    float("nan") if v is None else v for v in native.timeline())
            return f.value()[0]

        return fut.then(done)

    model.register_comm_hook(None, hook)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    ea = argparse.Namespace(seed=0, batch=args.batch)
    steps = []
    dist.barrier()
    for step in range(args.steps):
        records.clear()
        start = time.time()
        opt.zero_grad(set_to_none=True)
        x, y = ex.batch("cnn", step, rank, ea)
        ex.loss_of("cnn", model(x), y).backward()
        opt.step()
        end = time.time()
        n = min(len(records), MAX_BUCKETS)
        mine = torch.full((2 + MAX_BUCKETS * len(FIELDS),), float("nan"), dtype=torch.float64)
        mine[0], mine[1] = start, end
        for i, rec in enumerate(records[:n]):
            mine[2 + i * len(FIELDS): 2 + (i + 1) * len(FIELDS)] = torch.tensor(
                [rec[f] for f in FIELDS], dtype=torch.float64)
        every = [torch.zeros_like(mine) for _ in range(world)]
        dist.all_gather(every, mine)
        steps.append({"n": n, "ranks": [
            {"start": e[0].item(), "end": e[1].item(),
             "buckets": [dict(zip(FIELDS, e[2 + i * len(FIELDS): 2 + (i + 1) * len(FIELDS)].tolist()))
                         for i in range(n)]} for e in every]})
    if rank == 0:
        timed = steps[args.warmup:]
        nb = timed[0]["n"]
        print(f"{args.backend}, {world} ranks, {len(timed)} steps: median ms per segment "
              f"(per bucket, per rank; bucket 0 launches first)")
        print(f"{'bucket':>6} {'rank':>4} " + " ".join(f"{s:>8}" for s in SEGMENTS)
              + f" {'step':>8} {'launch@':>8}")
        summary = {}
        for bi in range(nb):
            for r in range(world):
                segs = [segments(s["ranks"][r]["buckets"][bi], [x["buckets"][bi] for x in s["ranks"]], r)
                        for s in timed]
                med = {k: statistics.median(sg[k] for sg in segs) for k in SEGMENTS}
                # This rank's launch of the bucket, from its step start: compute drift shows here.
                at = statistics.median((s["ranks"][r]["buckets"][bi]["hook"] - s["ranks"][r]["start"]) * 1e3
                                       for s in timed)
                step_ms = statistics.median((s["ranks"][r]["end"] - s["ranks"][r]["start"]) * 1e3
                                            for s in timed)
                summary[f"b{bi}r{r}"] = dict(med, launch_at=at, step=step_ms)
                print(f"{bi:>6} {r:>4} " + " ".join(f"{med[k]:8.3f}" for k in SEGMENTS)
                      + f" {step_ms:8.2f} {at:8.2f}")
        # Which rank is the slow one, and by how much: its last bucket's launch after the
        # first rank's (absolute times, one clock).
        lag = [statistics.median((s["ranks"][r]["buckets"][nb - 1]["hook"]
                                  - min(x["buckets"][nb - 1]["hook"] for x in s["ranks"])) * 1e3
                                 for s in timed) for r in range(world)]
        print("last bucket's launch after the first rank's (ms, median per rank): "
              + " ".join(f"{v:.3f}" for v in lag))
        slowest = [max(range(world), key=lambda r: s["ranks"][r]["buckets"][nb - 1]["hook"]) for s in timed]
        print("steps in which each rank launched last: "
              + " ".join(str(slowest.count(r)) for r in range(world)))
        spread = [max(x["start"] for x in s["ranks"]) - min(x["start"] for x in s["ranks"]) for s in timed]
        print(f"ranks' step starts spread (ms, median): {statistics.median(spread) * 1e3:.3f}")
        comm = [statistics.mean(sum(segments(b, [x["buckets"][i] for x in s["ranks"]], r)["comm"]
                                    for i, b in enumerate(s["ranks"][r]["buckets"]))
                                for r in range(world)) for s in timed]
        print(f"comm_mean ms per step (median): {statistics.median(comm):.3f}")
        if args.json:
            with open(args.json, "w") as f:
                json.dump({"backend": args.backend, "world": world, "steps": steps,
                           "summary": summary}, f)
    dist.barrier()
    dist.destroy_process_group()
    sys.stdout.flush()


if __name__ == "__main__":
    main()
