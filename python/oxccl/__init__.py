"""oxccl from Python: the Rust communicator's collectives on numpy arrays, CPU torch tensors
and any other object with the buffer protocol, without copying.

    import numpy as np, oxccl
    comm = oxccl.Communicator.from_env()          # under torchrun, mpirun, srun or OXCCL_*
    x = np.full(1024, comm.rank, dtype=np.float32)
    comm.all_reduce(x)                            # in place: x is now the sum over ranks
    work = comm.all_gather(x, out, async_op=True) # non-blocking; work.wait() returns `out`

Every call releases the GIL while it runs. Calls run in the order they were made (blocking
and non-blocking alike; the non-blocking ones on one worker thread per communicator). Errors
are `OxcclError` (subclasses `OxcclTimeoutError`, `OxcclInvalidError`, `OxcclPeerError`) with
the Rust error's message. `import oxccl.torch` registers the `torch.distributed` backend.
"""

from __future__ import annotations

import json

from . import _oxccl
from ._buffers import as_bytes
from ._oxccl import OxcclError, OxcclInvalidError, OxcclPeerError, OxcclTimeoutError

__all__ = [
    "Communicator",
    "Work",
    "topology",
    "OxcclError",
    "OxcclInvalidError",
    "OxcclPeerError",
    "OxcclTimeoutError",
]


def topology() -> dict:
    """This machine as `oxccl-topo --of json` sees it (packages, NUMA nodes, caches, cores,
    PCI devices, GPUs, NICs), as a dict."""
    return json.loads(_oxccl.topology_json())


class Work:
    """A call started with `async_op=True`. `wait()` returns its output object(s)."""

    __slots__ = ("_native", "_result", "_keep")

    def __init__(self, native, result, keep):
        self._native = native
        self._result = result
        self._keep = keep  # the caller's objects: alive until the call is done

    def wait(self, timeout: float | None = None):
        """Blocks (GIL released) until done; raises the call's error, or
        `OxcclTimeoutError` if `timeout` seconds pass first."""
        self._native.wait(timeout)
        return self._result

    def is_completed(self) -> bool:
        return self._native.is_completed()

    def add_done_callback(self, fn):
        """`fn(None)` on success, `fn(exception)` on failure, on the worker thread."""
        self._native.add_done_callback(fn)

    def timeline(self):
        """`(started, returned, callback)`: when the communicator's worker began the call,
        when it returned, and when the worker held the GIL for the first done-callback, in
        `time.time()` seconds (one clock for every process of a host); each `None` until
        reached, and always for sends and receives, which the worker does not run."""
        return self._native.timeline()

    def __repr__(self):
        return repr(self._native)


def _pair(input, output, dtype, call):
    """Byte views of an input and an output of the same dtype."""
    i, dt = as_bytes(input, dtype)
    o, odt = as_bytes(output, dtype, writable=True)
    if odt != dt:
        raise OxcclInvalidError(f"{call}: the input holds {dt}, the output {odt}")
    return i, o, dt


def _op_args(op, scale):
    op = str(op).lower()
    if op in ("premul_sum", "premulsum") and scale is None:
        raise OxcclInvalidError("premul_sum needs a scale")
    return op, 1.0 if scale is None else float(scale)


