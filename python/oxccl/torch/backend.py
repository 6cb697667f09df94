"""The "oxccl" torch.distributed backend: a c10d `Backend` written in Python over the Rust
communicator (PyTorch's `register_backend` mechanism, as torch's own nccl4py backend).

Supported (CPU tensors; float32, float64, float16, bfloat16, int8, uint8, int32, int64, and
bool for the calls that do not add): all_reduce (SUM, PRODUCT, MIN, MAX, AVG, PREMUL_SUM),
all_reduce_coalesced, broadcast, reduce, all_gather (also uneven sizes),
all_gather_into_tensor, reduce_scatter, reduce_scatter_tensor, all_to_all and
all_to_all_single (even and uneven), gather, scatter, barrier, send/recv, isend/irecv, and
new_group (every group bootstraps its own communicator through the store torch gives it).
Non-contiguous tensors are staged through a contiguous copy. Anything else (recv from any
source, sparse all_reduce, coalesced all_gather, monitored_barrier, ...) raises torch's
"does not support" error naming the call.

How calls map onto the Rust communicator, and the limits that follow:
- Collectives run on the group's communicator, in order, one at a time; `async_op=True`
  queues them on its worker thread and returns at once.
- gather = all_gather (root keeps the parts), scatter = broadcast of root's parts (each
  rank keeps its own): deadlock-free, and `size` times the traffic of a direct schedule.
- Uneven all_to_all agrees on the largest part (one 8-byte all_reduce), pads every part to
  it and runs the even all_to_all: correct for any splits, costs the padding.
- Point-to-point runs on the group's communicator too: `isend`/`irecv` (and blocking
  `send`/`recv`) are posted to its engine, where every posted send and receive progresses
  together (MPI's Isend/Irecv), and their works complete when the operation does. So any
  pattern whose matching sends and receives are both posted completes (isend+irecv of
  messages larger than the shared-memory ring in both directions, rings of sends, ...).
  A send completes once its receiver has posted the matching receive and agreed on its size
  and dtype (a mismatch fails both ranks' calls). Messages between two ranks match in
  order, as in NCCL (tags are ignored), and in order with the group's collectives: both
  ranks post their sends, receives and collectives in the same order.
- The group's timeout (`init_process_group(timeout=...)`) is the communicators'
  OXCCL_TIMEOUT: a peer silent for that long fails the call with OxcclTimeoutError.
"""

from __future__ import annotations

import os
import secrets
import socket
import threading
from datetime import timedelta

import torch
import torch.distributed as dist
from torch._C._distributed_c10d import Backend as C10DBackend
from torch._C._distributed_c10d import ReduceOp

from .. import _oxccl
from .._buffers import tensor_bytes, torch_dtype_name
from .._oxccl import OxcclError, OxcclInvalidError, OxcclTimeoutError

_OPS = {
    ReduceOp.SUM: "sum",
    ReduceOp.PRODUCT: "prod",
    ReduceOp.MIN: "min",
    ReduceOp.MAX: "max",
    ReduceOp.AVG: "avg",
    ReduceOp.PREMUL_SUM: "premulsum",
}


def _store_host() -> str:
    """An address of this host that the group's other ranks can reach: OXCCL_STORE_HOST, or
    the one on the route to MASTER_ADDR, or loopback when the job is on one host."""
    host = os.environ.get("OXCCL_STORE_HOST")
    if host:
        return host
    master = os.environ.get("MASTER_ADDR", "127.0.0.1")
    try:
        if socket.gethostbyname(master).startswith("127."):
            return "127.0.0.1"
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect((master, 9))  # UDP: picks the route, sends nothing
            return s.getsockname()[0]
    except OSError:
        return "127.0.0.1"


def _bootstrap(store, key: str, rank: int, size: int, timeout_s: float):
    """A communicator of `size` ranks: rank 0 serves the oxccl store on a free port and
    publishes its address and a fresh secret under `key` in torch's store."""
    if rank == 0:
        host = _store_host()
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind((host, 0))
            port = s.getsockname()[1]
        store.set(key, f"{host}:{port} {secrets.token_hex(16)}")
    value = store.get(key).decode()  # waits for rank 0 (torch's store timeout)
    addr, secret = value.split()
    return _oxccl.Communicator.init(rank, size, addr, secret.encode(), timeout_s)


