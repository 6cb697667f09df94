"""DDP (buckets, no_sync, a communication hook) and FSDP2 train on "oxccl": parameters are
identical on every rank and equal to the same training on "gloo" (float32, rtol 1e-5: the
two backends add the ranks' gradients in different orders)."""

import os

import pytest

torch = pytest.importorskip("torch")

from ddp_worker import mlp  # noqa: E402
from launch import torchrun  # noqa: E402

HERE = os.path.dirname(__file__)


def params(tmp_path, backend, nproc):
    out = tmp_path / backend
    # gloo's own teardown may abort after the results are written (see `launch.torchrun`);
    # every rank's file is loaded below, so a rank that did not finish still fails the test.
    finished = "rank 0: ok" if backend == "gloo" else None
    torchrun(os.path.join(HERE, "ddp_worker.py"), nproc, "--backend", backend, "--out", out,
             finished=finished)
    return [torch.load(f"{out}.{r}.pt") for r in range(nproc)]


@pytest.mark.parametrize("nproc", [2, 3])
def test_ddp_and_fsdp_match_gloo(tmp_path, nproc):
    ox = params(tmp_path, "oxccl", nproc)
    gloo = params(tmp_path, "gloo", nproc)
    for kind in ("ddp", "ddp_hook", "fsdp"):
        for r in range(1, nproc):
            for a, b in zip(ox[0][kind], ox[r][kind]):
                assert torch.equal(a, b), f"{kind}: rank {r}'s parameters differ from rank 0's"
        for a, b in zip(ox[0][kind], gloo[0][kind]):
            assert torch.allclose(a, b, rtol=1e-5, atol=1e-6), f"{kind}: oxccl and gloo differ"
        # Training moved the parameters (the comparison is not of untouched weights).
        initial = list(mlp().parameters())
        assert all(not torch.allclose(a, b) for a, b in zip(ox[0][kind], initial)), kind
