"""One rank of the numpy binding test: every collective, blocking and non-blocking, on random
data, against a reference every rank computes from the others' seeds."""

import os
import sys

import numpy as np

import oxccl

DTYPES = ["float32", "float64", "float16", "int8", "uint8", "int32", "int64"]
# Tolerances of the floating-point reductions (the reduction order differs from numpy's).
RTOL = {"float32": 1e-5, "float64": 1e-12, "float16": 2e-2}
N = 1000  # odd-sized pieces, not a power of two


def data(rank, dtype, salt, n=N):
    rng = np.random.default_rng([salt, rank])
    if dtype.startswith("float"):
        return rng.standard_normal(n).astype(dtype)
    lo = 0 if dtype.startswith("u") else -3
    return rng.integers(lo, 4, n).astype(dtype)


def reference(p, dtype, salt, op, n=N):
    xs = [data(r, dtype, salt, n) for r in range(p)]
    if op == "sum":
        return np.sum(np.stack(xs).astype(np.float64 if dtype.startswith("f") else dtype), 0).astype(dtype)
    if op == "prod":
        return np.prod(np.stack(xs).astype(np.float64 if dtype.startswith("f") else dtype), 0).astype(dtype)
    if op == "min":
        return np.min(np.stack(xs), 0)
    if op == "max":
        return np.max(np.stack(xs), 0)
    raise ValueError(op)


def check(got, want, dtype, what):
    if dtype in RTOL:
        ok = np.allclose(got.astype(np.float64), want.astype(np.float64), rtol=RTOL[dtype], atol=RTOL[dtype])
    else:
        ok = np.array_equal(got, want)
    if not ok:
        bad = np.flatnonzero(got != want)[:5]
        raise AssertionError(f"{what} {dtype}: mismatch at {bad}: got {got[bad]} want {want[bad]}")