# Guards each work's (claimed, done, future) state against its completion on another thread.
_LOCK = threading.Lock()


class _Work(dist._Work):
    """A call's handle: `wait()` blocks until done (raising its error), `get_future()`'s value
    is the list of output tensors. `post` (copies out of staging buffers) runs once, when
    the call has succeeded, before anyone sees it done.

    Kept light, because small messages are dominated by per-call costs: a blocking call's work
    is made done; a non-blocking one is completed by whoever looks first (`wait`,
    `is_completed`), on that thread, and asks the native call for a callback (which takes
    the GIL on the communicator's worker thread) only once someone wants a future."""

    def __init__(self, outputs, native=None, post=None, pending=False):
        super().__init__()
        self._outputs = outputs
        self._native = native
        self._error = None
        self._future = None
        if native is None and not pending and post is None:
            # A blocking call that has returned: done, nothing to run (the common case).
            self._post = None
            self._claimed = self._done = True
            self._event = None
            return
        self._post = post
        self._claimed = False
        self._done = False
        # Works that finish through Python (groups of works) are waited on here.
        self._event = threading.Event() if pending else None
        if native is None:
            if not pending:
                self._complete(None)
        elif post is not None:
            # Copies out of a staging buffer must land even if nobody waits.
            native.add_done_callback(self._complete)

    def _complete(self, error):
        """Runs once, from whichever thread sees the call finish first."""
        with _LOCK:
            if self._claimed:
                return
            self._claimed = True
        if error is None and self._post is not None:
            try:
                self._post()
            except BaseException as e:  # noqa: BLE001 - handed to whoever waits
                error = e
        self._post = None
        with _LOCK:
            self._error = error
            self._done = True
            fut = self._future
        if fut is not None:
            self._settle(fut)
        if self._event is not None:
            self._event.set()

    def _settle(self, fut):
        if self._error is None:
            fut.set_result(self._outputs)
        else:
            fut.set_exception(self._error)

    def _finish_native(self, secs):
        """Waits for the native call and completes this work with its outcome; raises only
        when `secs` passed first."""
        try:
            self._native.wait(secs)
            error = None
        except OxcclTimeoutError as e:
            if not self._native.is_completed():
                raise
            error = e
        except OxcclError as e:
            error = e
        self._complete(error)

    def wait(self, timeout=None):
        secs = timeout.total_seconds() if isinstance(timeout, timedelta) else timeout
        secs = secs if secs else None
        if not self._done:
            if self._event is not None:
                if not self._event.wait(secs):
                    raise OxcclTimeoutError(f"oxccl: Work.wait timed out after {secs} s")
            else:
                # Returns once the call (and a future's callback, if one was asked for) is done.
                self._finish_native(secs)
        if self._error is not None:
            raise self._error
        return True

    def is_completed(self):
        if not self._done and self._native is not None and self._native.is_completed():
            self._finish_native(None)
        return self._done

    def is_success(self):
        return self.is_completed() and self._error is None

    def exception(self):
        return self._error

    def result(self):
        return self._outputs

    def get_future(self):
        with _LOCK:
            fut = self._future
            if fut is None:
                fut = self._future = torch.futures.Future()
                settle = self._done
                # The native call completes the work (and so the future) on its worker.
                hook = not self._done and self._native is not None
            else:
                settle = hook = False
        if settle:
            self._settle(fut)
        elif hook:
            self._native.add_done_callback(self._complete)
        return fut


def _all_of(outputs, works):
    """One work that completes when all of `works` have (with the first error, if any)."""
    parent = _Work(outputs, pending=True)
    left = [len(works)]
    lock = threading.Lock()

    def one(_fut):
        with lock:
            left[0] -= 1
            last = left[0] == 0
        if last:
            parent._complete(next((w._error for w in works if w._error is not None), None))

    if not works:
        parent._complete(None)
    for w in works:
        w.get_future().add_done_callback(one)
    return parent


