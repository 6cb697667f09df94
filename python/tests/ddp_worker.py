"""One rank of the DDP/FSDP test: trains three small models a few steps on `--backend` and
saves its final parameters (rank r: OUT.r.pt).

- DDP with small buckets (many all-reduces per step), two micro-batches per step, the first
  under no_sync();
- DDP with a communication hook (register_comm_hook: all_reduce(async_op=True).get_future());
- FSDP2 (fully_shard) per layer and at the root: all_gather_into_tensor / reduce_scatter_tensor.
"""

import argparse

import torch
import torch.distributed as dist
import torch.nn as nn
from torch.distributed.device_mesh import init_device_mesh
from torch.nn.parallel import DistributedDataParallel as DDP


def mlp():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 4))


def batch(step, rank):
    g = torch.Generator().manual_seed(step * 101 + rank)
    return torch.randn(8, 32, generator=g), torch.randn(8, 4, generator=g)


def train(model, params, steps, rank, accum=1):
    opt = torch.optim.SGD(params, lr=0.1)
    for step in range(steps):
        opt.zero_grad()
        for micro in range(accum):
            x, y = batch(step * accum + micro, rank)
            ctx = model.no_sync() if (accum > 1 and micro < accum - 1) else torch.enable_grad()
            with ctx:
                loss = nn.functional.mse_loss(model(x), y) / accum
                loss.backward()
        opt.step()


def hook(_state, bucket):
    t = bucket.buffer().div_(dist.get_world_size())
    return dist.all_reduce(t, async_op=True).get_future().then(lambda f: f.value()[0])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--backend", required=True)
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    if a.backend == "oxccl":
        import oxccl.torch  # noqa: F401
    dist.init_process_group(a.backend)
    rank = dist.get_rank()
    result = {}

    m = DDP(mlp(), bucket_cap_mb=0.005)  # ~1300 floats a bucket: several buckets
    train(m, m.parameters(), 4, rank, accum=2)
    result["ddp"] = [p.detach().clone() for p in m.module.parameters()]

    m = DDP(mlp(), bucket_cap_mb=0.01)
    m.register_comm_hook(None, hook)
    train(m, m.parameters(), 4, rank)
    result["ddp_hook"] = [p.detach().clone() for p in m.module.parameters()]

    from torch.distributed.fsdp import fully_shard

    mesh = init_device_mesh("cpu", (dist.get_world_size(),))
    net = mlp()
    for layer in net:
        if isinstance(layer, nn.Linear):
            fully_shard(layer, mesh=mesh)
    fully_shard(net, mesh=mesh)
    train(net, net.parameters(), 4, rank)
    result["fsdp"] = [p.full_tensor().detach().clone() for p in net.parameters()]

    torch.save(result, f"{a.out}.{rank}.pt")
    dist.destroy_process_group()
    print(f"rank {rank}: ok", flush=True)


if __name__ == "__main__":
    main()