def main(rank, size, addr, secret):
    if rank == 0 or os.environ.get("OXCCL_TEST_FROM_ENV") != "1":
        comm = oxccl.Communicator.init(rank, size, addr, secret.encode(), timeout=60)
    else:
        comm = oxccl.Communicator.from_env()
    assert (comm.rank, comm.size) == (rank, size)
    p, salt = size, 0
    for dtype in DTYPES:
        for op in ["sum", "prod", "min", "max"]:
            salt += 1
            x = data(rank, dtype, salt)
            out = np.empty_like(x)
            comm.all_reduce(x, out, op)
            check(out, reference(p, dtype, salt, op), dtype, f"all_reduce {op}")
            # In place, non-blocking.
            y = x.copy()
            w = comm.all_reduce(y, op=op, async_op=True)
            assert w.wait(timeout=60) is y
            check(y, reference(p, dtype, salt, op), dtype, f"async all_reduce {op}")
        salt += 1
        x = data(rank, dtype, salt)
        # all_gather
        out = np.empty(N * p, dtype)
        comm.all_gather(x, out)
        check(out, np.concatenate([data(r, dtype, salt) for r in range(p)]), dtype, "all_gather")
        # reduce_scatter: rank r gets part r of the sum of everyone's input.
        big = data(rank, dtype, salt, N * p)
        part = np.empty(N, dtype)
        comm.reduce_scatter(big, part, "max")
        want = np.max(np.stack([data(r, dtype, salt, N * p) for r in range(p)]), 0)
        check(part, want[rank * N : (rank + 1) * N], dtype, "reduce_scatter")
        # broadcast and reduce from every root
        for root in range(p):
            b = data(rank, dtype, salt + 100 + root)
            comm.broadcast(b, root)
            check(b, data(root, dtype, salt + 100 + root), dtype, "broadcast")
            r_in = data(rank, dtype, salt)
            r_out = np.zeros_like(r_in)
            comm.reduce(r_in, r_out, root, "min")
            if rank == root:
                check(r_out, reference(p, dtype, salt, "min"), dtype, "reduce")
            else:
                assert not r_out.any(), "reduce touched a non-root output"
        # all_to_all
        a_in = data(rank, dtype, salt + 7, N * p)
        a_out = np.empty_like(a_in)
        w = comm.all_to_all(a_in, a_out, async_op=True)
        w.wait()
        want = np.concatenate([data(q, dtype, salt + 7, N * p)[rank * N : (rank + 1) * N] for q in range(p)])
        check(a_out, want, dtype, "all_to_all")
    # avg and premul_sum on floats
    x = data(rank, "float64", 999)
    out = np.empty_like(x)
    comm.all_reduce(x, out, "avg")
    check(out, reference(p, "float64", 999, "sum") / p, "float64", "avg")
    comm.all_reduce(x, out, "premul_sum", scale=0.5)
    check(out, reference(p, "float64", 999, "sum") * 0.5, "float64", "premul_sum")
    # send/recv around a ring, non-blocking sends then blocking receives
    if p > 1:
        msg = data(rank, "int32", 77)
        got = np.empty_like(msg)
        w = comm.send(msg, (rank + 1) % p, async_op=True)
        comm.recv(got, (rank - 1) % p)
        w.wait()
        check(got, data((rank - 1) % p, "int32", 77), "int32", "send/recv")
    # bytes-like objects and an explicit dtype
    ba = bytearray(np.full(8, rank + 1, np.int32).tobytes())
    comm.all_reduce(ba, dtype="int32")
    assert np.frombuffer(ba, np.int32).tolist() == [p * (p + 1) // 2] * 8
    # errors: a clear exception, the communicator still usable
    try:
        comm.all_reduce(np.zeros(4, np.float32), np.zeros(5, np.float32))
        raise AssertionError("size mismatch accepted")
    except oxccl.OxcclInvalidError as e:
        assert "all_reduce" in str(e), e
    try:
        comm.all_reduce(np.zeros((4, 4), np.float32)[:, ::2].copy().T)
        raise AssertionError("non-contiguous buffer accepted")
    except oxccl.OxcclInvalidError as e:
        assert "contiguous" in str(e), e
    try:
        comm.all_reduce(b"abcd", np.zeros(1, np.float32))
        raise AssertionError("bytes as float accepted")
    except oxccl.OxcclError:
        pass
    # The GIL is released while a call waits: a Python thread runs meanwhile.
    if p > 1:
        import threading
        import time

        ticks, stop = [0], threading.Event()

        def count():
            while not stop.is_set():
                ticks[0] += 1

        th = threading.Thread(target=count)
        th.start()
        if rank == 1:
            time.sleep(0.5)
        before = ticks[0]
        comm.barrier()  # rank 0 waits here ~0.5 s for rank 1
        during = ticks[0] - before
        stop.set()
        th.join()
        if rank == 0:
            assert during > 1000, f"the counting thread ran {during} times during the wait"
    comm.barrier()
    w = comm.barrier(async_op=True)
    w.wait()
    # The timeline of a queued call: the worker began it, it returned, then the callback ran.
    import time

    seen = []
    if rank == 1:
        time.sleep(0.2)  # rank 0's call is still waiting when its callback is added
    before = time.time()
    w = comm.all_reduce(data(rank, "float32", 9), np.zeros(N, np.float32), async_op=True)
    w.add_done_callback(lambda err: seen.append((err, time.time())))
    w.wait()
    started, returned, callback = w.timeline()
    assert seen and seen[0][0] is None, seen
    assert before <= started <= returned <= seen[0][1], (before, started, returned, seen)
    # A callback added once the call was done runs at once, on the caller's thread.
    assert callback is None or returned <= callback <= seen[0][1], (returned, callback, seen)
    if rank == 0 and p > 1:
        assert callback is not None, "the worker ran the callback but left no time for it"
    assert isinstance(oxccl.topology(), dict)
    print(f"rank {rank}: ok", flush=True)


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4])