class Communicator:
    """A group of ranks running collectives together.

    Buffers are numpy arrays, CPU `torch.Tensor`s or any C-contiguous buffer-protocol object;
    the dtype comes from the object (or `dtype=`, e.g. for bfloat16 held in raw bytes).
    Outputs must be writable. Every method takes `async_op=False`; with `True` it returns a
    `Work` at once, whose `wait()` returns what the blocking call returns.
    """

    def __init__(self, native: _oxccl.Communicator):
        self._c = native

    @classmethod
    def from_env(cls) -> Communicator:
        """Joins the job of the launcher's environment (`OXCCL_RANK`/`OXCCL_SIZE`/
        `OXCCL_STORE_ADDR`, mpirun, srun, torchrun)."""
        return cls(_oxccl.Communicator.from_env())

    @classmethod
    def init(cls, rank: int, size: int, store_addr: str, secret: bytes,
             timeout: float | None = None) -> Communicator:
        """Joins a job whose rank 0 serves the store on `store_addr` (`host:port`)."""
        return cls(_oxccl.Communicator.init(rank, size, store_addr, bytes(secret), timeout))

    @property
    def rank(self) -> int:
        return self._c.rank

    @property
    def size(self) -> int:
        return self._c.size

    @property
    def host_of(self) -> list[int]:
        return self._c.host_of

    @property
    def timeout(self) -> float:
        return self._c.timeout

    def transport_to(self, peer: int) -> str | None:
        return self._c.transport_to(peer)

    def abort(self) -> None:
        self._c.abort()

    def _done(self, native, result, keep):
        return result if native is None else Work(native, result, keep)

    def all_reduce(self, input, output=None, op="sum", *, scale=None, dtype=None,
                   async_op=False):
        """`output = op(input of every rank)`; in place when `output` is None. `op`: sum,
        prod, min, max, avg, premul_sum (with `scale`)."""
        output = input if output is None else output
        i, o, dt = _pair(input, output, dtype, "all_reduce")
        op, s = _op_args(op, scale)
        w = self._c.all_reduce(i, o, dt, op, s, async_op)
        return self._done(w, output, (input, output))

    def reduce_scatter(self, input, output, op="sum", *, scale=None, dtype=None,
                       async_op=False):
        """`input` holds `size` parts as long as `output`; `output` gets part `rank` reduced."""
        i, o, dt = _pair(input, output, dtype, "reduce_scatter")
        op, s = _op_args(op, scale)
        w = self._c.reduce_scatter(i, o, dt, op, s, async_op)
        return self._done(w, output, (input, output))

    def all_gather(self, input, output, *, dtype=None, async_op=False):
        """`output` (`size` times `input`) gets every rank's `input` in rank order."""
        i, o, dt = _pair(input, output, dtype, "all_gather")
        w = self._c.all_gather(i, o, dt, async_op)
        return self._done(w, output, (input, output))

    def broadcast(self, buf, root: int = 0, *, dtype=None, async_op=False):
        """Every rank's `buf` becomes `root`'s."""
        b, dt = as_bytes(buf, dtype, writable=True)
        w = self._c.broadcast(b, dt, root, async_op)
        return self._done(w, buf, (buf,))

    def reduce(self, input, output=None, root: int = 0, op="sum", *, scale=None, dtype=None,
               async_op=False):
        """`root`'s `output` (in place when None) gets `op` over every rank's `input`;
        the other ranks' `output` is not touched."""
        output = input if output is None else output
        if self.rank == root:
            i, o, dt = _pair(input, output, dtype, "reduce")
        else:
            (i, dt), o = as_bytes(input, dtype), None
        op, s = _op_args(op, scale)
        w = self._c.reduce(i, o, dt, root, op, s, async_op)
        return self._done(w, output, (input, output))

    def all_to_all(self, input, output, *, dtype=None, async_op=False):
        """Part `q` of `input` goes to rank `q`, into part `rank` of its `output`."""
        i, o, dt = _pair(input, output, dtype, "all_to_all")
        w = self._c.all_to_all(i, o, dt, async_op)
        return self._done(w, output, (input, output))

    def send(self, buf, peer: int, *, dtype=None, async_op=False):
        """Sends `buf` to `peer` (matched in order by its `recv`). Returns (or, with
        `async_op=True`, its work completes) once `peer` has posted the matching receive and
        agreed on size and dtype (a mismatch raises on both ranks) and the data is on its
        way. `async_op=True` posts it to the communicator's engine (MPI's Isend), where it
        progresses together with every other posted send and receive: two ranks that each
        post a send and then a receive to the other complete at any size."""
        b, dt = as_bytes(buf, dtype)
        w = self._c.send(b, dt, peer, async_op)
        return self._done(w, None, (buf,))

    def recv(self, buf, peer: int, *, dtype=None, async_op=False):
        """Receives exactly `buf`'s size from `peer` into `buf` (`async_op=True`: posted,
        as MPI's Irecv; `buf` must not be touched before the work completes)."""
        b, dt = as_bytes(buf, dtype, writable=True)
        w = self._c.recv(b, dt, peer, async_op)
        return self._done(w, buf, (buf,))

    def barrier(self, *, async_op=False):
        """Returns once every rank has entered the barrier."""
        return self._done(self._c.barrier(async_op), None, ())

    def __repr__(self):
        return repr(self._c)
