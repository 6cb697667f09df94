"""One rank of the torch backend test: every supported call on "oxccl" against a reference
computed here from every rank's seed, every dtype, async and sync, odd sizes."""

import os
import sys
from datetime import timedelta

import torch
import torch.distributed as dist

import oxccl
import oxccl.torch  # noqa: F401  (registers the backend)

DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16,
          torch.int8, torch.uint8, torch.int32, torch.int64]
# Float tolerances: the reduction order differs from the reference's, and the half types
# round each partial sum (relative to magnitudes ~3, for sums of 3 standard normals).
TOL = {torch.float32: 1e-5, torch.float64: 1e-12, torch.float16: 1e-2, torch.bfloat16: 5e-2}
N = 1001


def data(rank, dtype, salt, n=N):
    g = torch.Generator().manual_seed(salt * 1009 + rank)
    if dtype.is_floating_point:
        return torch.randn(n, generator=g, dtype=torch.float64).to(dtype)
    lo = 0 if dtype == torch.uint8 else -3
    return torch.randint(lo, 4, (n,), generator=g).to(dtype)


def reduce_ref(xs, op, p):
    wide = torch.float64 if xs[0].dtype.is_floating_point else xs[0].dtype
    s = torch.stack([x.to(wide) for x in xs])
    if op in ("sum", "avg", "premul"):
        r = s.sum(0)
        if op == "avg":
            r = r / p if wide == torch.float64 else torch.div(r, p, rounding_mode="trunc")
        if op == "premul":
            r = r * 0.5
    elif op == "prod":
        r = s.prod(0)
    elif op == "min":
        r = s.min(0).values
    else:
        r = s.max(0).values
    return r.to(xs[0].dtype)


def same(got, want, what):
    if got.dtype in TOL:
        t = TOL[got.dtype]
        ok = torch.allclose(got.double(), want.double(), rtol=t, atol=t)
    else:
        ok = torch.equal(got, want)
    if not ok:
        bad = (got != want).nonzero()[:5].flatten()
        raise AssertionError(f"{what} {got.dtype}: got {got.flatten()[bad]} want {want.flatten()[bad]}")


TORCH_OP = {"sum": dist.ReduceOp.SUM, "prod": dist.ReduceOp.PRODUCT, "min": dist.ReduceOp.MIN,
            "max": dist.ReduceOp.MAX, "avg": dist.ReduceOp.AVG}


def torch_op(op):
    return dist._make_nccl_premul_sum(0.5) if op == "premul" else TORCH_OP[op]


def check_all(rank, p):
    salt = 0
    for dt in DTYPES:
        ops = ["sum", "prod", "min", "max", "avg"] + (["premul"] if dt.is_floating_point else [])
        for op in ops:
            salt += 1
            x = data(rank, dt, salt)
            want = reduce_ref([data(r, dt, salt) for r in range(p)], op, p)
            y = x.clone()
            dist.all_reduce(y, op=torch_op(op))
            same(y, want, f"all_reduce {op}")
            y = x.clone()
            work = dist.all_reduce(y, op=torch_op(op), async_op=True)
            fut = work.get_future()
            work.wait()
            same(fut.wait()[0], want, f"async all_reduce {op} future")
            same(y, want, f"async all_reduce {op}")
        salt += 1
        xs = [data(r, dt, salt) for r in range(p)]
        x = xs[rank]
        # non-contiguous: every other column of a 2-D tensor, staged and copied back
        m = torch.zeros(N, 2, dtype=dt)
        m[:, 0] = x
        col = m[:, 0]
        assert not col.is_contiguous()
        dist.all_reduce(col, op=dist.ReduceOp.MAX)
        same(m[:, 0], reduce_ref(xs, "max", p), "all_reduce non-contiguous")
        assert not m[:, 1].any()
        for root in range(p):
            b = x.clone()
            dist.broadcast(b, src=root)
            same(b, xs[root], "broadcast")
            r = x.clone()
            dist.reduce(r, dst=root, op=dist.ReduceOp.SUM)
            if rank == root:
                same(r, reduce_ref(xs, "sum", p), "reduce")
            g = [torch.empty_like(x) for _ in range(p)] if rank == root else None
            dist.gather(x, g, dst=root)
            if rank == root:
                for q in range(p):
                    same(g[q], xs[q], "gather")
            s_out = torch.empty_like(x)
            parts = [data(root, dt, salt + 50 + q) for q in range(p)]
            dist.scatter(s_out, parts if rank == root else None, src=root)
            same(s_out, parts[rank], "scatter")
        outs = [torch.empty_like(x) for _ in range(p)]
        w = dist.all_gather(outs, x, async_op=True)
        w.wait()
        for q in range(p):
            same(outs[q], xs[q], "all_gather")
        # uneven all_gather: rank q contributes q + 3 elements
        mine = data(rank, dt, salt + 1, rank + 3)
        outs = [torch.empty(q + 3, dtype=dt) for q in range(p)]
        dist.all_gather(outs, mine)
        for q in range(p):
            same(outs[q], data(q, dt, salt + 1, q + 3), "uneven all_gather")
        flat = torch.empty(p * N, dtype=dt)
        dist.all_gather_into_tensor(flat, x)
        same(flat, torch.cat(xs), "all_gather_into_tensor")
        bigs = [data(r, dt, salt + 2, p * N) for r in range(p)]
        for op in ["sum", "avg", "max"]:
            out = torch.empty(N, dtype=dt)
            w = dist.reduce_scatter_tensor(out, bigs[rank], op=TORCH_OP[op], async_op=True)
            assert w.get_future().wait()[0] is out
            same(out, reduce_ref(bigs, op, p)[rank * N:(rank + 1) * N], f"reduce_scatter_tensor {op}")
        out = torch.empty(N, dtype=dt)
        dist.reduce_scatter(out, list(bigs[rank].chunk(p)), op=dist.ReduceOp.MIN)
        same(out, reduce_ref(bigs, "min", p)[rank * N:(rank + 1) * N], "reduce_scatter")
        # all_to_all_single, even
        a = bigs[rank]
        out = torch.empty_like(a)
        dist.all_to_all_single(out, a)
        same(out, torch.cat([b[rank * N:(rank + 1) * N] for b in bigs]), "all_to_all_single")
        # uneven: rank r sends r + q + 1 rows of 3 to rank q
        rows = lambda r, q: r + q + 1  # noqa: E731
        ins = [data(rank * 10 + q, dt, salt + 3, rows(rank, q) * 3).view(-1, 3) for q in range(p)]
        out = torch.empty(sum(rows(q, rank) for q in range(p)), 3, dtype=dt)
        dist.all_to_all_single(out, torch.cat(ins), output_split_sizes=[rows(q, rank) for q in range(p)],
                               input_split_sizes=[rows(rank, q) for q in range(p)])
        want = torch.cat([data(q * 10 + rank, dt, salt + 3, rows(q, rank) * 3).view(-1, 3) for q in range(p)])
        same(out, want, "uneven all_to_all_single")
        outs = [torch.empty(rows(q, rank) * 3, dtype=dt) for q in range(p)]
        dist.all_to_all(outs, [i.reshape(-1) for i in ins])
        for q in range(p):
            same(outs[q], data(q * 10 + rank, dt, salt + 3, rows(q, rank) * 3), "all_to_all list")
    # bool moves bit for bit, and refuses adding
    flags = torch.tensor([rank % 2 == 0, True, False])
    dist.broadcast(flags, src=0)
    assert flags.tolist() == [True, True, False]
    dist.all_reduce(flags, op=dist.ReduceOp.MIN)
    try:
        dist.all_reduce(flags)
        raise AssertionError("SUM on bool accepted")
    except RuntimeError as e:
        assert "bool" in str(e), e
    dist.barrier()
    check_p2p(rank, p)
    check_groups(rank, p)
    check_errors(rank, p)


