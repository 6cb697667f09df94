"""The binding on numpy arrays, in a multi-process job (one process per rank)."""

import os
import subprocess
import sys

import numpy as np
import pytest

import oxccl
from conftest import free_port

HERE = os.path.dirname(__file__)


def run_ranks(size, timeout=240):
    addr = f"127.0.0.1:{free_port()}"
    procs = []
    for rank in range(size):
        env = dict(os.environ, OXCCL_TEST_FROM_ENV="1", OXCCL_RANK=str(rank),
                   OXCCL_SIZE=str(size), OXCCL_STORE_ADDR=addr, OXCCL_SECRET="s3cret")
        procs.append(subprocess.Popen(
            [sys.executable, os.path.join(HERE, "numpy_worker.py"), str(rank), str(size), addr,
             "s3cret"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    outs = []
    for p in procs:
        try:
            out, _ = p.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            raise
        outs.append((p.returncode, out))
    for rank, (rc, out) in enumerate(outs):
        assert rc == 0, f"rank {rank} failed:\n{out}"
        assert f"rank {rank}: ok" in out


@pytest.mark.parametrize("size", [1, 2, 3])
def test_every_collective_on_numpy(size):
    run_ranks(size)


def test_topology_is_a_dict():
    t = oxccl.topology()
    assert isinstance(t, dict) and t


def test_bad_store_address_is_an_exception():
    with pytest.raises(oxccl.OxcclError):
        oxccl.Communicator.init(1, 2, "127.0.0.1:1", b"x", timeout=0.5)


def test_single_rank_and_errors():
    addr = f"127.0.0.1:{free_port()}"
    comm = oxccl.Communicator.init(0, 1, addr, b"x", timeout=10)
    x = np.arange(10, dtype=np.float32)
    comm.all_reduce(x)
    assert x.tolist() == list(range(10))
    with pytest.raises(oxccl.OxcclInvalidError, match="read-only"):
        comm.all_reduce(np.zeros(2, np.float32), memoryview(bytes(8)).cast("f"))
    with pytest.raises(oxccl.OxcclInvalidError, match="dtype"):
        comm.all_reduce(np.zeros(2, np.int16))
    with pytest.raises(oxccl.OxcclInvalidError):
        comm.broadcast(x, root=3)
    comm.all_reduce(x)  # still usable after refused calls


def test_torch_tensors_without_copying():
    torch = pytest.importorskip("torch")
    comm = oxccl.Communicator.init(0, 1, f"127.0.0.1:{free_port()}", b"x", timeout=10)
    for dt in (torch.bfloat16, torch.float16, torch.int64):
        t = torch.arange(6, dtype=dt)
        ptr = t.data_ptr()
        out = torch.empty_like(t)
        assert comm.all_reduce(t, out) is out
        assert torch.equal(out, t) and t.data_ptr() == ptr
        w = comm.all_gather(t, torch.empty(6, dtype=dt), async_op=True)
        assert torch.equal(w.wait(), t)
    with pytest.raises(oxccl.OxcclInvalidError, match="contiguous"):
        comm.all_reduce(torch.zeros(4, 4)[:, 0])
    with pytest.raises(oxccl.OxcclInvalidError, match="holds"):
        comm.all_reduce(torch.zeros(4), torch.zeros(4, dtype=torch.float64))
