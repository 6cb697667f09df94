"""The "oxccl" torch.distributed backend under torchrun, 1, 2 and 3 ranks: every supported
call, every dtype, against a reference (tests/torch_worker.py)."""

import os

import pytest

pytest.importorskip("torch")

from launch import torchrun  # noqa: E402

HERE = os.path.dirname(__file__)


@pytest.mark.parametrize("nproc", [1, 2, 3])
def test_every_call(nproc):
    out = torchrun(os.path.join(HERE, "torch_worker.py"), nproc)
    for rank in range(nproc):
        assert f"rank {rank}: ok" in out, out


def test_registration_is_idempotent():
    import torch.distributed as dist

    import oxccl.torch  # noqa: F401

    assert "oxccl" in dist.Backend.backend_list
    import importlib

    importlib.reload(oxccl.torch)
    assert dist.Backend.backend_list.count("oxccl") == 1