def check_p2p(rank, p):
    if p == 1:
        return
    # A ring of blocking sends/receives (even ranks send first).
    x = data(rank, torch.float32, 900)
    got = torch.empty_like(x)
    if rank % 2 == 0:
        dist.send(x, (rank + 1) % p)
        dist.recv(got, (rank - 1) % p)
    else:
        dist.recv(got, (rank - 1) % p)
        dist.send(x, (rank + 1) % p)
    same(got, data((rank - 1) % p, torch.float32, 900), "send/recv ring")
    # Every pair exchanges 4 MiB both ways with isend then irecv (larger than a ring).
    n = 1 << 20
    works, results = [], {}
    for q in range(p):
        if q != rank:
            works.append(dist.isend(data(rank * 7 + q, torch.float32, 901, n), q))
            results[q] = torch.empty(n)
            works.append(dist.irecv(results[q], q))
    for w in works:
        w.wait()
    for q, t in results.items():
        same(t, data(q * 7 + rank, torch.float32, 901, n), "isend/irecv exchange")
    # batch_isend_irecv over a ring
    send = data(rank, torch.int64, 902)
    recv = torch.empty_like(send)
    ops = [dist.P2POp(dist.isend, send, (rank + 1) % p), dist.P2POp(dist.irecv, recv, (rank - 1) % p)]
    for w in dist.batch_isend_irecv(ops):
        w.wait()
    same(recv, data((rank - 1) % p, torch.int64, 902), "batch_isend_irecv")


def check_groups(rank, p):
    # Every rank makes every group (torch's rule); members use it.
    groups = [list(range(p))[::-1], [0], list(range(0, p, 2))]
    if p > 2:
        groups.append([1, 2])
    for members in groups:
        g = dist.new_group(members)
        if rank in members:
            x = data(rank, torch.float64, 950)
            dist.all_reduce(x, group=g)
            same(x, reduce_ref([data(r, torch.float64, 950) for r in members], "sum", p), f"group {members}")
            b = torch.tensor([rank])
            dist.broadcast(b, src=members[-1], group=g)
            assert b.item() == members[-1]
            assert dist.get_rank(g) == sorted(members).index(rank)  # torch sorts them
    dist.barrier()


def check_errors(rank, p):
    # An unsupported call names itself.
    try:
        dist.all_reduce(torch.sparse_coo_tensor(torch.tensor([[0]]), torch.tensor([1.0]), (2,)))
        raise AssertionError("sparse all_reduce accepted")
    except (RuntimeError, ValueError) as e:
        assert "sparse" in str(e).lower() or "allreduce" in str(e).lower(), e
    try:
        dist.recv(torch.empty(1))  # from any source
        raise AssertionError("recv from any source accepted")
    except RuntimeError as e:
        assert "recv" in str(e).lower(), e
    # A group's timeout is its communicators' OXCCL_TIMEOUT: rank 0 waits alone and fails.
    if p > 1:
        g = dist.new_group(list(range(p)), timeout=timedelta(seconds=2))
        if rank == 0:
            try:
                dist.all_reduce(torch.ones(4), group=g)
                raise AssertionError("an all_reduce without peers completed")
            except RuntimeError as e:
                assert "timed out" in str(e) or "aborted" in str(e), e
        dist.barrier()


def main():
    dist.init_process_group("oxccl")
    rank, p = dist.get_rank(), dist.get_world_size()
    assert dist.get_backend() == "oxccl"
    check_all(rank, p)
    dist.destroy_process_group()
    print(f"rank {rank}: ok", flush=True)


if __name__ == "__main__":
    main()