def _check(t, call):
    # `is_cpu` and `layout` are ~10x cheaper than `device.type`, which builds a device.
    if not t.is_cpu:
        raise OxcclInvalidError(f"oxccl {call}: {t.device} tensors are not supported (CPU only)")
    if t.layout != torch.strided:
        raise OxcclInvalidError(f"oxccl {call}: {t.layout} tensors are not supported")
    return t


def _input(t, call):
    """A contiguous tensor with `t`'s elements (`t` itself when it is contiguous)."""
    return _check(t, call).contiguous()


def _staged(t, call):
    """(contiguous tensor to write into, copy-back or None)."""
    _check(t, call)
    if t.is_contiguous():
        return t, None
    tmp = t.contiguous()
    return tmp, lambda: t.copy_(tmp)


class OxcclBackend(C10DBackend):
    """A torch.distributed backend over an oxccl communicator (see the module's notes)."""

    def __init__(self, store, rank: int, size: int, timeout: timedelta):
        super().__init__(rank, size)
        self._store = store
        self._timeout_s = timeout.total_seconds() if timeout else None
        self._options = C10DBackend.Options("oxccl", timeout=timeout)
        self._comm = _bootstrap(store, "oxccl/main", rank, size, self._timeout_s)

    @property
    def options(self):
        return self._options

    def getBackendName(self):
        return "oxccl"

    # The features torch asks a backend about; each must be defined here (an undefined one
    # recurses between torch's C++ trampoline and its Python property).
    supports_splitting = property(lambda self: False)
    supports_coalescing = property(lambda self: False)
    supports_shrinking = property(lambda self: False)
    supports_reconfigure = property(lambda self: False)
    supports_window = property(lambda self: False)
    _supports_time_estimate = property(lambda self: False)

    # ----- helpers --------------------------------------------------------------------

    def _op(self, reduce_op, t, call):
        # SUM first: comparing is ~10x cheaper than hashing the op's enum for the table.
        if reduce_op == ReduceOp.SUM and t.dtype != torch.bool:
            return "sum", 1.0
        kind = getattr(reduce_op, "op", reduce_op)
        name = _OPS.get(kind)
        if name is None:
            raise OxcclInvalidError(f"oxccl {call}: reduce op {reduce_op} is not supported")
        if t.dtype == torch.bool and name not in ("min", "max", "prod"):
            raise OxcclInvalidError(
                f"oxccl {call}: {name} on bool tensors is not supported (use MIN, MAX or "
                "PRODUCT, or an integer dtype)"
            )
        scale = 1.0
        if name == "premulsum":
            factor = reduce_op.factor if hasattr(reduce_op, "factor") else None
            if factor is None:
                raise OxcclInvalidError(f"oxccl {call}: PREMUL_SUM without a factor")
            scale = float(factor.item() if isinstance(factor, torch.Tensor) else factor)
        return name, scale

    @staticmethod
    def _async(opts) -> bool:
        return bool(getattr(opts, "asyncOp", True))

    @staticmethod
    def _one(tensors, call):
        if len(tensors) != 1:
            raise OxcclInvalidError(
                f"oxccl {call}: one tensor per call (got {len(tensors)}); multi-tensor "
                "collectives are not supported"
            )
        return tensors[0]

    def _same_dtype(self, tensors, dtype, call):
        for t in tensors:
            if t.dtype != dtype:
                raise OxcclInvalidError(f"oxccl {call}: mixes {dtype} and {t.dtype} tensors")

    # ----- collectives ----------------------------------------------------------------

    def allreduce(self, tensors, opts):
        t = self._one(tensors, "all_reduce")
        op, scale = self._op(opts.reduceOp, t, "all_reduce")
        buf, back = _staged(t, "all_reduce")
        b = tensor_bytes(buf)
        w = self._comm.all_reduce(b, b, torch_dtype_name(t), op, scale, self._async(opts))
        return _Work(tensors, w, back)

    def allreduce_coalesced(self, tensors, opts):
        if not tensors:
            return _Work(tensors)
        self._same_dtype(tensors, tensors[0].dtype, "all_reduce_coalesced")
        op, scale = self._op(opts.reduceOp, tensors[0], "all_reduce_coalesced")
        flat = torch.cat([t.reshape(-1) for t in tensors])
        b = tensor_bytes(flat)
        w = self._comm.all_reduce(b, b, torch_dtype_name(flat), op, scale, self._async(opts))

        def back():
            off = 0
            for t in tensors:
                t.copy_(flat[off : off + t.numel()].view_as(t))
                off += t.numel()

        return _Work(tensors, w, back)

    def broadcast(self, tensors, opts):
        t = self._one(tensors, "broadcast")
        buf, back = _staged(t, "broadcast")
        w = self._comm.broadcast(
            tensor_bytes(buf), torch_dtype_name(t), opts.rootRank, self._async(opts)
        )
        return _Work(tensors, w, back)

    def reduce(self, tensors, opts):
        t = self._one(tensors, "reduce")
        op, scale = self._op(opts.reduceOp, t, "reduce")
        buf, back = _staged(t, "reduce")
        b = tensor_bytes(buf)
        root = opts.rootRank
        out = b if self.rank() == root else None
        w = self._comm.reduce(b, out, torch_dtype_name(t), root, op, scale, self._async(opts))
        return _Work(tensors, w, back if self.rank() == root else None)

    def allgather(self, output_tensors, input_tensors, opts):
        x = self._one(input_tensors, "all_gather")
        outs = self._one(output_tensors, "all_gather")
        if len(outs) != self.size():
            raise OxcclInvalidError(
                f"oxccl all_gather: {len(outs)} output tensors for {self.size()} ranks"
            )
        self._same_dtype(outs, x.dtype, "all_gather")
        sizes = [o.numel() for o in outs]
        if sizes[self.rank()] != x.numel():
            raise OxcclInvalidError(
                f"oxccl all_gather: this rank's output slot has {sizes[self.rank()]} "
                f"elements, its input {x.numel()}"
            )
        # Uneven inputs (each rank's size is known from the output list): pad to the largest.
        m = max(sizes) if sizes else 0
        src = _input(x, "all_gather").reshape(-1)
        if x.numel() != m:
            src = torch.cat([src, src.new_zeros(m - x.numel())])
        flat = torch.empty(m * self.size(), dtype=x.dtype)
        w = self._comm.all_gather(
            tensor_bytes(src), tensor_bytes(flat), torch_dtype_name(x), self._async(opts)
        )

        def back():
            for q, o in enumerate(outs):
                o.copy_(flat[q * m : q * m + sizes[q]].view_as(o))

        return _Work(output_tensors, w, back)

    def all_gather_single(self, output, input, opts):
        if output.numel() != input.numel() * self.size() or output.dtype != input.dtype:
            raise OxcclInvalidError(
                f"oxccl all_gather_into_tensor: output has {output.numel()} {output.dtype} "
                f"elements, expected {self.size()} x {input.numel()} {input.dtype}"
            )
        buf, back = _staged(output, "all_gather_into_tensor")
        src = _input(input, "all_gather_into_tensor")
        w = self._comm.all_gather(
            tensor_bytes(src), tensor_bytes(buf), torch_dtype_name(input), self._async(opts)
        )
        return _Work([output], w, back)

    def all_gather_single_coalesced(self, outputs, inputs, opts):
        works = [self.all_gather_single(o, i, opts) for o, i in zip(outputs, inputs)]
        return _all_of(outputs, works)

    def allgather_coalesced(self, output_lists, input_tensors, opts):
        works = [self.allgather([o], [i], opts) for o, i in zip(output_lists, input_tensors)]
        return _all_of(output_lists, works)

    def reduce_scatter(self, output_tensors, input_tensors, opts):
        out = self._one(output_tensors, "reduce_scatter")
        ins = self._one(input_tensors, "reduce_scatter")
        if len(ins) != self.size() or any(i.numel() != out.numel() for i in ins):
            raise OxcclInvalidError(
                f"oxccl reduce_scatter: needs {self.size()} inputs of {out.numel()} elements"
            )
        self._same_dtype(ins, out.dtype, "reduce_scatter")
        op, scale = self._op(opts.reduceOp, out, "reduce_scatter")
        flat = torch.cat([i.reshape(-1) for i in ins])
        buf, back = _staged(out, "reduce_scatter")
        w = self._comm.reduce_scatter(
            tensor_bytes(flat), tensor_bytes(buf), torch_dtype_name(out), op, scale,
            self._async(opts),
        )
        return _Work(output_tensors, w, back)

    def reduce_scatter_single(self, output, input, opts):
        if input.numel() != output.numel() * self.size() or output.dtype != input.dtype:
            raise OxcclInvalidError(
                f"oxccl reduce_scatter_tensor: input has {input.numel()} {input.dtype} "
                f"elements, expected {self.size()} x {output.numel()} {output.dtype}"
            )
        op, scale = self._op(opts.reduceOp, output, "reduce_scatter_tensor")
        buf, back = _staged(output, "reduce_scatter_tensor")
        src = _input(input, "reduce_scatter_tensor")
        w = self._comm.reduce_scatter(
            tensor_bytes(src), tensor_bytes(buf), torch_dtype_name(output), op, scale,
            self._async(opts),
        )
        return _Work([output], w, back)

    def reduce_scatter_single_coalesced(self, outputs, inputs, opts):
        works = [self.reduce_scatter_single(o, i, opts) for o, i in zip(outputs, inputs)]
        return _all_of(outputs, works)

    def _all_to_all_parts(self, ins, outs, opts, result, after=None):
        """Part q of `ins` (1-D) goes to rank q, which keeps it in `outs[sender]` (1-D).
        Parts may differ in size: every rank pads each part to the largest part of any
        rank (agreed by an 8-byte all_reduce) and runs the even all_to_all."""
        p = self.size()
        dt = ins[0].dtype if ins else outs[0].dtype
        sizes = [i.numel() for i in ins] + [o.numel() for o in outs]
        mx = torch.tensor([max(sizes + [0])], dtype=torch.int64)
        mb = tensor_bytes(mx)
        self._comm.all_reduce(mb, mb, "int64", "max", 1.0, False)
        m = int(mx.item())
        if all(i.numel() == m for i in ins):
            src = torch.cat(ins)
        else:
            src = torch.zeros(p * m, dtype=dt)
            for q, i in enumerate(ins):
                src[q * m : q * m + i.numel()] = i
        dst = torch.empty(p * m, dtype=dt)
        w = self._comm.all_to_all(
            tensor_bytes(src), tensor_bytes(dst), torch_dtype_name(src), self._async(opts)
        )

        def back():
            for q, o in enumerate(outs):
                o.copy_(dst[q * m : q * m + o.numel()])
            if after is not None:
                after()

        return _Work(result, w, back)

    def all_to_all_single(self, output, input, output_split_sizes, input_split_sizes, opts):
        p = self.size()
        if output.dtype != input.dtype:
            raise OxcclInvalidError("oxccl all_to_all_single: input and output dtypes differ")
        if not output_split_sizes and not input_split_sizes:
            if input.numel() % p or input.numel() != output.numel():
                raise OxcclInvalidError(
                    f"oxccl all_to_all_single: {input.numel()} input and {output.numel()} "
                    f"output elements do not split into {p} equal parts"
                )
            buf, back = _staged(output, "all_to_all_single")
            src = _input(input, "all_to_all_single")
            w = self._comm.all_to_all(
                tensor_bytes(src), tensor_bytes(buf), torch_dtype_name(input),
                self._async(opts),
            )
            return _Work([output], w, back)
        row_in = input[0].numel() if input.dim() and input.size(0) else 1
        row_out = output[0].numel() if output.dim() and output.size(0) else 1
        in_splits = list(input_split_sizes) or [input.size(0) // p] * p
        out_splits = list(output_split_sizes) or [output.size(0) // p] * p
        if len(in_splits) != p or len(out_splits) != p:
            raise OxcclInvalidError(f"oxccl all_to_all_single: splits must have {p} entries")
        if sum(in_splits) != input.size(0) or sum(out_splits) != output.size(0):
            raise OxcclInvalidError(
                "oxccl all_to_all_single: split sizes do not add up to the tensors' first "
                "dimension"
            )
        flat_in = _input(input, "all_to_all_single").reshape(-1)
        out_buf, back_out = _staged(output, "all_to_all_single")
        flat_out = out_buf.reshape(-1)
        ins, outs, a, b = [], [], 0, 0
        for q in range(p):
            ins.append(flat_in[a : a + in_splits[q] * row_in])
            outs.append(flat_out[b : b + out_splits[q] * row_out])
            a += in_splits[q] * row_in
            b += out_splits[q] * row_out
        return self._all_to_all_parts(ins, outs, opts, [output], back_out)

    def alltoall(self, output_tensors, input_tensors, opts):
        p = self.size()
        if len(input_tensors) != p or len(output_tensors) != p:
            raise OxcclInvalidError(f"oxccl all_to_all: needs {p} input and output tensors")
        ins = [_input(t, "all_to_all").reshape(-1) for t in input_tensors]
        outs = [t.reshape(-1) if t.is_contiguous() else None for t in output_tensors]
        staged = [
            (t, torch.empty(t.numel(), dtype=t.dtype)) for t in output_tensors if not t.is_contiguous()
        ]
        it = iter(staged)
        outs = [o if o is not None else next(it)[1] for o in outs]

        def back():
            for t, tmp in staged:
                t.copy_(tmp.view_as(t))

        return self._all_to_all_parts(ins, outs, opts, output_tensors, back)

    def gather(self, output_tensors, input_tensors, opts):
        x = self._one(input_tensors, "gather")
        root = opts.rootRank
        n, p = x.numel(), self.size()
        if self.rank() == root:
            outs = self._one(output_tensors, "gather")
            if len(outs) != p or any(o.numel() != n for o in outs):
                raise OxcclInvalidError(
                    f"oxccl gather: root needs {p} output tensors of {n} elements"
                )
            self._same_dtype(outs, x.dtype, "gather")
        flat = torch.empty(n * p, dtype=x.dtype)
        src = _input(x, "gather")
        w = self._comm.all_gather(
            tensor_bytes(src), tensor_bytes(flat), torch_dtype_name(x), self._async(opts)
        )

        def back():
            for q, o in enumerate(outs):
                o.copy_(flat[q * n : (q + 1) * n].view_as(o))

        return _Work(output_tensors, w, back if self.rank() == root else None)

    def scatter(self, output_tensors, input_tensors, opts):
        out = self._one(output_tensors, "scatter")
        root = opts.rootRank
        n, p = out.numel(), self.size()
        if self.rank() == root:
            ins = self._one(input_tensors, "scatter")
            if len(ins) != p or any(i.numel() != n for i in ins):
                raise OxcclInvalidError(
                    f"oxccl scatter: root needs {p} input tensors of {n} elements"
                )
            self._same_dtype(ins, out.dtype, "scatter")
            flat = torch.cat([i.reshape(-1) for i in ins])
        else:
            flat = torch.empty(n * p, dtype=out.dtype)
        w = self._comm.broadcast(
            tensor_bytes(flat), torch_dtype_name(out), root, self._async(opts)
        )
        me = self.rank()
        return _Work(output_tensors, w, lambda: out.copy_(flat[me * n : (me + 1) * n].view_as(out)))

    def barrier(self, opts):
        return _Work([], self._comm.barrier(self._async(opts)))

    # ----- point to point -------------------------------------------------------------

    def _peer(self, peer: int, call: str) -> int:
        if not 0 <= peer < self.size() or peer == self.rank():
            raise OxcclInvalidError(
                f"oxccl {call}: peer {peer} is not another rank of this {self.size()}-rank group"
            )
        return peer

    def send(self, tensors, dst, tag=0):
        t = self._one(tensors, "send")
        dst = self._peer(dst, "send")
        src = _input(t, "send")
        # Posted to the engine; the native work holds `src` (a staging copy, if any) until done.
        w = self._comm.send(tensor_bytes(src), torch_dtype_name(t), dst, True)
        return _Work(tensors, w)

    def recv(self, tensors, src, tag=0):
        t = self._one(tensors, "recv")
        src = self._peer(src, "recv")
        buf, back = _staged(t, "recv")
        w = self._comm.recv(tensor_bytes(buf), torch_dtype_name(t), src, True)
        return _Work(tensors, w, back)

    def shutdown(self):
        pass

    def abort(self):
        self._comm.abort()


def create_backend(store, rank, size, timeout):
    """The creator `dist.Backend.register_backend` calls for each process group."""
    return OxcclBackend(store, rank, size, timeout)
