"""1 rank, in one process: dist.all_reduce of 8 bytes on gloo and oxccl, sync and async
(wait, and get_future().wait() as DDP's hooks do), interleaved; prints medians in us."""
import os, sys, time, json, statistics, torch, torch.distributed as dist
import oxccl, oxccl.torch
os.environ.setdefault("MASTER_ADDR", "127.0.0.1"); os.environ.setdefault("MASTER_PORT", sys.argv[1])
dist.init_process_group("gloo", rank=0, world_size=1)
g = {"gloo": dist.group.WORLD, "oxccl": dist.new_group(backend="oxccl")}
t = torch.ones(2)
modes = {"sync": lambda grp: dist.all_reduce(t, group=grp),
         "async.wait": lambda grp: dist.all_reduce(t, group=grp, async_op=True).wait(),
         "async.future": lambda grp: dist.all_reduce(t, group=grp, async_op=True).get_future().wait()}
res = {}
for r in range(9):
    for m, f in modes.items():
        for b, grp in g.items():
            n = 2000
            t0 = time.perf_counter()
            for _ in range(n): f(grp)
            res.setdefault(f"{b} {m}", []).append((time.perf_counter() - t0) / n * 1e6)
print(json.dumps({"backend_file": oxccl.torch.backend.__file__, **{k: statistics.median(v) for k, v in res.items()}}))
