"""The DDP example and the benchmark run, as the README shows them (small sizes)."""

import os
import re
import subprocess
import sys

import pytest

pytest.importorskip("torch")

from launch import torchrun  # noqa: E402

EXAMPLE = os.path.join(os.path.dirname(__file__), "..", "examples", "train_ddp.py")


def losses(out):
    return [float(m.group(1)) for m in re.finditer(r"^step +\d+ +loss ([0-9.]+)", out, re.M)]


@pytest.mark.parametrize("model", ["cnn", "transformer"])
def test_train_ddp_matches_gloo(model):
    args = ["--model", model, "--steps", "3", "--batch", "4", "--accum", "2"]
    ox = losses(torchrun(EXAMPLE, 2, "--backend", "oxccl", *args))
    gloo = losses(torchrun(EXAMPLE, 2, "--backend", "gloo", *args))
    assert len(ox) == len(gloo) == 3
    for a, b in zip(ox, gloo):
        assert abs(a - b) <= 1e-5 * abs(b), (ox, gloo)


def test_bench_runs():
    r = subprocess.run(
        [sys.executable, "-m", "oxccl.bench", "--nproc", "2", "--no-ddp", "--max-bytes", "4K",
         "--repeats", "1", "--samples", "1", "--target", "0.01"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=300,
        env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert r.returncode == 0, r.stdout
    assert "busbw" in r.stdout and "4 KiB" in r.stdout, r.stdout
